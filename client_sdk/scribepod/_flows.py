"""The job protocols written once, without I/O: each flow is a generator that yields `Call` or `Sleep` steps
and receives their results; `Client` drives it with blocking I/O and `AsyncClient` with asyncio. So the sync
and async clients cannot drift apart in how they submit, poll, time out and cancel.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from scribepod._core import (
    JobState,
    LiveSegments,
    MethodNotAllowed,
    ProgressCallback,
    parse_job,
    poll_delays,
    transcript_of,
)
from scribepod.errors import JobTimedOut, ScribepodError
from scribepod.models import Provider, Segment

log = logging.getLogger("scribepod")


@dataclass(frozen=True)
class Call:
    """One HTTP request; `idempotent` says whether the retry policy may repeat it (see _core.retry_arguments)."""

    method: str
    path: str
    idempotent: bool
    what: str
    json: dict[str, Any] | None = None
    params: dict[str, Any] | None = None
    job_id: str | None = None
    timeout: float | None = None


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Emit:
    """Segments for the caller (a live flow's output while the job runs); the driver sends nothing back."""

    segments: list[Segment]


Step = Call | Sleep | Emit
Flow = Generator[Step, Any, Any]

_SYNC_WAIT_S = 60.0  # how long one /runsync call holds the connection before falling back to polling
# How much later than its ?wait= a /runsync answer may come before the SDK stops waiting. The request was sent, so
# giving up makes the submission uncertain: the margin is wide, for a busy endpoint's and a proxy's own delays.
_SYNC_ANSWER_MARGIN_S = 60.0
_CANCEL_ATTEMPT_TIMEOUT_S = 10.0


def submit(body: dict[str, Any]) -> Flow:
    """POST /run: queue a job and return its first state."""
    answer = yield Call("POST", "/run", idempotent=False, what="POST /run", json=body)
    state: JobState = parse_job(answer)
    return state


def status(job_id: str) -> Flow:
    try:
        answer = yield Call("GET", f"/status/{job_id}", idempotent=True, what=f"GET /status/{job_id}", job_id=job_id)
    except MethodNotAllowed:
        answer = yield Call("POST", f"/status/{job_id}", idempotent=True, what=f"POST /status/{job_id}", job_id=job_id)
    state: JobState = parse_job(answer)
    return state


def cancel(job_id: str) -> Flow:
    answer = yield Call(
        "POST",
        f"/cancel/{job_id}",
        idempotent=True,
        what=f"POST /cancel/{job_id}",
        job_id=job_id,
        timeout=_CANCEL_ATTEMPT_TIMEOUT_S,
    )
    state: JobState = parse_job(answer)
    return state


def run_and_wait(
    body: dict[str, Any],
    timeout: float | None,
    on_progress: ProgressCallback | None,
    provider: Provider = "runpod",
    *,
    sync: bool,
    live: bool = False,
    on_submitted: Callable[[str], None] | None = None,
    read: Callable[[JobState, Provider], Any] = transcript_of,
) -> Flow:
    """Submit and wait. With `sync` the job goes through /runsync, which answers the moment the job completes (one
    request, no polling delay); if the sync wait ends first, polling takes over. Otherwise through /run, which
    answers at once with the job id, then polling. `read` turns the finished job into the result (a transcript, or
    an `enroll` job's voiceprints).

    /runsync is asked to answer within an explicit ?wait=, and the SDK waits `_SYNC_ANSWER_MARGIN_S` longer, so
    an endpoint that keeps to ?wait= never leaves a submission uncertain however long its queue."""
    deadline = None if timeout is None else time.monotonic() + timeout
    if sync:
        wait_s = _SYNC_WAIT_S if deadline is None else max(1.0, min(_SYNC_WAIT_S, deadline - time.monotonic()))
        answer = yield Call(
            "POST",
            "/runsync",
            idempotent=False,
            what="POST /runsync",
            json=body,
            params={"wait": int(wait_s * 1000)},
            timeout=wait_s + _SYNC_ANSWER_MARGIN_S,
        )
        state = parse_job(answer)
    else:
        state = yield from submit(body)
    if on_submitted is not None and not state.final:
        on_submitted(state.id)  # from here on the job can be cancelled by id
    result = yield from wait(state, deadline, on_progress, provider, live=live, read=read)
    return result


def wait(
    state: JobState,
    deadline: float | None,
    on_progress: ProgressCallback | None,
    provider: Provider = "runpod",
    *,
    live: bool = False,
    read: Callable[[JobState, Provider], Any] = transcript_of,
) -> Flow:
    """Poll until the job ends, backing off from 0.25 s to 5 s; past the deadline, cancel it and raise.

    When the worker reports progress, the next poll comes no later than its estimated finish, so a result is not
    left waiting for a long backoff step. `live` emits the job's segments as they come (see `LiveSegments`): each
    /status reading carries every segment so far, so the 5 s polls miss none."""
    delays = poll_delays()
    eta = _FinishEstimate()
    segments = LiveSegments()
    last_progress: dict[str, Any] | None = None
    while not state.final:
        if live and (new := segments.provisional(state.updates)):
            yield Emit(new)
        if state.progress is not None:
            eta.observe(float(state.progress.get("percent", 0.0)))
            progress = {key: value for key, value in state.progress.items() if key != "segments"}
            if on_progress is not None and progress != last_progress:
                last_progress = progress
                on_progress(progress)
        delay = eta.cap(next(delays))
        if deadline is not None and time.monotonic() + delay > deadline:
            yield from _cancel_after_timeout(state.id)
            raise JobTimedOut(f"job {state.id} did not finish in time; it was cancelled", state.id)
        yield Sleep(delay)
        state = yield from status(state.id)
    transcript = read(state, provider)
    if live and (new := [*segments.provisional(state.updates), *segments.rest(transcript)]):
        yield Emit(new)
    return transcript


class _FinishEstimate:
    """When a job will reach 100%, from the rate at which its reported percent has been rising."""

    _MIN_DELAY_S = 0.2

    def __init__(self) -> None:
        self._first: tuple[float, float] | None = None
        self._finish_at: float | None = None

    def observe(self, percent: float) -> None:
        now = time.monotonic()
        if self._first is None or percent < self._first[1]:
            self._first = (now, percent)
            return
        started_at, started_percent = self._first
        if percent > started_percent and now > started_at:
            rate = (percent - started_percent) / (now - started_at)
            self._finish_at = now + (100.0 - percent) / rate

    def cap(self, delay: float) -> float:
        if self._finish_at is None:
            return delay
        return max(self._MIN_DELAY_S, min(delay, self._finish_at - time.monotonic()))


def _cancel_after_timeout(job_id: str) -> Flow:
    try:
        yield from cancel(job_id)
    except ScribepodError as error:  # the timeout is what the caller must hear about
        log.warning("could not cancel timed-out job %s: %s", job_id, error)
