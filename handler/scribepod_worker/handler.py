"""The RunPod adapter: a job dict in, the contract's output (or its error object) out. No pipeline logic here."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from scribepod.models import Transcript, TranscriptionRequest
from scribepod.redaction import redact
from scribepod_worker.engine import Engine, ProgressCallback
from scribepod_worker.errors import WorkerError
from scribepod_worker.stop import JobStopped, StopSignal

log = logging.getLogger("scribepod_worker")

_engine: Engine | None = None
_engine_lock = threading.Lock()
_PROGRESS_INTERVAL_S = 2.0
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/])/[^\s'\"]+")


def get_engine() -> Engine:
    """The process's one engine (models stay loaded across jobs)."""
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = Engine()
        return _engine


def set_engine(engine: Engine) -> None:
    """Install a pre-built (and usually warmed-up) engine, as `python -m scribepod_worker` does at start."""
    global _engine
    with _engine_lock:
        _engine = engine


def handle(job: Any, progress: ProgressCallback | None = None, stop: StopSignal | None = None) -> dict[str, Any]:
    """Run one job. Never raises: every failure becomes `{"error": "<contract error JSON>"}` and the worker goes on.

    `job` is whatever the queue delivered (RunPod's `{"id", "input", "s3Config"}`), checked here, not trusted. Only
    `JobStopped` passes through: it goes back to whoever set `stop`, which discards the job.
    """
    job_id = job.get("id") if isinstance(job, dict) else None
    try:
        if not isinstance(job, dict):
            raise WorkerError("invalid_input", f"a job must be a JSON object, not {_json_type(job)}", "input")
        transcript = run_job(job, progress if progress is not None else runpod_progress(job), stop)
    except WorkerError as error:
        log.warning("job %s failed: %s: %s", job_id, error.code, error.message)
        return {"error": error.to_json()}
    except Exception as error:  # the worker must survive anything a job throws at it
        log.exception("job %s failed unexpectedly", job_id)
        return {"error": WorkerError("internal", f"unexpected {type(error).__name__}: {_scrubbed(error)}").to_json()}
    finally:
        release_memory()
    return transcript.model_dump(mode="json", exclude={"job"})


async def handle_async(job: Any) -> dict[str, Any]:
    """RunPod's entry point: `handle` in a thread, so runpod-python's event loop stays free while a job runs.

    runpod-python calls a plain function on its event loop, which then hears nothing until the job ends, RunPod's
    per-job stop signal included. Here the loop stays free: when RunPod stops the job (cancelled, or past its
    executionTimeout) runpod-python cancels this task, the job's `StopSignal` is set, and the task ends once the
    stages have let go (about a second), so the worker is free for the next job rather than finishing one nobody
    will read.
    """
    stop = StopSignal()
    work = asyncio.ensure_future(asyncio.to_thread(handle, job, None, stop))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        stop.set("stopped by RunPod")
        with contextlib.suppress(JobStopped):
            await work
        log.info("job %s stopped", job.get("id") if isinstance(job, dict) else None)
        raise


def _scrubbed(error: Exception) -> str:
    """An unexpected error's text for the caller: what it says (CUDA out of memory, ...) without the paths of this
    machine or the credentials it may quote, and not at any length. The whole of it is in the (redacted) log."""
    return _ABSOLUTE_PATH.sub("<path>", redact(str(error)))[:300]


def _json_type(value: Any) -> str:
    """The JSON name of what arrived instead of an object, for the error message."""
    if value is None:
        return "null"
    return {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )


def release_memory() -> None:
    """Give back what a job left (its audio, torch's cached GPU blocks) so a long job does not crowd the next ones."""
    gc.collect()
    torch = sys.modules.get("torch")  # only where a diarizer already imported it: never import torch just for this
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_job(job: dict[str, Any], progress: ProgressCallback | None, stop: StopSignal | None = None) -> Transcript:
    job_input = job.get("input")
    if not isinstance(job_input, dict):
        raise WorkerError(
            "invalid_input", f"the job's input must be a JSON object, not {_json_type(job_input)}", "input"
        )
    try:
        request = TranscriptionRequest.model_validate(job_input)
    except ValidationError as error:
        raise WorkerError.from_validation(error) from None
    s3_config = job.get("s3Config")
    if s3_config is not None and not isinstance(s3_config, dict):
        raise WorkerError("invalid_input", f"s3Config must be a JSON object, not {_json_type(s3_config)}", "s3Config")
    return get_engine().run(request, s3_config=s3_config, progress=progress, stop=stop)


def runpod_progress(job: dict[str, Any]) -> ProgressCallback | None:
    """Progress through RunPod's `progress_update` (seen in /status), throttled; None where no RunPod API listens."""
    if not os.environ.get("RUNPOD_WEBHOOK_POST_OUTPUT"):
        return None
    import runpod

    return _throttled(
        lambda stage, percent: runpod.serverless.progress_update(job, {"stage": stage, "percent": percent})
    )


def _throttled(send: Callable[[str, float], None]) -> ProgressCallback:
    last: dict[str, Any] = {"stage": None, "at": 0.0}

    def report(stage: str, percent: float) -> None:
        now = time.monotonic()
        if stage != last["stage"] or now - last["at"] >= _PROGRESS_INTERVAL_S or percent >= 100.0:
            last.update(stage=stage, at=now)
            send(stage, percent)

    return report
