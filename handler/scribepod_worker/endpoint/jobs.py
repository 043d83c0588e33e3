"""The job queue and state machine behind the local endpoint: FIFO queue, worker threads, deadlines, retention.

A handler thread cannot be killed. A cancelled or timed-out job changes state at once; its handler is stopped at
its next progress report (the callback raises `JobAborted`, which the handler does not catch), and whatever it
returns later is discarded. Until then the worker slot stays busy, as a RunPod worker does while it is torn down.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from scribepod_worker.endpoint.models import (
    Health,
    JobCounts,
    JobState,
    PurgeResult,
    RunRequest,
    Status,
    StreamItem,
    StreamState,
    WorkerCounts,
)
from scribepod_worker.engine import ProgressCallback
from scribepod_worker.errors import WorkerError

log = logging.getLogger("scribepod_worker.endpoint")

Handler = Callable[[dict[str, Any], ProgressCallback], dict[str, Any]]
"""`handler.handle`: a RunPod job dict and a progress callback in, the output or `{"error": "<JSON>"}` out."""

DEFAULT_TTL_S = 24 * 3600.0  # RunPod's default `policy.ttl`
_STREAM_BACKLOG = 1000  # undelivered /stream items kept per job; older ones are dropped


class JobAborted(BaseException):
    """Raised inside a handler's progress callback to stop a cancelled or timed-out job.

    A BaseException so that the handler's catch-all (which turns every Exception into a FAILED result) lets it pass.
    """


class UnknownJobError(KeyError):
    """No job with that id, or its result has expired (RunPod answers 404)."""


class NotRetryableError(ValueError):
    """/retry on a job that is not FAILED, TIMED_OUT or CANCELLED."""


@dataclass
class _Job:
    id: str
    input: Any
    s3_config: dict[str, Any] | None
    execution_timeout_s: float | None
    ttl_s: float
    queued_at: float
    status: Status = Status.IN_QUEUE
    attempt: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    output: Any = None
    error: str | None = None
    worker_id: str | None = None
    stream: deque[StreamItem] = field(default_factory=lambda: deque(maxlen=_STREAM_BACKLOG))
    done: threading.Event = field(default_factory=threading.Event)

    def state(self) -> JobState:
        delay = execution = None
        if self.started_at is not None:
            delay = round((self.started_at - self.queued_at) * 1000)
            if self.finished_at is not None:
                execution = round((self.finished_at - self.started_at) * 1000)
        return JobState(
            id=self.id,
            status=self.status,
            delay_time=delay,
            execution_time=execution,
            output=self.output,
            error=self.error,
            worker_id=self.worker_id,
        )

    def payload(self) -> dict[str, Any]:
        """The job dict RunPod hands a worker; `s3Config` only where the request carried one."""
        job: dict[str, Any] = {"id": self.id, "input": self.input}
        if self.s3_config is not None:
            job["s3Config"] = self.s3_config
        return job


class JobStore:
    """Thread-safe: HTTP handlers, worker threads and the timekeeper share one lock."""

    def __init__(
        self,
        handle: Handler,
        *,
        concurrency: int = 1,
        result_ttl_s: float = 1800.0,
        execution_timeout_s: float | None = 600.0,
    ) -> None:
        self._handle = handle
        self._concurrency = concurrency
        self._result_ttl_s = result_ttl_s
        self._execution_timeout_s = execution_timeout_s
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # workers wait here for the queue
        self._clock = threading.Condition(self._lock)  # the timekeeper waits here for the next deadline
        self._jobs: dict[str, _Job] = {}
        self._queue: deque[_Job] = deque()
        self._running = 0
        self._counts = {"completed": 0, "failed": 0, "retried": 0}
        self._closing = False
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._threads = [
            threading.Thread(target=self._worker, args=(f"local-worker-{n}",), name=f"job-worker-{n}", daemon=True)
            for n in range(self._concurrency)
        ]
        self._threads.append(threading.Thread(target=self._timekeeper, name="job-timekeeper", daemon=True))
        for thread in self._threads:
            thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop taking jobs; running handlers are aborted at their next progress report (threads are daemons)."""
        with self._lock:
            self._closing = True
            for job in self._jobs.values():
                job.done.set()  # release /runsync waiters, whose threads would otherwise hold up the exit
            self._work.notify_all()
            self._clock.notify_all()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("%s still busy in the handler at shutdown", thread.name)

    # ------------------------------------------------------------------ requests

    def submit(self, request: RunRequest, *, sync: bool) -> JobState:
        policy = request.policy
        timeout_ms = policy.execution_timeout if policy and policy.execution_timeout else None
        ttl_ms = policy.ttl if policy and policy.ttl else None
        if request.webhook:
            log.warning("webhook %s ignored: the local endpoint does not send webhooks", request.webhook)
        job = _Job(
            id=f"sync-{uuid.uuid4()}" if sync else str(uuid.uuid4()),
            input=request.input,
            s3_config=request.s3_config,
            execution_timeout_s=timeout_ms / 1000 if timeout_ms else self._execution_timeout_s,
            ttl_s=ttl_ms / 1000 if ttl_ms else DEFAULT_TTL_S,
            queued_at=time.monotonic(),
        )
        with self._lock:
            self._jobs[job.id] = job
            self._enqueue(job)
            log.info("job %s queued (%d waiting)", job.id, len(self._queue))
            return job.state()

    def status(self, job_id: str) -> JobState:
        with self._lock:
            return self._get(job_id).state()

    def wait(self, job_id: str, timeout_s: float) -> JobState:
        """Block until the job reaches a final state or `timeout_s` passes; then its state (for /runsync)."""
        with self._lock:
            done = self._get(job_id).done
        done.wait(timeout_s)
        return self.status(job_id)

    def stream(self, job_id: str) -> StreamState:
        with self._lock:
            job = self._get(job_id)
            items = list(job.stream)
            job.stream.clear()
            return StreamState(id=job.id, status=job.status, stream=items, error=job.error)

    def cancel(self, job_id: str) -> JobState:
        """Queued: removed from the queue. Running: marked CANCELLED now, result discarded. Final: unchanged."""
        with self._lock:
            job = self._get(job_id)
            if job.status is Status.IN_QUEUE:
                self._queue.remove(job)
            if not job.status.final:
                self._finish(job, Status.CANCELLED)
                log.info("job %s cancelled", job.id)
            return JobState(id=job.id, status=job.status)

    def retry(self, job_id: str) -> JobState:
        """Re-queue a FAILED, TIMED_OUT or CANCELLED job under the same id; its previous output is removed."""
        with self._lock:
            job = self._get(job_id)
            if job.status not in (Status.FAILED, Status.TIMED_OUT, Status.CANCELLED):
                raise NotRetryableError(f"job {job_id} is {job.status.value}; only FAILED, TIMED_OUT, CANCELLED retry")
            job.attempt += 1
            job.status = Status.IN_QUEUE
            job.queued_at = time.monotonic()
            job.started_at = job.finished_at = job.worker_id = job.error = job.output = None
            job.stream.clear()
            job.done = threading.Event()
            self._counts["retried"] += 1
            self._enqueue(job)
            log.info("job %s re-queued (retry %d)", job.id, job.attempt)
            return JobState(id=job.id, status=job.status)

    def purge(self) -> PurgeResult:
        """Drop every queued job (each becomes CANCELLED, so its pollers stop); running jobs go on."""
        with self._lock:
            removed = list(self._queue)
            self._queue.clear()
            for job in removed:
                self._finish(job, Status.CANCELLED)
            log.info("queue purged: %d jobs removed", len(removed))
            return PurgeResult(removed=len(removed))

    def health(self) -> Health:
        with self._lock:
            return Health(
                jobs=JobCounts(
                    completed=self._counts["completed"],
                    failed=self._counts["failed"],
                    in_progress=sum(job.status is Status.IN_PROGRESS for job in self._jobs.values()),
                    in_queue=len(self._queue),
                    retried=self._counts["retried"],
                ),
                workers=WorkerCounts(idle=self._concurrency - self._running, running=self._running),
            )

    # ------------------------------------------------------------------ internals (called with the lock held)

    def _get(self, job_id: str) -> _Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise UnknownJobError(job_id)
        return job

    def _enqueue(self, job: _Job) -> None:
        self._queue.append(job)
        self._work.notify()
        self._clock.notify()

    def _finish(self, job: _Job, status: Status, *, output: Any = None, error: str | None = None) -> None:
        job.status = status
        job.finished_at = time.monotonic()
        job.output = output  # a stopped job keeps no progress update as its output
        job.error = error
        if status is Status.COMPLETED:
            self._counts["completed"] += 1
        elif status in (Status.FAILED, Status.TIMED_OUT):
            # /health has no timed-out count; a job that ran out of time failed from the caller's side.
            self._counts["failed"] += 1
        job.done.set()
        self._clock.notify()

    # ------------------------------------------------------------------ threads

    def _worker(self, worker_id: str) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closing:
                    self._work.wait()
                if self._closing:
                    return
                job = self._queue.popleft()
                job.status = Status.IN_PROGRESS
                job.started_at = time.monotonic()
                job.worker_id = worker_id
                attempt = job.attempt
                payload = job.payload()
                self._running += 1
                self._clock.notify()
            log.info("job %s started on %s", job.id, worker_id)
            try:
                result: dict[str, Any] | None = self._handle(payload, self._progress(job, attempt))
            except JobAborted:
                result = None
            except Exception as error:  # handle() promises not to raise; a broken promise must not kill the slot
                log.exception("handler raised for job %s", job.id)
                result = {"error": WorkerError("internal", f"handler raised {type(error).__name__}").to_json()}
            with self._lock:
                self._running -= 1
                if result is None or job.attempt != attempt or job.status is not Status.IN_PROGRESS:
                    log.info("job %s: late result discarded (job is %s)", job.id, job.status.value)
                    continue
                if isinstance(result.get("error"), str):
                    self._finish(job, Status.FAILED, error=result["error"])
                else:
                    self._finish(job, Status.COMPLETED, output=result)
                state = job.state()
            log.info("job %s %s in %s ms", job.id, state.status.value, state.execution_time)

    def _progress(self, job: _Job, attempt: int) -> ProgressCallback:
        """What RunPod's `progress_update` does: /status shows the update as `output`; /stream gets it as an item."""

        def report(stage: str, percent: float) -> None:
            update = {"stage": stage, "percent": percent}
            with self._lock:
                if self._closing or job.attempt != attempt or job.status is not Status.IN_PROGRESS:
                    raise JobAborted(job.id)
                if job.output != update:
                    job.output = update
                    job.stream.append(StreamItem(output=update))

        return report

    def _timekeeper(self) -> None:
        """Applies execution timeouts, queue TTLs and result expiry, sleeping on a condition until the next one."""
        with self._lock:
            while not self._closing:
                now = time.monotonic()
                upcoming = [deadline for job in list(self._jobs.values()) if (deadline := self._expire(job, now))]
                self._clock.wait(min(upcoming) - now if upcoming else None)

    def _expire(self, job: _Job, now: float) -> float | None:
        """Apply whichever deadline of `job` has passed; return its next deadline, if it has one."""
        if job.status is Status.IN_QUEUE:
            deadline = job.queued_at + job.ttl_s
            if now < deadline:
                return deadline
            self._queue.remove(job)
            self._finish(job, Status.TIMED_OUT)
            log.info("job %s expired in the queue (policy.ttl)", job.id)
        elif job.status is Status.IN_PROGRESS:
            if job.execution_timeout_s is None or job.started_at is None:
                return None
            deadline = job.started_at + job.execution_timeout_s
            if now < deadline:
                return deadline
            self._finish(job, Status.TIMED_OUT)
            log.info("job %s timed out after %.1f s (policy.executionTimeout)", job.id, job.execution_timeout_s)
        if job.finished_at is None:
            return None
        expiry = job.finished_at + self._result_ttl_s
        if now < expiry:
            return expiry
        del self._jobs[job.id]
        return None
