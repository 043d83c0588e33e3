"""Multichannel recordings: one speaker per channel (a call with each side on its own channel).

Each channel is decoded and transcribed on its own, so its words are its speaker's without diarization. Where one
side's voice bleeds into the other's channel (a headset that hears the room, a phone line's echo), the same word is
heard on both: the copy on the channel where it is quieter is dropped. "auto" takes a stereo file as a call when
its channels differ: one or the other is clearly the louder in most of the speech.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np

from scribepod.models import MAX_CHANNELS, Channels, TranscriptionOptions
from scribepod_worker.decode import SAMPLE_RATE, decode_audio, stated_duration
from scribepod_worker.errors import WorkerError
from scribepod_worker.stop import StopSignal
from scribepod_worker.transcribe import AsrSegment, AsrWord

# "auto": frames of 50 ms; a frame is speech when its louder channel is within 30 dB of the file's loud frames (the
# 99th percentile, so one click does not set the scale); a channel leads a frame when it is 10 dB louder than the
# other. Measured (`separation`, the two shares summed) on the pyannote sample and the six AMI excerpts played one
# reference speaker per channel: 0.76-0.95, the same with the other side bleeding in at -20 or -12 dB; one signal
# on both channels, a copy panned 6 dB to one side, a spaced pair of microphones (0.5 ms and 2 dB apart) and a mono
# signal with independent noise per channel: 0.00 on all seven clips. A call takes 0.5 or more, halfway, and each
# channel must lead in 2% of the speech (a silent or copied channel never leads; the quietest real side leads 4.9%,
# but for ami_trn06's second speaker, who only ever talks under the first: that file stays mono).
_FRAME_S = 0.05
_SPEECH_RANGE_DB = 30.0
DOMINANCE_DB = 10.0
AUTO_SEPARATION = 0.5
AUTO_EACH_LEADS = 0.02
# A word is the other side's voice heard through this side's microphone when another channel is this much louder over
# its span, whatever the recogniser made of it (a quiet copy is often misheard, so its text need not match): bleed
# at -20 dB is 20 dB below the channel it came from, while one side's own words are louder on its own channel even
# when both talk at once, unless the other is louder than them by more than this. Quieter bleed than -12 dB is
# caught here; louder bleed only where its text matches.
BLEED_DB = 12.0
# Two words on different channels may be one word heard twice when their text matches and their spans are at most
# this far apart (word timings of one sound differ by a few hundredths between channels).
_SAME_TIME_SLACK_S = 0.2
# Two matching words are two people's when each is at least this much louder on its own channel than on the other,
# over its own span ("hello" - "hello"); one sound heard twice is louder on one side only, or alike on both (a room
# heard by both microphones).
OWN_VOICE_DB = 6.0
# Levels are measured over at least this much audio around a word: Whisper gives some words no length, and one
# sample is no level.
_MIN_LEVEL_S = 0.1

ProgressCallback = Callable[[float], None]


@dataclass(frozen=True)
class DecodedChannels:
    """A job's audio as its `multichannel` option decided: one array per speaker's channel, or one, the mono mix."""

    audio: list[np.ndarray]
    info: Channels

    @property
    def multichannel(self) -> bool:
        return self.info.multichannel


def decode_channels(
    path: Path,
    options: TranscriptionOptions,
    max_seconds: float,
    progress: ProgressCallback,
    *,
    stop: StopSignal | None,
) -> DecodedChannels:
    """Decode each channel of `path` (`multichannel: true`), or for "auto" the two channels of a stereo file whose
    channels differ, else the usual mono mix. Each channel keeps `decode_audio`'s limits and stop checks."""
    count = stated_duration(path, stop).channels or 1
    if options.multichannel is True:
        if count > MAX_CHANNELS:
            raise WorkerError(
                "invalid_input",
                f"multichannel: the audio has {count} channels; a multichannel job takes at most {MAX_CHANNELS}",
                "multichannel",
            )
        _check_names(options, count)  # before decoding anything
        return _separate(_decode_each(path, count, max_seconds, progress, stop), options, None)
    if count == 2:
        both = _decode_each(path, count, max_seconds, progress, stop)
        shares = dominance(both[0], both[1])
        measured = round(sum(shares), 4) if shares is not None else None
        if is_call(shares):
            return _separate(both, options, measured)
        del both  # freed before the mix is decoded: the job never holds three copies
        mono = decode_audio(path, max_seconds, stop=stop)
        return DecodedChannels([mono], Channels(multichannel=False, count=count, separation=measured))
    mono = decode_audio(path, max_seconds, progress, stop=stop)
    return DecodedChannels([mono], Channels(multichannel=False, count=count))


