"""The same finished jobs fetched by runpod-python's `Endpoint.run()` + `Job.output()` and by the scribepod SDK,
against the local endpoint in one run: HTTP requests per job (counted by a proxy) and how long after the job
completed the caller had its result.

    .venv/bin/python bench/sdk_vs_runpod.py --jobs 5

"Handover" = when the caller got the result minus when the job completed on the endpoint (submit time +
delayTime + executionTime as the endpoint reports them). Both clients see the same endpoint and audio.
"""

from __future__ import annotations

import argparse
import base64
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from servers import FaultProxy, local_endpoint  # noqa: E402

SAMPLE = ROOT / ".cache" / "sample" / "sample.wav"


def run_runpod_python(base: str, audio_b64: str) -> tuple[str, float]:
    import runpod

    runpod.api_key = "local"
    runpod.endpoint_url_base = f"{base}/v2"
    job = runpod.Endpoint("local").run({"audio_base64": audio_b64})
    output = job.output(timeout=300)
    assert output and output.get("segments"), output
    return str(job.job_id), time.perf_counter()


def run_scribepod_transcribe(base: str, audio_b64: str) -> tuple[str, float]:
    from scribepod import Client

    with Client(base_url=f"{base}/v2/local", api_key="local") as client:
        transcript = client.transcribe(base64.b64decode(audio_b64))
    assert transcript.job is not None and transcript.job.id
    return transcript.job.id, time.perf_counter()


def run_scribepod_submit_wait(base: str, audio_b64: str) -> tuple[str, float]:
    from scribepod import Client

    with Client(base_url=f"{base}/v2/local", api_key="local") as client:
        job = client.submit(base64.b64decode(audio_b64))
        job.wait(timeout=300)
    return job.id, time.perf_counter()


def measure(
    name: str, run: Callable[[str, str], tuple[str, float]], proxy: FaultProxy, url: str, *, audio_b64: str, jobs: int
) -> dict[str, Any]:
    requests, handovers = [], []
    for _ in range(jobs):
        before = len(proxy.requests)
        started = time.perf_counter()
        job_id, finished = run(url, audio_b64)
        requests.append(len(proxy.requests) - before)
        state = httpx.get(f"{url}/status/{job_id}", timeout=10).json()
        completed_at = started + (state["delayTime"] + state["executionTime"]) / 1000
        handovers.append(finished - completed_at)
    return {
        "client": name,
        "requests": statistics.mean(requests),
        "handover_median": statistics.median(handovers),
        "handover_max": max(handovers),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=5)
    args = parser.parse_args()

    with local_endpoint() as endpoint:
        audio_b64 = base64.b64encode(SAMPLE.read_bytes()).decode()
        proxy = FaultProxy(endpoint)  # no faults planned: it only counts requests
        rows = []
        with proxy.running() as url:
            for name, run in (
                ("runpod-python Endpoint.run + Job.output", run_runpod_python),
                ("scribepod Client.transcribe", run_scribepod_transcribe),
                ("scribepod Client.submit + Job.wait", run_scribepod_submit_wait),
            ):
                rows.append(measure(name, run, proxy, url, audio_b64=audio_b64, jobs=args.jobs))

    print(f"{args.jobs} jobs each: pyannote sample (30 s), tiny.en + builtin, local endpoint on loopback")
    print(f"{'client':<42}{'requests/job':>14}{'handover median s':>19}{'max s':>8}")
    for row in rows:
        print(f"{row['client']:<42}{row['requests']:>14.1f}{row['handover_median']:>19.2f}{row['handover_max']:>8.2f}")


if __name__ == "__main__":
    main()
