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
from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic import ValidationError

from scribepod.models import EnrollmentRequest, Segment, Transcript, TranscriptionRequest
from scribepod.redaction import redact
from scribepod_worker import compat
from scribepod_worker.engine import Engine, ProgressCallback
from scribepod_worker.errors import WorkerError, validation_problems
from scribepod_worker.stop import JobStopped, StopSignal

log = logging.getLogger("scribepod_worker")

_engine: Engine | None = None
_engine_lock = threading.Lock()
_PROGRESS_INTERVAL_S = 2.0
_SEGMENTS_INTERVAL_S = 0.5
# Share of a job's percent the official worker's `translate: true` pass takes (it runs first; see `run_job`).
_TRANSLATE_SHARE = 40.0
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/])/[^\s'\"]+")

UpdateCallback = Callable[[dict[str, Any]], None]
"""Receives a running job's updates, `{"stage", "percent", "segments"}`: the contract's progress update, whose
`segments` are all the provisional segments decoded so far (see `JobUpdates`)."""


class JobUpdates:
    """A running job's updates as RunPod's `progress_update` carries them to /status: the stage, the percent, and
    every segment decoded so far. /status shows only the latest update, so each carries all the segments: a client
    that polls now and then misses none. Segments are provisional (no speaker, no words); the output is exact."""

    def __init__(self, send: UpdateCallback) -> None:
        self._send = send
        self._segments: list[dict[str, Any]] = []  # dumped once each; an update copies the list, not the segments

    def add_segments(self, segments: list[Segment]) -> None:
        self._segments.extend(
            segment.model_dump(mode="json", exclude={"words"}, exclude_none=True) for segment in segments
        )

    def progress(self, stage: str, percent: float) -> None:
        self._send({"stage": stage, "percent": percent, "segments": list(self._segments)})


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


def handle(job: Any, updates: UpdateCallback | None = None, stop: StopSignal | None = None) -> dict[str, Any]:
    """Run one job. Never raises: every failure becomes `{"error": "<contract error JSON>"}` and the worker goes on.

    `job` is whatever the queue delivered (RunPod's `{"id", "input", "s3Config"}`), checked here, not trusted. Only
    `JobStopped` passes through: it goes back to whoever set `stop`, which discards the job. `updates` hears the
    job's progress and provisional segments (default: RunPod's `progress_update`, where a RunPod API listens).
    """
    job_id = job.get("id") if isinstance(job, dict) else None
    try:
        if not isinstance(job, dict):
            raise WorkerError("invalid_input", f"a job must be a JSON object, not {_json_type(job)}", "input")
        output = run_job(job, updates if updates is not None else runpod_updates(job), stop)
    except WorkerError as error:
        log.warning("job %s failed: %s: %s", job_id, error.code, error.message)
        return {"error": error.to_json()}
    except Exception as error:  # the worker must survive anything a job throws at it
        log.exception("job %s failed unexpectedly", job_id)
        return {"error": WorkerError("internal", f"unexpected {type(error).__name__}: {_scrubbed(error)}").to_json()}
    finally:
        release_memory()
    return output


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


def run_job(job: dict[str, Any], updates: UpdateCallback | None, stop: StopSignal | None = None) -> dict[str, Any]:
    """The job's output: ours, plus the official worker's keys when the input was written for it (see `compat`);
    an `enroll` job's voiceprints."""
    job_input = job.get("input")
    s3_config = job.get("s3Config")
    if s3_config is not None and not isinstance(s3_config, dict):
        raise WorkerError("invalid_input", f"s3Config must be a JSON object, not {_json_type(s3_config)}", "s3Config")
    if isinstance(job_input, dict) and "enroll" in job_input:
        enrollment = get_engine().enroll(parse_enrollment(job_input), s3_config=s3_config, stop=stop)
        return enrollment.model_dump(mode="json", exclude_none=True)
    request, asked = parse_input(job_input)
    engine = get_engine()
    live = JobUpdates(updates) if updates is not None else None
    progress: ProgressCallback | None = live.progress if live is not None else None
    on_segments = live.add_segments if live is not None else None
    if asked is None:
        return _output(engine.run(request, s3_config=s3_config, progress=progress, stop=stop, on_segments=on_segments))
    translation = None
    if asked.translate:  # first, so a model that cannot translate fails before the transcription is made
        translation = _translated(
            engine, request, s3_config, _scaled(progress, 0.0, _TRANSLATE_SHARE, "translate"), stop
        )
        progress = _scaled(progress, _TRANSLATE_SHARE, 100.0)
    transcript = engine.run(request, s3_config=s3_config, progress=progress, stop=stop, on_segments=on_segments)
    return {**_output(transcript), **compat.official_output(transcript, asked, translation)}


def parse_input(job_input: Any) -> tuple[TranscriptionRequest, compat.OfficialRequest | None]:
    """A job's `input` checked against the contract (or the official worker's schema, mapped onto ours): the request,
    and what the official worker's caller asked for. Every invalid field is named in one `invalid_input` error."""
    if not isinstance(job_input, dict):
        raise WorkerError(
            "invalid_input", f"the job's input must be a JSON object, not {_json_type(job_input)}", "input"
        )
    asked: compat.OfficialRequest | None = None
    fields: dict[str, Any] = job_input
    problems: list[tuple[str | None, str]] = []
    renamed: dict[str, str] = {}
    if compat.is_official(job_input):
        fields, asked, problems = compat.to_ours(job_input)
        renamed = {mine: theirs for theirs, mine in compat.RENAMED.items() if theirs in job_input}
    try:
        request = TranscriptionRequest.model_validate(fields)
    except ValidationError as error:
        raise WorkerError.invalid_fields([*problems, *validation_problems(error, renamed)], job_input) from None
    if problems:
        raise WorkerError.invalid_fields(problems, job_input)
    return request, asked


def parse_enrollment(job_input: dict[str, Any]) -> EnrollmentRequest:
    """An `enroll` job's input checked against the contract, every invalid field named (never the audio)."""
    try:
        return EnrollmentRequest.model_validate(job_input)
    except ValidationError as error:
        raise WorkerError.invalid_fields(validation_problems(error), job_input) from None


def _output(transcript: Transcript) -> dict[str, Any]:
    """The contract's JSON; without embeddings, channels or enrolled speakers (not asked for) their keys are left
    out, as before those options existed, so the output of existing callers does not change."""
    output = transcript.model_dump(mode="json", exclude={"job"})
    if transcript.channels is None:  # only a job that asked for `multichannel` says what was decided
        del output["channels"]
    if transcript.identification is None:  # only a job that enrolled `speakers` says how they matched
        del output["identification"]
        for speaker in output["speakers"]:
            del speaker["match"], speaker["similarities"]
    if transcript.embedding_model is None:  # the engine sets it whenever a speaker has an embedding
        del output["embedding_model"]
        for speaker in output["speakers"]:
            del speaker["embedding"]
    return output


def _translated(
    engine: Engine,
    request: TranscriptionRequest,
    s3_config: dict[str, Any] | None,
    progress: ProgressCallback | None,
    stop: StopSignal | None,
) -> Transcript:
    """The official worker's `translate: true`: a second pass with task=translate beside the transcription (its
    `translation` key), without speakers or word timings, which it does not give."""
    translating = request.model_copy(
        update={
            "task": "translate",
            "diarize": False,
            "return_embeddings": False,
            "diarize_channels": False,
            "speakers": None,  # nobody is named in a translation: no need to enrol the samples twice
            "speaker_threshold": None,
            "word_timestamps": False,
            "output_formats": [],
        }
    )
    try:
        return engine.run(translating, s3_config=s3_config, progress=progress, stop=stop)
    except WorkerError as error:
        if error.field == "task":  # the caller asked with `translate`, not `task`
            raise WorkerError(error.code, error.message, "translate") from None
        raise


def _scaled(
    progress: ProgressCallback | None, low: float, high: float, stage: str | None = None
) -> ProgressCallback | None:
    """One pass of a two-pass job reported as its share [low, high] of the job's percent, so progress never goes
    down; `stage` renames the pass's stages."""
    if progress is None:
        return None
    report = progress
    return lambda name, percent: report(stage or name, low + (high - low) * percent / 100.0)


def runpod_updates(job: dict[str, Any]) -> UpdateCallback | None:
    """Updates through RunPod's `progress_update` (the job's /status `output` while it runs), throttled; None where
    no RunPod API listens."""
    if not os.environ.get("RUNPOD_WEBHOOK_POST_OUTPUT"):
        return None
    import runpod

    return _throttled(lambda update: runpod.serverless.progress_update(job, update))


def _throttled(send: UpdateCallback) -> UpdateCallback:
    """At most one update per `_PROGRESS_INTERVAL_S`, but a new stage and the last update at once, and new segments
    (a batch decoded) after `_SEGMENTS_INTERVAL_S`. Each update carries every segment so far, so one left out loses
    none."""
    last: dict[str, Any] = {"stage": None, "at": 0.0, "segments": 0}

    def report(update: dict[str, Any]) -> None:
        now = time.monotonic()
        stage, percent, segments = update["stage"], update["percent"], len(update["segments"])
        if (
            stage != last["stage"]
            or (segments > last["segments"] and now - last["at"] >= _SEGMENTS_INTERVAL_S)
            or now - last["at"] >= _PROGRESS_INTERVAL_S
            or percent >= 100.0
        ):
            last.update(stage=stage, at=now, segments=segments)
            send(update)

    return report


async def handle_stream(job: Any) -> AsyncIterator[dict[str, Any]]:
    """RunPod's streaming entry point (SCRIBEPOD_STREAM=1): the job's updates as they come, then its output.

    Each update is a /stream item and holds only the segments new since the one before (every item is delivered,
    so none is lost). With `return_aggregate_stream`, /run and /runsync answer with the list of all the items, the
    output last (README, "Live transcripts"). A stop from RunPod ends the job as in `handle_async`.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    stop = StopSignal()

    def enqueue(update: dict[str, Any]) -> None:  # called on the job's thread
        loop.call_soon_threadsafe(queue.put_nowait, update)

    streamed = _throttled(enqueue)
    to_status = runpod_updates(job)  # /status too, for clients that poll it (the SDK does)

    def report(update: dict[str, Any]) -> None:
        streamed(update)
        if to_status is not None:
            to_status(update)

    work = asyncio.ensure_future(asyncio.to_thread(handle, job, report, stop))
    waiter: asyncio.Future[dict[str, Any]] | None = None
    sent = 0
    try:
        # The job's thread queues each update before it returns, so once `work` is done the queue holds them all.
        while not (work.done() and queue.empty()):
            if queue.empty():
                waiter = asyncio.ensure_future(queue.get())
                await asyncio.wait({waiter, work}, return_when=asyncio.FIRST_COMPLETED)
                if not waiter.done():
                    waiter.cancel()
                    continue
                update = waiter.result()
            else:
                update = queue.get_nowait()
            yield {**update, "segments": update["segments"][sent:]}
            sent = max(sent, len(update["segments"]))
        yield await work
    finally:
        if waiter is not None and not waiter.done():
            waiter.cancel()
        if not work.done():  # RunPod cancelled the job, or the stream's reader left
            stop.set("stopped by RunPod")
            with contextlib.suppress(JobStopped):
                await asyncio.shield(work)
            log.info("job %s stopped", job.get("id") if isinstance(job, dict) else None)
