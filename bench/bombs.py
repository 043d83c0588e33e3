"""Decompression bombs against the decoder: peak memory added to refuse 6.5 hours of silence at the default 4-hour
limit, and to accept 1 hour, each measured in a fresh child process (the rise of its ru_maxrss over what it held
after imports). With --compare REV, the same cases through the decoder as it was at git revision REV (`git show
REV:...decode.py`, loaded as a separate module), for a before/after table: 8da19fe is the last one before issue 9.
With --job, the 1-hour file also goes through a whole job (decode, ASR with tiny.en and the builtin diarizer beside
it) on a warmed-up engine.

    .venv/bin/python -m bench.bombs --compare 8da19fe --job

The bombs are made by the real ffmpeg: FLAC of silence at 1 kHz with 65535-sample frames (13.5 KB for 6.5 hours),
the same with its STREAMINFO patched to claim 8 seconds, and a FLAC written to a pipe, which states no length.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "reliability"))

from test_decode_limits import BOMB_SECONDS, claim_seconds, silent_flac  # noqa: E402

ACCEPTED_SECONDS = 3_600
LIMIT_SECONDS = 4 * 3600  # the worker's default SCRIBEPOD_MAX_AUDIO_SECONDS
MB = 1024 * 1024


def build(folder: Path) -> dict[str, Path]:
    bomb = silent_flac(folder / "bomb.flac", BOMB_SECONDS)
    return {
        "refuse 6.5 h FLAC (states 6.5 h)": bomb,
        "refuse 6.5 h FLAC (claims 8 s)": claim_seconds(bomb, 8, folder / "liar.flac"),
        "refuse 6.5 h FLAC (no length stated)": silent_flac(folder / "piped.flac", BOMB_SECONDS, piped=True),
        "accept 1 h FLAC": silent_flac(folder / "hour.flac", ACCEPTED_SECONDS),
    }


def old_decoder(folder: Path, revision: str) -> ModuleType:
    """The decoder as it was at `revision`, imported from a copy (the working tree is not touched)."""
    source = subprocess.run(
        ["git", "show", f"{revision}:handler/scribepod_worker/decode.py"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    path = folder / "committed_decode.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("committed_decode", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def child(file: Path, which: str) -> dict[str, object]:
    """Decode `file` in this (fresh) process; the peak RSS it added, the outcome, and the time taken."""
    if which.startswith("at "):
        with tempfile.TemporaryDirectory(prefix="scribepod-bombs-") as folder:
            decoder = old_decoder(Path(folder), which.removeprefix("at "))
    else:
        from scribepod_worker import decode as decoder
    from scribepod_worker.errors import WorkerError

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    started = time.perf_counter()
    try:
        audio = decoder.decode_audio(file, float(LIMIT_SECONDS))
        outcome = f"accepted {audio.size / 16_000:.0f} s"
    except WorkerError as error:
        outcome = error.code
    seconds = time.perf_counter() - started
    added = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    return {"added_mb": round(added / MB, 1), "outcome": outcome, "seconds": round(seconds, 2)}


def job_child(file: Path) -> dict[str, object]:
    """Run `file` as a whole job (decode, ASR with tiny.en, the builtin diarizer beside it) in this fresh process,
    after warming the engine up; the peak RSS the job added."""
    from scribepod.models import TranscriptionRequest
    from scribepod_worker.config import WorkerSettings
    from scribepod_worker.engine import Engine

    settings = WorkerSettings(model="tiny.en", device="cpu", diarizer="builtin", allow_local_files=True)
    engine = Engine(settings)
    engine.warm_up()
    engine.transcribe_audio(np.zeros(16_000, np.float32), TranscriptionRequest(audio="x").options())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    transcript = engine.run(TranscriptionRequest(audio=str(file)))
    seconds = time.perf_counter() - started
    added = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    outcome = f"accepted {transcript.duration:.0f} s"
    return {"added_mb": round(added / MB, 1), "outcome": outcome, "seconds": round(seconds, 2)}


def measure(file: Path, which: str) -> dict[str, object]:
    found = subprocess.run(
        [sys.executable, "-m", "bench.bombs", "--child", str(file), which],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, object] = json.loads(found.stdout.splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare", metavar="REV", help="also measure the decoder as of this git revision")
    parser.add_argument("--job", action="store_true", help="also run the 1 h file as a whole job (tiny.en, builtin)")
    parser.add_argument("--child", nargs=2, metavar=("FILE", "WHICH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        file, which = Path(args.child[0]), args.child[1]
        print(json.dumps(job_child(file) if which == "job" else child(file, which)))
        return 0
    samples_mb = ACCEPTED_SECONDS * 16_000 * 4 / MB
    print(f"limit {LIMIT_SECONDS} s; 1 h of float32 samples is {samples_mb:.0f} MB")
    with tempfile.TemporaryDirectory(prefix="scribepod-bombs-") as folder:
        kinds = ["current", f"at {args.compare}"] if args.compare else ["current"]
        print(f"{'case':40} {'file':>9} " + " ".join(f"{kind + ' (MB added, outcome, s)':>44}" for kind in kinds))
        for case, file in build(Path(folder)).items():
            cells = []
            for kind in kinds:
                found = measure(file, kind)
                cells.append(f"{found['added_mb']:>10} MB  {found['outcome']:>16}  {found['seconds']:>7} s")
            print(f"{case:40} {file.stat().st_size:>7} B " + " ".join(f"{cell:>44}" for cell in cells))
        if args.job:
            found = measure(Path(folder) / "hour.flac", "job")
            print(f"{'accept 1 h FLAC as a whole job (current)':40} {found['added_mb']:>10} MB  {found['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
