"""Synthetic multi-speaker conversations from espeak-ng, with exact reference speaker turns.

Real multi-speaker recordings with reference labels are scarce offline, so tests build their own:
each line is rendered by espeak-ng with one voice, trimmed to its audible part (so the reference
turns hug speech), resampled to 16 kHz and laid end to end with a silent gap in between.

    from synth import VOICES, sentences, synthesize_conversation
    turns = synthesize_conversation(
        [(VOICES[0], "Hello there."), (VOICES[1], "Hi, how are you?")], tmp_path / "c.wav"
    )
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

SAMPLE_RATE = 16_000
_ESPEAK_RATE = 22_050
# Samples quieter than this fraction of the line's peak count as the silence espeak-ng pads with.
_TRIM_FRACTION = 0.02


@dataclass(frozen=True)
class Voice:
    """An espeak-ng speaker: base voice + variant (`-v`), pitch (`-p`, 0-99) and speed (`-s`, wpm)."""

    name: str
    espeak_voice: str
    pitch: int = 50
    speed: int = 160


# Clearly different espeak-ng voices (pitch, accent and timbre): a conversation of the first N voices has N speakers
# that a speaker-embedding model should tell apart, for N <= len(VOICES).
VOICES: tuple[Voice, ...] = (
    Voice("m3_low", "en-us+m3", pitch=25, speed=150),
    Voice("f2_rp_high", "en-gb-x-rp+f2", pitch=70, speed=170),
    Voice("quincy", "en-us+quincy", pitch=50, speed=160),
    Voice("alicia", "en-us+Alicia", pitch=50, speed=160),
    Voice("steph", "en-us+steph", pitch=50, speed=160),
    Voice("iven3", "en-us+iven3", pitch=50, speed=160),
)

_SENTENCES: tuple[str, ...] = (
    "Good morning everyone, thanks for joining the call on such short notice today.",
    "I looked at the numbers last night and the results are better than we expected.",
    "Could you explain how the new schedule affects the delivery of the second batch?",
    "The warehouse in the north will close for two weeks while they repair the roof.",
    "Honestly, I think we should wait until the customer confirms the final order.",
    "That makes sense, but the trucks are already booked for the end of the month.",
    "We could move half of the stock to the other site and keep the rest here.",
    "Let me check with the finance team before we promise anything to anyone.",
    "The weather report says heavy rain is coming, so the roads may be flooded.",
    "I will send a short summary of this meeting to all of you this afternoon.",
    "Does anybody remember who was responsible for the contract with the printers?",
    "The printer contract was signed by Maria, and it runs until the end of the year.",
    "Perfect, then we only need to renegotiate the price for the extra paper.",
    "My daughter started school this week, so I may have to leave a little early.",
    "No problem at all, we can record the rest of the discussion for you.",
    "Before we finish, are there any other questions about the budget for next year?",
)


def sentences(count: int, offset: int = 0) -> list[str]:
    """Return `count` varied conversational sentences (cycling), so tests need no text of their own."""
    return [_SENTENCES[(offset + i) % len(_SENTENCES)] for i in range(count)]


# espeak-ng's own defaults (pitch 50, 175 words per minute): two voices that differ only by accent.
DEFAULT_US = Voice("en_us_default", "en-us", pitch=50, speed=175)
DEFAULT_GB = Voice("en_gb_default", "en-gb", pitch=50, speed=175)


def accent_script() -> list[tuple[Voice | str, str]]:
    """~17 s of espeak-ng's default en-us and en-gb voices alternating over four sentences."""
    return [(DEFAULT_US if i % 2 == 0 else DEFAULT_GB, text) for i, text in enumerate(sentences(4, offset=2))]


def round_robin(voices: Sequence[Voice], n_lines: int) -> list[tuple[Voice, str]]:
    """A conversation script in which `voices` take turns, each line a different sentence."""
    return [(voices[i % len(voices)], text) for i, text in enumerate(sentences(n_lines))]


def render_line(voice: Voice, text: str) -> np.ndarray:
    """Speak `text` with `voice`; return 16 kHz float32 audio trimmed to its audible part."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "line.wav"
        subprocess.run(
            [
                "espeak-ng",
                "-v",
                voice.espeak_voice,
                "-p",
                str(voice.pitch),
                "-s",
                str(voice.speed),
                "-w",
                str(out),
                text,
            ],
            check=True,
            capture_output=True,
        )
        raw, rate = sf.read(out, dtype="float32")
    if rate != _ESPEAK_RATE:
        raise RuntimeError(f"espeak-ng wrote {rate} Hz, expected {_ESPEAK_RATE} Hz")
    audio: np.ndarray = resample_poly(raw, SAMPLE_RATE, _ESPEAK_RATE).astype(np.float32)
    loud = np.flatnonzero(np.abs(audio) > _TRIM_FRACTION * np.abs(audio).max())
    return audio[loud[0] : loud[-1] + 1] if loud.size else audio[:0]


def synthesize_conversation(
    lines: Sequence[tuple[Voice | str, str]], path: Path, gap: float = 0.4, lead: float = 0.5
) -> list[tuple[float, float, str]]:
    """Render `lines` (voice or voice name from VOICES, text) one after another into a 16 kHz mono wav.

    `gap` seconds of silence separate lines and `lead` seconds precede the first and follow the last.
    Returns the reference turns `(start, end, voice name)` in seconds, one per line, in time order.
    """
    by_name = {voice.name: voice for voice in VOICES}
    silence = np.zeros(round(gap * SAMPLE_RATE), dtype=np.float32)
    pieces = [np.zeros(round(lead * SAMPLE_RATE), dtype=np.float32)]
    cursor = pieces[0].size
    turns: list[tuple[float, float, str]] = []
    for index, (voice_or_name, text) in enumerate(lines):
        voice = by_name[voice_or_name] if isinstance(voice_or_name, str) else voice_or_name
        audio = render_line(voice, text)
        if index:
            pieces.append(silence)
            cursor += silence.size
        turns.append((cursor / SAMPLE_RATE, (cursor + audio.size) / SAMPLE_RATE, voice.name))
        pieces.append(audio)
        cursor += audio.size
    pieces.append(np.zeros(round(lead * SAMPLE_RATE), dtype=np.float32))
    sf.write(path, np.concatenate(pieces), SAMPLE_RATE, subtype="PCM_16")
    return turns
