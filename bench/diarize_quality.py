"""Quality and speed of a diarizer (`builtin` by default, or `pyannote`): DER, speaker count and runtime per clip.

Clips: pyannote.audio's two-speaker sample (.cache/sample) and espeak-ng conversations of 1..5
distinct voices (tests/synth.py), plus the time to diarize a 10-minute recording made by
concatenating conversations. Run from the repository root:

    .venv/bin/python bench/diarize_quality.py [--diarizer pyannote]

Real meeting recordings (AMI, with one-label baselines and held-out clips) are in bench/realspeech.py.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from scribepod_worker.config import WorkerSettings
from scribepod_worker.diarize import load_diarizer
from scribepod_worker.diarize.base import SAMPLE_RATE, SpeakerCountHint, SpeakerTurn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from scoring import diarization_error_rate, read_rttm
from synth import VOICES, round_robin, synthesize_conversation

SAMPLE_DIR = Path(".cache/sample")


def der(reference: Sequence[tuple[float, float, str]], hypothesis: Sequence[SpeakerTurn], collar: float) -> float:
    return diarization_error_rate(reference, [(t.start, t.end, t.speaker) for t in hypothesis], collar)


def load(path: Path) -> np.ndarray:
    audio, rate = sf.read(path, dtype="float32")
    if rate != SAMPLE_RATE:
        raise ValueError(f"{path}: expected {SAMPLE_RATE} Hz, got {rate}")
    return np.asarray(audio)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long-minutes", type=float, default=10.0, help="length of the timing recording")
    parser.add_argument("--diarizer", choices=["builtin", "pyannote"], default="builtin")
    args = parser.parse_args()

    started = time.perf_counter()
    diarizer = load_diarizer(args.diarizer, WorkerSettings.from_env(), "cpu")
    print(f"model load: {time.perf_counter() - started:.2f} s")

    with tempfile.TemporaryDirectory() as tmp:
        clips: list[tuple[str, np.ndarray, list[tuple[float, float, str]]]] = [
            ("pyannote sample", load(SAMPLE_DIR / "sample.wav"), read_rttm(SAMPLE_DIR / "sample.rttm"))
        ]
        for voices in range(1, 6):
            path = Path(tmp) / f"conv{voices}.wav"
            reference = synthesize_conversation(round_robin(VOICES[:voices], max(8, 3 * voices)), path)
            clips.append((f"synthetic {voices} voices", load(path), reference))

        print(f"{'clip':<20} {'dur s':>6} {'DER':>7} {'DER c.5':>8} {'est':>4} {'true':>5} {'diar s':>7}")
        for name, audio, reference in clips:
            started = time.perf_counter()
            turns = diarizer.diarize(audio, SpeakerCountHint()).turns
            elapsed = time.perf_counter() - started
            estimated = len({t.speaker for t in turns})
            true = len({speaker for _, _, speaker in reference})
            print(
                f"{name:<20} {audio.size / SAMPLE_RATE:>6.1f} {der(reference, turns, 0.0):>7.1%}"
                f" {der(reference, turns, 0.5):>8.1%} {estimated:>4} {true:>5} {elapsed:>7.2f}"
            )

        long_audio, long_reference = _long_recording(clips[1:], args.long_minutes * 60)
        started = time.perf_counter()
        turns = diarizer.diarize(long_audio, SpeakerCountHint()).turns
        elapsed = time.perf_counter() - started
        print(
            f"{'long recording':<20} {long_audio.size / SAMPLE_RATE:>6.1f} {der(long_reference, turns, 0.0):>7.1%}"
            f" {der(long_reference, turns, 0.5):>8.1%} {len({t.speaker for t in turns}):>4}"
            f" {len({s for _, _, s in long_reference}):>5} {elapsed:>7.2f}"
        )


def _long_recording(
    clips: Sequence[tuple[str, np.ndarray, list[tuple[float, float, str]]]], seconds: float
) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """Concatenate the conversations (same voices, so same speakers) until `seconds` are reached."""
    pieces: list[np.ndarray] = []
    reference: list[tuple[float, float, str]] = []
    offset = 0.0
    while offset < seconds:
        for _, audio, turns in clips:
            pieces.append(audio)
            reference.extend((offset + start, offset + end, speaker) for start, end, speaker in turns)
            offset += audio.size / SAMPLE_RATE
    return np.concatenate(pieces), reference


if __name__ == "__main__":
    main()
