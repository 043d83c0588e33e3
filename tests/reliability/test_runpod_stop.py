"""RunPod stopping a job (cancel, executionTimeout): runpod-python cancels the handler's task; the worker must let go
within about a second and serve the next job, and its event loop must stay free while a job runs."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from scribepod_worker import handler
from scribepod_worker.engine import Engine

from conftest import REALSPEECH, realspeech

AMI_CLIPS = ("ami_dev00", "ami_trn00", "ami_trn04", "ami_trn06", "ami_trn08", "ami_dev01")


@pytest.fixture(scope="module")
def three_minutes_of_meetings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The six real AMI excerpts back to back: long enough that a job is still running when it is stopped."""
    pieces = [sf.read(realspeech(f"{name}.wav"), dtype="float32")[0] for name in AMI_CLIPS]
    path = tmp_path_factory.mktemp("long") / "meetings.wav"
    sf.write(path, np.concatenate(pieces), 16_000)
    return path


async def _stop_after(job: dict[str, object], seconds: float) -> tuple[float, int]:
    """Run `job` through RunPod's entry point, cancel it after `seconds`; return (seconds it took to end, loop ticks
    seen meanwhile)."""
    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.1)
            ticks += 1

    beat = asyncio.create_task(heartbeat())
    task = asyncio.create_task(handler.handle_async(job))
    await asyncio.sleep(seconds)
    assert not task.done(), "the job ended before it could be stopped: make it longer"
    cancelled_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    took = time.monotonic() - cancelled_at
    beat.cancel()
    return took, ticks


@pytest.mark.parametrize("after_s", [0.3, 4.0], ids=["early", "mid-job"])
def test_a_stopped_job_lets_go_within_about_a_second(
    worker: Engine, three_minutes_of_meetings: Path, after_s: float
) -> None:
    job = {"id": "long", "input": {"audio": str(three_minutes_of_meetings), "model": "tiny.en"}}
    took, ticks = asyncio.run(_stop_after(job, after_s))
    print(f"stopped {took:.2f} s after the cancel, {ticks} loop ticks meanwhile")
    assert took < 2.0, f"the job took {took:.1f} s to stop"
    assert ticks >= after_s / 0.1 * 0.7, f"the event loop was blocked while the job ran ({ticks} ticks)"
    # The worker goes on: the next job runs to the end on the same engine.
    short = {"id": "next", "input": {"audio": str(REALSPEECH / "jfk.wav"), "model": "tiny.en", "diarize": False}}
    output = asyncio.run(handler.handle_async(short))
    assert "error" not in output and "country" in output["text"]