def _decode_each(
    path: Path, count: int, max_seconds: float, progress: ProgressCallback, stop: StopSignal | None
) -> list[np.ndarray]:
    def report(done: int, fraction: float) -> None:
        progress((done + fraction) / count)

    return [
        decode_audio(path, max_seconds, partial(report, channel), stop=stop, channel=channel)
        for channel in range(count)
    ]


def _check_names(options: TranscriptionOptions, count: int) -> None:
    names = options.channel_names
    if names is not None and len(names) != count:
        raise WorkerError(
            "invalid_input",
            f"channel_names: gives {len(names)} names for audio with {count} channels (one name per channel)",
            "channel_names",
        )


def _separate(audio: list[np.ndarray], options: TranscriptionOptions, measured: float | None) -> DecodedChannels:
    _check_names(options, len(audio))
    names = options.channel_names or [f"CHANNEL_{channel}" for channel in range(len(audio))]
    info = Channels(multichannel=True, count=len(audio), speakers=list(names), separation=measured)
    return DecodedChannels(audio, info)


def _frame_levels(audio: np.ndarray, frames: int) -> np.ndarray:
    """Each frame's RMS level in dB (-inf for digital silence)."""
    size = int(_FRAME_S * SAMPLE_RATE)
    framed = audio[: frames * size].reshape(frames, size)
    power = np.einsum("ij,ij->i", framed, framed) / size  # no squared copy of hours of audio
    with np.errstate(divide="ignore"):
        levels: np.ndarray = 10.0 * np.log10(power)
    return levels


def dominance(left: np.ndarray, right: np.ndarray) -> tuple[float, float] | None:
    """The shares of speech frames in which the left, and the right, channel is at least DOMINANCE_DB louder than
    the other (None: no sound at all). Their sum is near 1 for a call with one side per channel, 0 for one signal on
    both channels; a channel that never leads is silent or a quieter copy."""
    frames = min(left.size, right.size) // int(_FRAME_S * SAMPLE_RATE)
    if frames == 0:
        return None
    levels = np.stack([_frame_levels(left, frames), _frame_levels(right, frames)])
    loudest = levels.max(axis=0)
    audible = np.isfinite(loudest)
    if not audible.any():
        return None
    speech = audible & (loudest >= np.percentile(loudest[audible], 99) - _SPEECH_RANGE_DB)
    lead = levels[0][speech] - levels[1][speech]  # finite minus -inf: one channel silent, infinitely apart
    return round(float(np.mean(lead >= DOMINANCE_DB)), 4), round(float(np.mean(-lead >= DOMINANCE_DB)), 4)


def is_call(shares: tuple[float, float] | None) -> bool:
    """ "auto"'s rule: one channel or the other clearly leads in most of the speech, and each leads somewhere."""
    return shares is not None and sum(shares) >= AUTO_SEPARATION and min(shares) >= AUTO_EACH_LEADS


def comparable_text(word: str) -> str:
    """A word as cross-talk matching compares it: case and punctuation left out."""
    return "".join(ch for ch in word.casefold() if ch.isalnum())


