"""Diarization on real and clean recordings: `builtin` vs one label, DER and speaker counts.

Real: the six 30 s AMI excerpts in ../shared/realspeech, scored on the turns with no collar inside each clip's UEM
(pyannote.metrics), per clip and pooled. The one-label baselines label all of a diarizer's own speech as one speaker
(same speech detection, no speaker information). The builtin diarizer's settings were tuned only on ami_dev00,
ami_trn00, ami_trn06, pyannote's sample and the synthetic voices; ami_dev01, ami_trn04 and ami_trn08 are HELD OUT and
pooled separately. Clean: pyannote's two-speaker sample, espeak-ng conversations of 2, 3 and 4 voices (tests/synth.py)
and ~17 s of espeak-ng's default `en-us` and `en-gb` voices taking turns; there the speaker count must be right.

    .venv/bin/python -m bench.realspeech [--step S] [--threshold T]

The job's speed with `builtin` against sequential faster-whisper is bench/speed.py's (`python -m bench`).

The retired `lite` diarizer's figures in bench/RESULTS.md came from this script at commit 10846c9, the last with lite.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from scribepod_worker.config import WorkerSettings
from scribepod_worker.diarize.base import SAMPLE_RATE, Diarizer, SpeakerCountHint, SpeakerTurn
from scribepod_worker.diarize.builtin import BuiltinDiarizer, BuiltinOptions
from scribepod_worker.diarize.weights import weights_dir

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from scoring import der_components, diarization_error_rate, pooled_der, read_rttm, read_uem  # noqa: E402
from synth import VOICES, accent_script, round_robin, synthesize_conversation  # noqa: E402

REALSPEECH = ROOT.parent / "shared" / "realspeech"
TUNED = ("ami_dev00", "ami_trn00", "ami_trn06")
HELD_OUT = ("ami_dev01", "ami_trn04", "ami_trn08")

Turn = tuple[float, float, str]


def load(path: Path) -> np.ndarray:
    audio, rate = sf.read(path, dtype="float32")
    if rate != SAMPLE_RATE:
        raise ValueError(f"{path}: expected {SAMPLE_RATE} Hz, got {rate}")
    return np.asarray(audio)


def as_tuples(turns: Sequence[SpeakerTurn]) -> list[Turn]:
    return [(t.start, t.end, t.speaker) for t in turns]


def one_label(turns: Sequence[SpeakerTurn]) -> list[Turn]:
    """All of a diarizer's speech as one speaker (overlapping turns collapse into one)."""
    return [(start, end, "one") for start, end, _ in as_tuples(turns)]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--step", type=float, help="override BuiltinOptions.step")
    parser.add_argument("--threshold", type=float, help="override BuiltinOptions.threshold")
    args = parser.parse_args(argv)

    overrides = {name: value for name in ("step", "threshold") if (value := getattr(args, name)) is not None}
    options = dataclasses.replace(BuiltinOptions(), **overrides)
    print(f"builtin options: {options}")
    diarizers: dict[str, Diarizer] = {"builtin": BuiltinDiarizer(weights_dir(WorkerSettings()), "cpu", options)}
    run_real(diarizers)
    run_clean(diarizers)


def _timed(diarizer: Diarizer, audio: np.ndarray) -> tuple[list[SpeakerTurn], float]:
    started = time.perf_counter()
    turns = diarizer.diarize(audio, SpeakerCountHint()).turns
    return turns, time.perf_counter() - started


def run_real(diarizers: dict[str, Diarizer]) -> None:
    systems = [name for name in diarizers] + [f"one label ({name})" for name in diarizers]
    parts: dict[str, dict[str, dict[str, float]]] = {system: {} for system in systems}
    counts: dict[str, dict[str, int]] = {name: {} for name in diarizers}
    print("\nAMI excerpts: DER, no collar, inside the UEM (speakers found / true)")
    print(f"{'clip':<11} {'set':<9} {'true':>4} " + " ".join(f"{s:>19}" for s in systems))
    for clip in TUNED + HELD_OUT:
        audio = load(REALSPEECH / f"{clip}.wav")
        reference = read_rttm(REALSPEECH / f"{clip}.rttm")
        uem = read_uem(REALSPEECH / f"{clip}.uem")
        for name, diarizer in diarizers.items():
            turns, _ = _timed(diarizer, audio)
            parts[name][clip] = der_components(reference, as_tuples(turns), uem)
            parts[f"one label ({name})"][clip] = der_components(reference, one_label(turns), uem)
            counts[name][clip] = len({t.speaker for t in turns})
        true = len({speaker for _, _, speaker in reference})
        cells = []
        for system in systems:
            found = f" ({counts[system][clip]})" if system in counts else ""
            cells.append(f"{pooled_der([parts[system][clip]]):>14.1%}{found:>5}")
        print(f"{clip:<11} {'tuned' if clip in TUNED else 'HELD OUT':<9} {true:>4} " + " ".join(cells))
    for label, clips in (
        ("pooled, tuned", TUNED),
        ("pooled, HELD OUT", HELD_OUT),
        ("pooled, all six", TUNED + HELD_OUT),
    ):
        cells = [f"{pooled_der(parts[system][c] for c in clips):>19.1%}" for system in systems]
        print(f"{label:<26} " + " ".join(cells))


def run_clean(diarizers: dict[str, Diarizer]) -> None:
    print("\nClean multi-speaker audio: speakers found / true, DER (no collar, whole extent), seconds")
    with tempfile.TemporaryDirectory() as tmp:
        for name, audio, reference in _clean(Path(tmp)):
            true = len({speaker for _, _, speaker in reference})
            cells = []
            for system, diarizer in diarizers.items():
                turns, elapsed = _timed(diarizer, audio)
                found = len({t.speaker for t in turns})
                der = diarization_error_rate(reference, as_tuples(turns))
                mark = "" if found == true else " WRONG"
                cells.append(f"{system} {found}/{true} {der:6.1%} {elapsed:5.1f}s{mark}")
            print(f"{name:<18} {audio.size / SAMPLE_RATE:5.1f}s  " + "   ".join(cells))


def _clean(tmp: Path) -> list[tuple[str, np.ndarray, list[Turn]]]:
    clips = [
        ("pyannote sample", load(ROOT / ".cache/sample/sample.wav"), read_rttm(ROOT / ".cache/sample/sample.rttm"))
    ]
    for voices in (2, 3, 4):
        path = tmp / f"conv{voices}.wav"
        reference = synthesize_conversation(round_robin(VOICES[:voices], max(8, 3 * voices)), path)
        clips.append((f"synthetic {voices} voices", load(path), reference))
    path = tmp / "accents.wav"
    reference = synthesize_conversation(accent_script(), path)
    clips.append(("en-us vs en-gb", load(path), reference))
    return clips


if __name__ == "__main__":
    main()
