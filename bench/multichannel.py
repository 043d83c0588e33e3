"""Multichannel calls: word attribution on real recordings played one speaker per channel, against the same audio
mixed to mono and diarized.

    .venv/bin/python -m bench.multichannel [--clips sample ami_dev00 ...] [--bleed none -20 -12] [--delay-ms 0]

Material: pyannote's two-speaker sample and the six AMI excerpts in ../shared/realspeech. Each reference speaker (RTTM)
gets a channel of their own, in order of first turn (2 channels for the sample, ami_dev00 and ami_dev01; 3 or 4 for
the ami_trn clips), holding the recording wherever that speaker's turns run and silence elsewhere, as
tests/test_multichannel.py builds its calls. The clips are single far-field mixes, so where two speakers overlap both
their channels carry the same overlapped audio. With bleed, every channel also carries each other channel at that
level (no delay, as in the tests; `--delay-ms` delays it). The same channels averaged into one mono file are the
contrast: a normal job (`multichannel: false`, the builtin diarizer).

Scoring: a word is checked where its midpoint lies inside the turns of exactly one reference speaker; words in
overlapped speech or outside every turn are not (the reference does not say who spoke them). Multichannel is right
when the word's speaker is that speaker's channel; mono is right after the best one-to-one mapping of SPEAKER_xx to
reference speakers (Hungarian, on checked words; unmapped labels are wrong). Beside it, the tests' rule: a word is
checked where its whole span overlaps exactly one speaker's turns. Also: the words the worker dropped as
cross-talk, and how many of those were the channel's own speaker's (midpoint in its turns only: lost words, not
bleed); duplicated words (the same word, case and punctuation ignored, on two speakers with spans within 0.2 s, as
the tests define it); what "auto" decides (its rule, on the file as sent) and its separation figure; wall time of
each job. The worker is the real engine in-process: tiny.en int8 on CPU, `builtin` diarizer.

The multichannel thresholds (BLEED_DB, the 0.2 s match, "auto"'s 0.5 and 2%) were chosen on these same seven clips:
these figures are not held out.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from scipy.optimize import linear_sum_assignment

import scribepod_worker.engine as engine_module
from scribepod.models import Transcript, TranscriptionOptions, TranscriptionRequest
from scribepod_worker.channels import comparable_text, decode_channels, remove_crosstalk
from scribepod_worker.config import WorkerSettings
from scribepod_worker.decode import SAMPLE_RATE, decode_audio
from scribepod_worker.engine import Engine
from scribepod_worker.transcribe import AsrSegment

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from voices import speaker_channels, speakers_by_first_turn  # noqa: E402

from scoring import read_rttm  # noqa: E402

REALSPEECH = ROOT.parent / "shared" / "realspeech"
SAMPLE = ROOT / ".cache" / "sample"
CLIPS = ("sample", "ami_dev00", "ami_dev01", "ami_trn00", "ami_trn04", "ami_trn06", "ami_trn08")
MAX_CHANNELS_HERE = 4
SAME_TIME_SLACK_S = 0.2  # the tests' definition of one word heard twice

Reference = list[tuple[float, float, str]]
TimedWord = tuple[float, float, str, str | None]  # start, end, text, speaker


@dataclass
class Row:
    """One clip under one bleed condition."""

    clip: str
    channels: int
    bleed: str
    words_mc: int = 0
    checked_mc: int = 0
    right_mc: int = 0
    checked_span: int = 0
    right_span: int = 0
    dropped: int = 0
    own_dropped: int = 0
    duplicated: int = 0
    words_mono: int = 0
    checked_mono: int = 0
    right_mono: int = 0
    auto: str = ""
    wall_mc: float = 0.0
    wall_mono: float = 0.0
    asr_mc: float = 0.0
    asr_mono: float = 0.0
    diarize_mono: float = 0.0
    wrong_mc: list[str] = field(default_factory=list)


def recording(clip: str) -> tuple[Path, Path]:
    if clip == "sample":
        return SAMPLE / "sample.wav", SAMPLE / "sample.rttm"
    return REALSPEECH / f"{clip}.wav", REALSPEECH / f"{clip}.rttm"


def with_bleed(channels: list[np.ndarray], bleed_db: float | None, delay_ms: float = 0.0) -> list[np.ndarray]:
    """Each channel plus every other at `bleed_db`, `delay_ms` late (a headset that also hears the other side)."""
    if bleed_db is None:
        return channels
    gain = 10.0 ** (bleed_db / 20.0)
    total = np.sum(channels, axis=0)
    shift = int(delay_ms * SAMPLE_RATE / 1000)
    late = [
        np.concatenate([np.zeros(shift, np.float32), (total - channel)[: total.size - shift]]) for channel in channels
    ]
    return [(channel + gain * other).astype(np.float32) for channel, other in zip(channels, late, strict=True)]


def talking_at(reference: Reference, moment: float) -> set[str]:
    return {who for start, end, who in reference if start <= moment < end}


def words_of(transcript: Transcript) -> list[TimedWord]:
    return [(w.start, w.end, w.word, w.speaker) for segment in transcript.segments for w in segment.words]


def duplicated(words: Sequence[TimedWord]) -> int:
    """Pairs of words on two speakers with the same text and spans within SAME_TIME_SLACK_S of each other."""
    pairs = 0
    for i, (start, end, text, speaker) in enumerate(words):
        for other_start, other_end, other_text, other_speaker in words[i + 1 :]:
            if (
                speaker != other_speaker
                and comparable_text(text) == comparable_text(other_text)
                and start < other_end + SAME_TIME_SLACK_S
                and other_start < end + SAME_TIME_SLACK_S
            ):
                pairs += 1
    return pairs


def checked_words(words: Sequence[TimedWord], reference: Reference) -> list[tuple[str | None, str]]:
    """(word's speaker, reference speaker) for each word whose midpoint only one reference speaker's turns cover."""
    pairs = []
    for start, end, _, speaker in words:
        talking = talking_at(reference, (start + end) / 2)
        if len(talking) == 1:
            pairs.append((speaker, talking.pop()))
    return pairs


def best_mapping_right(pairs: Sequence[tuple[str | None, str]]) -> int:
    """Words right after the one-to-one mapping of labels to reference speakers that gets most of them right."""
    labels = sorted({label for label, _ in pairs if label is not None})
    truths = sorted({truth for _, truth in pairs})
    if not labels:
        return 0
    counts = Counter(pairs)
    matrix = np.array([[counts[(label, truth)] for truth in truths] for label in labels])
    rows, cols = linear_sum_assignment(matrix, maximize=True)
    return int(matrix[rows, cols].sum())


class CrosstalkSpy:
    """Records each multichannel job's words before and after cross-talk removal (the engine's own function runs
    unchanged), so dropped words can be told apart: bleed, or the channel's own speaker's words lost."""

    def __init__(self) -> None:
        self.before: list[list[AsrSegment]] = []
        self.after: list[list[AsrSegment]] = []

    def __call__(
        self, audio: Sequence[np.ndarray], transcribed: Sequence[Sequence[AsrSegment]]
    ) -> tuple[list[list[AsrSegment]], int]:
        kept, dropped = remove_crosstalk(audio, transcribed)
        self.before, self.after = [list(segments) for segments in transcribed], kept
        return kept, dropped

    def dropped_words(self) -> list[tuple[int, float, float]]:
        """(channel, start, end) of each word removed."""
        removed = []
        for channel, (before, after) in enumerate(zip(self.before, self.after, strict=True)):
            left = Counter((w.start, w.end, w.word) for segment in after for w in segment.words)
            for segment in before:
                for word in segment.words:
                    key = (word.start, word.end, word.word)
                    if left[key]:
                        left[key] -= 1
                    else:
                        removed.append((channel, word.start, word.end))
        return removed


def timed_run(engine: Engine, request: TranscriptionRequest) -> tuple[Transcript, float]:
    started = time.perf_counter()
    transcript = engine.run(request)
    return transcript, time.perf_counter() - started


def auto_decision(path: Path) -> str:
    """What `multichannel: "auto"` decides for the file (the worker's own decoding and rule; no ASR needed)."""
    options = TranscriptionOptions(multichannel="auto")
    info = decode_channels(path, options, 600.0, lambda _: None, stop=None).info
    decided = "multichannel" if info.multichannel else "mono"
    if info.separation is None:
        return f"{decided} (not stereo)" if info.count != 2 else decided
    return f"{decided} ({info.separation:.2f})"


def measure(
    engine: Engine, spy: CrosstalkSpy, clip: str, bleed_db: float | None, folder: Path, *, delay_ms: float, quiet: bool
) -> Row | None:
    wav, rttm = recording(clip)
    reference = read_rttm(rttm)
    speakers = speakers_by_first_turn(reference)
    if len(speakers) > MAX_CHANNELS_HERE:
        return None
    audio = decode_audio(wav, 600.0)
    channels = with_bleed(speaker_channels(audio, reference, speakers), bleed_db, delay_ms)
    bleed = "none" if bleed_db is None else f"{bleed_db:g} dB" + (f", {delay_ms:g} ms late" if delay_ms else "")
    row = Row(clip, len(channels), bleed)
    stereo = folder / f"{clip}_{bleed_db}_call.wav"
    mono = folder / f"{clip}_{bleed_db}_mono.wav"
    sf.write(stereo, np.stack(channels, axis=1), SAMPLE_RATE, subtype="FLOAT")
    sf.write(mono, np.mean(channels, axis=0), SAMPLE_RATE, subtype="FLOAT")

    names = [f"ch{number}:{speaker}" for number, speaker in enumerate(speakers)]
    called, row.wall_mc = timed_run(
        engine, TranscriptionRequest(audio=str(stereo), multichannel=True, channel_names=names)
    )
    assert called.channels is not None
    row.dropped = called.channels.crosstalk_words_dropped
    row.asr_mc = called.timings.get("asr", 0.0)
    for channel, start, end in spy.dropped_words():
        if talking_at(reference, (start + end) / 2) == {speakers[channel]}:
            row.own_dropped += 1
    words = words_of(called)
    row.words_mc = len(words)
    row.duplicated = duplicated(words)
    owner = dict(zip(names, speakers, strict=True))
    for start, end, text, speaker in words:
        talking = talking_at(reference, (start + end) / 2)
        if len(talking) != 1:
            continue
        row.checked_mc += 1
        truth = talking.pop()
        if speaker is not None and owner.get(speaker) == truth:
            row.right_mc += 1
        else:
            row.wrong_mc.append(f"{text.strip()!r} {start:.2f}-{end:.2f} on {speaker}, reference {truth}")
    for start, end, _, speaker in words:  # the tests' rule: the word's whole span inside one speaker's turns only
        spanning = {who for turn_start, turn_end, who in reference if turn_start < end and start < turn_end}
        if len(spanning) == 1:
            row.checked_span += 1
            row.right_span += speaker is not None and owner.get(speaker) == spanning.pop()

    mixed, row.wall_mono = timed_run(engine, TranscriptionRequest(audio=str(mono), multichannel=False))
    row.asr_mono = mixed.timings.get("asr", 0.0)
    row.diarize_mono = mixed.timings.get("diarize", 0.0)
    mono_words = words_of(mixed)
    pairs = checked_words(mono_words, reference)
    row.words_mono, row.checked_mono, row.right_mono = len(mono_words), len(pairs), best_mapping_right(pairs)

    row.auto = auto_decision(stereo)
    if not quiet:
        print(
            f"  {clip} bleed {bleed}: multichannel {row.right_mc}/{row.checked_mc}, mono {row.right_mono}/"
            f"{row.checked_mono}, dropped {row.dropped} (own {row.own_dropped}), duplicated {row.duplicated}, "
            f"auto {row.auto}, {row.wall_mc:.1f} s vs {row.wall_mono:.1f} s",
            file=sys.stderr,
            flush=True,
        )
    return row


def share(right: int, checked: int) -> str:
    return f"{right}/{checked} ({right / checked:.1%})" if checked else "-"


def table(rows: Sequence[Row]) -> list[str]:
    lines = [
        "| clip | channels | bleed | multichannel: right / checked | same, tests' span rule "
        "| dropped as cross-talk (own words) | duplicated | mono + diarization: right / checked | auto (separation) "
        "| wall s: multichannel / mono |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row.clip} | {row.channels} | {row.bleed} | {share(row.right_mc, row.checked_mc)} "
            f"| {share(row.right_span, row.checked_span)} "
            f"| {row.dropped} ({row.own_dropped}) | {row.duplicated} | {share(row.right_mono, row.checked_mono)} "
            f"| {row.auto} | {row.wall_mc:.1f} / {row.wall_mono:.1f} |"
        )
    for bleed in dict.fromkeys(row.bleed for row in rows):
        for label, selected in (
            ("2-speaker clips", [r for r in rows if r.bleed == bleed and r.channels == 2]),
            ("all clips", [r for r in rows if r.bleed == bleed]),
        ):
            if not selected or (label == "all clips" and all(r.channels == 2 for r in selected)):
                continue
            total = Row(f"**pooled, {label}**", 0, bleed)
            for field_name in (
                "checked_mc",
                "right_mc",
                "checked_span",
                "right_span",
                "dropped",
                "own_dropped",
                "duplicated",
                "checked_mono",
            ):
                setattr(total, field_name, sum(getattr(r, field_name) for r in selected))
            total.right_mono = sum(r.right_mono for r in selected)
            total.wall_mc, total.wall_mono = sum(r.wall_mc for r in selected), sum(r.wall_mono for r in selected)
            lines.append(
                f"| {total.clip} | | {bleed} | {share(total.right_mc, total.checked_mc)} "
                f"| {share(total.right_span, total.checked_span)} "
                f"| {total.dropped} ({total.own_dropped}) | {total.duplicated} "
                f"| {share(total.right_mono, total.checked_mono)} | | {total.wall_mc:.1f} / {total.wall_mono:.1f} |"
            )
    return lines


def cost(rows: Sequence[Row]) -> list[str]:
    by_channels: dict[int, list[Row]] = {}
    for row in rows:
        by_channels.setdefault(row.channels, []).append(row)
    lines = []
    for count, selected in sorted(by_channels.items()):
        wall_mc, wall_mono = sum(r.wall_mc for r in selected), sum(r.wall_mono for r in selected)
        asr_mc, asr_mono = sum(r.asr_mc for r in selected), sum(r.asr_mono for r in selected)
        diarize = sum(r.diarize_mono for r in selected)
        lines.append(
            f"- {count} channels ({len(selected)} jobs): multichannel {wall_mc:.1f} s wall (ASR {asr_mc:.1f} s), "
            f"mono {wall_mono:.1f} s wall (ASR {asr_mono:.1f} s, diarization {diarize:.1f} s, run beside ASR): "
            f"x{wall_mc / wall_mono:.2f}"
        )
    return lines


def parse_bleed(value: str) -> float | None:
    return None if value == "none" else float(value)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clips", nargs="+", choices=CLIPS, default=list(CLIPS))
    parser.add_argument("--bleed", nargs="+", type=parse_bleed, default=[None, -20.0, -12.0], help="dB, or none")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="bleed arrives this late (the tests: 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args: Any = parser.parse_args(argv)

    settings = WorkerSettings(model="tiny.en", device="cpu", diarizer="builtin", allow_local_files=True)
    engine = Engine(settings)
    engine.warm_up()
    spy = CrosstalkSpy()
    engine_module.__dict__["remove_crosstalk"] = spy  # the engine calls it by this name
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for clip in args.clips:
            for bleed_db in args.bleed:
                row = measure(engine, spy, clip, bleed_db, Path(tmp), delay_ms=args.delay_ms, quiet=args.quiet)
                if row is not None:
                    rows.append(row)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"### Multichannel calls (`.venv/bin/python -m bench.multichannel`, {stamp})\n")
    print(
        f"tiny.en int8 on CPU, builtin diarizer for the mono jobs; {len(rows)} calls in "
        f"{time.perf_counter() - started:.0f} s. A word is checked where only one reference speaker's turns cover its "
        "midpoint. Mono: the same channels averaged, diarized, SPEAKER_xx mapped one-to-one to the reference "
        "(Hungarian). Thresholds were chosen on these clips: not held out.\n"
    )
    print("\n".join(table(rows)))
    print("\nCost, the same calls (wall time of `Engine.run`, in-process; ASR summed over channels):\n")
    print("\n".join(cost(rows)))
    wrong = [f"- {row.clip}, bleed {row.bleed}: {entry}" for row in rows for entry in row.wrong_mc]
    if wrong:
        print("\nMultichannel words on the wrong channel:\n")
        print("\n".join(wrong))


if __name__ == "__main__":
    main()
