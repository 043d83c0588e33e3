"""One worker job in this process, measured: wall time per stage, peak RSS overall and per progress stage, and how
steadily progress was reported. Run in a fresh process per recording so peaks do not carry over:

    .venv/bin/python bench/profile_job.py /tmp/scribepod-bench/joined_10min.wav --model tiny.en
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil


class RssSampler:
    """Peak resident memory, overall and per named phase, sampled every 20 ms in a background thread."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self.phase = "setup"
        self.peaks: dict[str, int] = {}
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _sample(self) -> None:
        rss = self._process.memory_info().rss
        self.peak = max(self.peak, rss)
        self.peaks[self.phase] = max(self.peaks.get(self.phase, 0), rss)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self._sample()


def profile(path: Path, model: str) -> dict[str, Any]:
    """Warm the engine, then run the job through the handler exactly as RunPod would, with a progress callback."""
    from scribepod_worker import handler
    from scribepod_worker.config import WorkerSettings
    from scribepod_worker.engine import Engine

    engine = Engine(WorkerSettings(model=model, device="cpu", diarizer="builtin", allow_local_files=True))
    engine.warm_up()
    handler.set_engine(engine)
    reports: list[tuple[float, str, float]] = []
    with RssSampler() as sampler:
        baseline = psutil.Process().memory_info().rss
        started = time.perf_counter()

        def progress(stage: str, percent: float) -> None:
            sampler.phase = stage
            reports.append((time.perf_counter() - started, stage, percent))

        output = handler.handle({"id": "bench", "input": {"audio": str(path)}}, progress)
        wall = time.perf_counter() - started
    if "error" in output:
        raise RuntimeError(output["error"])
    moments = [0.0] + [at for at, _, _ in reports] + [wall]
    return {
        "path": str(path),
        "model": model,
        "seconds": output["duration"],
        "wall": wall,
        "timings": output["timings"],
        "rss_baseline": baseline,
        "rss_peak": sampler.peak,
        "rss_peak_by_stage": sampler.peaks,
        "progress_reports": len(reports),
        "progress_max_gap": max(b - a for a, b in itertools.pairwise(moments)),
        "progress": reports,
        "words": sum(len(segment["words"]) for segment in output["segments"]),
        "speakers": len(output["speakers"]),
        "turns": output["turns"],
        "segments": [
            {"speaker": w["speaker"], "start": w["start"], "end": w["end"], "word": w["word"]}
            for segment in output["segments"]
            for w in segment["words"]
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", type=Path)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--out", type=Path, help="write the JSON here instead of stdout")
    args = parser.parse_args()
    result = json.dumps(profile(args.path, args.model))
    if args.out:
        args.out.write_text(result)
    else:
        sys.stdout.write(result + "\n")


if __name__ == "__main__":
    main()
