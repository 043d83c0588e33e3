"""Voices cut from real recordings by their reference turns: samples to enrol, one speaker per channel, and how well a
transcript names the people.

Shared by the tests and the benchmarks (tests/test_speakers.py, tests/test_multichannel.py, bench/speakers.py,
bench/multichannel.py): a person is enrolled from their own reference speech where nobody else talks, as a caller
would send a clip of someone alone; a call is built with each reference speaker's turns on a channel of their own.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np
import soundfile as sf

from scribepod.models import Transcript

RATE = 16_000
FRAME_S = 0.01

Turn = tuple[float, float, str]


def speech_alone(
    audio: np.ndarray, turns: Sequence[Turn], who: str, start: float = 0.0, end: float = 1e9
) -> np.ndarray:
    """`who`'s reference speech between `start` and `end` where nobody else talks, joined."""
    own = np.zeros(audio.size, dtype=bool)
    others = np.zeros(audio.size, dtype=bool)
    for first, last, speaker in turns:
        span = slice(int(max(first, start) * RATE), max(0, int(min(last, end) * RATE)))
        (own if speaker == who else others)[span] = True
    return audio[own & ~others]


def speakers_by_first_turn(turns: Sequence[Turn]) -> list[str]:
    return sorted({who for _, _, who in turns}, key=lambda who: min(s for s, _, w in turns if w == who))


def speaker_channels(audio: np.ndarray, turns: Sequence[Turn], speakers: Sequence[str]) -> list[np.ndarray]:
    """Each speaker's turns of the recording on a channel of its own, silence elsewhere (where turns overlap, both
    channels carry the overlapped audio)."""
    channels = []
    for speaker in speakers:
        talking = np.zeros(audio.size, bool)
        for start, end, who in turns:
            if who == speaker:
                talking[int(start * RATE) : int(end * RATE)] = True
        channels.append(np.where(talking, audio, 0.0).astype(np.float32))
    return channels


def wav_base64(audio: np.ndarray) -> str:
    """16 kHz PCM16 WAV, base64: a job's `audio_base64`."""
    buffer = io.BytesIO()
    sf.write(buffer, audio, RATE, format="WAV", subtype="PCM_16")
    return base64.b64encode(buffer.getvalue()).decode()


def solo_frames(turns: Sequence[Turn], start: float, end: float) -> dict[int, str]:
    """10 ms frame index (from `start`) -> the one reference speaker talking in it (frames of overlap are left out)."""
    count = round((end - start) / FRAME_S)
    talking: list[set[str]] = [set() for _ in range(count)]
    for first, last, speaker in turns:
        for index in range(max(0, round((first - start) / FRAME_S)), min(count, round((last - start) / FRAME_S))):
            talking[index].add(speaker)
    return {index: next(iter(who)) for index, who in enumerate(talking) if len(who) == 1}


def labels_at(transcript: Transcript, count: int) -> list[set[str]]:
    """The transcript's speaker labels active in each of `count` 10 ms frames, by its turns."""
    labels: list[set[str]] = [set() for _ in range(count)]
    for turn in transcript.turns:
        for index in range(max(0, round(turn.start / FRAME_S)), min(count, round(turn.end / FRAME_S))):
            labels[index].add(turn.speaker)
    return labels


def naming(
    transcript: Transcript, turns: Sequence[Turn], seconds: float, enrolled: set[str]
) -> dict[str, dict[str, float]]:
    """Per reference speaker: seconds speaking alone, seconds labelled with their own name, seconds labelled with
    another enrolled name (a wrong name; for a speaker not enrolled, a false accept)."""
    labels = labels_at(transcript, round(seconds / FRAME_S))
    result: dict[str, dict[str, float]] = {}
    for index, speaker in solo_frames(turns, 0.0, seconds).items():
        row = result.setdefault(speaker, {"seconds": 0.0, "right": 0.0, "named_wrongly": 0.0})
        row["seconds"] += FRAME_S
        if speaker in labels[index]:
            row["right"] += FRAME_S
        elif labels[index] & (enrolled - {speaker}):
            row["named_wrongly"] += FRAME_S
    return result


def owner(transcript: Transcript, turns: Sequence[Turn], seconds: float, label: str) -> str | None:
    """The reference speaker who talks alone most under the transcript's `label`."""
    labels = labels_at(transcript, round(seconds / FRAME_S))
    counts: dict[str, int] = {}
    for index, who in solo_frames(turns, 0.0, seconds).items():
        if label in labels[index]:
            counts[who] = counts.get(who, 0) + 1
    return max(counts, key=lambda who: counts[who]) if counts else None