def _rms(audio: np.ndarray, start: float, end: float) -> float:
    """The level over a word's span, widened about its middle to `_MIN_LEVEL_S` when shorter."""
    widen = max(0.0, _MIN_LEVEL_S - (end - start)) / 2
    first = max(0, int((start - widen) * SAMPLE_RATE))
    span = audio[first : max(int((end + widen) * SAMPLE_RATE), first + 1)]
    return float(np.sqrt(np.mean(np.square(span, dtype=np.float64)))) if span.size else 0.0


def remove_crosstalk(
    audio: Sequence[np.ndarray], transcribed: Sequence[Sequence[AsrSegment]]
) -> tuple[list[list[AsrSegment]], int]:
    """Drop each word that another channel heard too, within `_SAME_TIME_SLACK_S`, unless each copy is OWN_VOICE_DB
    louder on its own channel over its own span (two people said it: "hello" - "hello"); of the two, the copy less
    loud on its own side goes (ties: the higher channel's), so exactly one stays. Also drop each word over whose span
    another channel is BLEED_DB louder (bleed the recogniser heard as other words). Silence is nobody's bleed.

    Returns each channel's segments without the dropped words (a segment left without words goes) and how many went."""
    heard: dict[str, list[tuple[float, float, int, int, int]]] = {}
    dropped: dict[tuple[int, int], set[int]] = {}  # (channel, segment) -> positions of its words that go
    bleed = 10.0 ** (BLEED_DB / 20.0)
    own_voice = 10.0 ** (OWN_VOICE_DB / 20.0)
    for channel, segments in enumerate(transcribed):
        for number, segment in enumerate(segments):
            for position, word in enumerate(segment.words):
                own = _rms(audio[channel], word.start, word.end)
                if any(
                    (level := _rms(other, word.start, word.end)) > 0.0 and bleed * own <= level
                    for i, other in enumerate(audio)
                    if i != channel
                ):
                    dropped.setdefault((channel, number), set()).add(position)
                elif text := comparable_text(word.word):
                    heard.setdefault(text, []).append((word.start, word.end, channel, number, position))
    for copies in heard.values():
        copies.sort()
        for i, (start, end, channel, number, position) in enumerate(copies):
            for other_start, other_end, other, other_number, other_position in copies[i + 1 :]:
                if other_start > end + _SAME_TIME_SLACK_S:
                    break  # sorted by start: no later copy comes near this one either
                if other == channel:
                    continue
                # Each word's channel against the other's, over that word's own span: a copy heard through the wrong
                # microphone is quieter there than the channel it came from.
                mine = _ratio(_rms(audio[channel], start, end), _rms(audio[other], start, end))
                theirs = _ratio(
                    _rms(audio[other], other_start, other_end), _rms(audio[channel], other_start, other_end)
                )
                if min(mine, theirs) >= own_voice:
                    continue  # each clearly loudest on its own side: two people said it
                if mine < theirs or (mine == theirs and other < channel):
                    dropped.setdefault((channel, number), set()).add(position)
                else:
                    dropped.setdefault((other, other_number), set()).add(other_position)
    kept = [
        [
            trimmed
            for number, segment in enumerate(segments)
            if (trimmed := _without_words(segment, dropped.get((channel, number), set()))) is not None
        ]
        for channel, segments in enumerate(transcribed)
    ]
    return kept, sum(len(positions) for positions in dropped.values())


def _ratio(own: float, other: float) -> float:
    """How much louder a word's own channel is than another over its span (1.0 when both are silent)."""
    if other == 0.0:
        return 1.0 if own == 0.0 else math.inf
    return own / other


def _without_words(segment: AsrSegment, positions: set[int]) -> AsrSegment | None:
    if not positions:
        return segment
    words: tuple[AsrWord, ...] = tuple(word for i, word in enumerate(segment.words) if i not in positions)
    if not words:
        return None
    text = "".join(word.word for word in words).strip()
    return replace(segment, words=words, text=text, start=words[0].start, end=words[-1].end)
