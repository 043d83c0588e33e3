"""The job queue and state machine behind the local endpoint: a durable FIFO queue, worker threads, deadlines.

Jobs live in a SQLite file: a job is on disk before /run answers, so a crash loses nothing. At start, the jobs the
previous process was running go back to the queue, as RunPod requeues a dead worker's jobs; each start is counted,
and a job that was running at the crash for the `max_attempts`-th time fails instead (it may be what kills the
worker). The queue is bounded: past `max_queue` waiting jobs, /run answers 429 as RunPod does.

Inputs are never kept in memory, only on disk and in the thread running the job. A COMPLETED job's input is dropped
at once; a FAILED, TIMED_OUT or CANCELLED job's stays on disk until its result expires, because /retry runs it again.

A handler thread cannot be killed. Each run gets a `StopSignal`, set on cancel, execution timeout and shutdown; the
pipeline's stages check it in their loops (the progress callback checks it too), so a stopped handler raises
`JobStopped` and frees its slot within about a second. The job's state changes at once; a late result is discarded.

Timestamps on disk are wall-clock (`time.time()`): a monotonic reading means nothing to the next process. Progress
updates and /stream items are kept in memory only; a restart loses them, not the job.

Where RunPod's docs (docs.runpod.io serverless/endpoints/send-requests and operation-reference) leave a behaviour open,
the stricter reading is taken, so that code tried here works deployed:
- Results are kept 30 minutes after a /run job ends and 1 minute after a /runsync job ends (`?wait=` sets how long
  /runsync waits, not how long its result is kept). Then /status answers 404 and /retry cannot bring the job back.
- `?ttl=<ms>` on /status sets the rest of the job's life to that many milliseconds from the call: when it runs out, a
  job still queued or running times out (its run is stopped) and the job is gone, whatever its state, as an expired
  result is. It may shorten or lengthen the result's life, up to a week.
- /retry takes only FAILED and TIMED_OUT jobs; a CANCELLED one stays cancelled.
- A job with a `webhook` gets the /status body POSTed to it once it reaches any final state (COMPLETED, FAILED,
  TIMED_OUT or CANCELLED, purged included). Only a 200 answer counts as delivered; anything else, a connection
  error or no answer within 10 s is retried twice, `webhook_retry_delay_s` apart (RunPod: 10 s). Each delivery runs
  on a thread of its own: it holds no worker slot and never touches the event loop. A delivery owed is marked on
  disk until it succeeds or gives up, so one that a shutdown or crash interrupted starts over at the next start
  (while the job's result is still kept): a receiver may get a body twice, never zero times.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

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
from scribepod_worker.errors import WorkerError
from scribepod_worker.handler import UpdateCallback
from scribepod_worker.stop import JobStopped, StopSignal

log = logging.getLogger("scribepod_worker.endpoint")

Handler = Callable[[dict[str, Any], UpdateCallback, StopSignal], dict[str, Any]]
"""`handler.handle`: a RunPod job dict, an update callback and the run's stop signal in; the output or
`{"error": "<JSON>"}` out, or `JobStopped` raised once the signal is set."""

DEFAULT_TTL_S = 24 * 3600.0  # RunPod's default `policy.ttl`
RUN_RESULT_TTL_S = 30 * 60.0  # RunPod keeps a /run job's result 30 minutes
RUNSYNC_RESULT_TTL_S = 60.0  # and a /runsync job's result 1 minute
WEBHOOK_ATTEMPTS = 3  # RunPod: the first call, then up to 2 more
WEBHOOK_RETRY_DELAY_S = 10.0  # RunPod: 10 s between attempts
WEBHOOK_TIMEOUT_S = 10.0  # an attempt without an answer by then has failed
_STREAM_BACKLOG = 1000  # undelivered /stream items kept per job; older ones are dropped
_FINAL = tuple(status.value for status in Status if status.final)
_RETRYABLE = (Status.FAILED, Status.TIMED_OUT)
_LONGEST_SLEEP_S = 60.0  # the timekeeper looks again at least this often (the wall clock may jump)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    position INTEGER NOT NULL,           -- queue order: submission or retry order
    status TEXT NOT NULL,
    job_input TEXT,                      -- the request's `input` as JSON; NULL once the job cannot run again
    s3_config TEXT,
    execution_timeout_s REAL,
    ttl_s REAL NOT NULL,
    queued_at REAL NOT NULL,             -- wall-clock seconds
    started_at REAL,
    finished_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0, -- runs started since it was submitted or retried
    output TEXT,
    error TEXT,
    worker_id TEXT,
    webhook TEXT,                        -- where the /status body goes once the job is final
    result_ttl_s REAL,                   -- how long the result is kept once final (/run or /runsync)
    expires_at REAL,                     -- set by /status?ttl=: the job is gone at this wall-clock time
    webhook_pending INTEGER NOT NULL DEFAULT 0  -- 1 from the final state until the webhook is delivered or given up
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, position);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
# Columns a state directory written before they existed lacks; added at start (its jobs keep the defaults).
_ADDED_COLUMNS = {
    "webhook": "TEXT",
    "result_ttl_s": "REAL",
    "expires_at": "REAL",
    "webhook_pending": "INTEGER NOT NULL DEFAULT 0",
}


class UnknownJobError(KeyError):
    """No job with that id, or its result has expired (RunPod answers 404)."""


class NotRetryableError(ValueError):
    """/retry on a job that is not FAILED or TIMED_OUT."""


class QueueFullError(RuntimeError):
    """The queue holds `max_queue` jobs already (RunPod answers 429)."""


@dataclass
class _Run:
    """One run of a job on a worker thread: what lives only while it runs."""

    job_id: str
    worker_id: str
    stop: StopSignal
    deadline: float | None  # time.monotonic() at which the execution timeout fires
    progress: dict[str, Any] | None = None
    streamed: int = 0  # segments already handed to /stream items


class JobStore:
    """Thread-safe: HTTP handlers, worker threads and the timekeeper share one lock and one SQLite connection."""

    def __init__(
        self,
        handle: Handler,
        *,
        database: Path,
        concurrency: int = 1,
        result_ttl_s: float = RUN_RESULT_TTL_S,
        sync_result_ttl_s: float = RUNSYNC_RESULT_TTL_S,
        execution_timeout_s: float | None = 600.0,
        max_queue: int = 1000,
        max_attempts: int = 3,
        webhook_retry_delay_s: float = WEBHOOK_RETRY_DELAY_S,
    ) -> None:
        self._handle = handle
        self._concurrency = concurrency
        self._result_ttl_s = result_ttl_s
        self._sync_result_ttl_s = sync_result_ttl_s
        self._webhook_retry_delay_s = webhook_retry_delay_s
        self._closed = threading.Event()  # set on close: webhook deliveries give up their waits
        self._execution_timeout_s = execution_timeout_s
        self._max_queue = max_queue
        self._max_attempts = max_attempts
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # workers wait here for the queue
        self._clock = threading.Condition(self._lock)  # the timekeeper waits here for the next deadline
        # isolation_level=None: every statement commits on its own. WAL with synchronous=NORMAL survives a killed
        # process (what this is for); a power cut may lose the last commits.
        self._db = sqlite3.connect(database, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        present = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for column, kind in _ADDED_COLUMNS.items():
            if column not in present:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")
        self._next_position: int = self._scalar("SELECT COALESCE(MAX(position), 0) + 1 FROM jobs")
        self._runs: dict[str, _Run] = {}  # job id -> its live run (a stopped run is no longer here)
        self._busy = 0  # worker threads inside the handler, stopped runs included
        self._streams: dict[str, deque[StreamItem]] = {}
        self._waiters: dict[str, list[Callable[[], None]]] = {}
        self._closing = False
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Requeue what a crashed process was running and resend the webhooks it owed, then start the workers and
        the timekeeper."""
        with self._lock:
            placeholders = ", ".join("?" * len(_FINAL))
            owed = self._db.execute(
                f"SELECT id FROM jobs WHERE webhook_pending = 1 AND status IN ({placeholders})", _FINAL
            ).fetchall()
            self._recover()  # jobs it fails send their webhooks themselves
            for (job_id,) in owed:
                self._send_webhook(job_id)
        self._threads = [
            threading.Thread(target=self._worker, args=(f"local-worker-{n}",), name=f"job-worker-{n}", daemon=True)
            for n in range(self._concurrency)
        ]
        self._threads.append(threading.Thread(target=self._timekeeper, name="job-timekeeper", daemon=True))
        for thread in self._threads:
            thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop running jobs and put them back in the queue (a shutdown is not the job's fault: the attempt is not
        counted); the queue stays on disk for the next start."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._closed.set()
            for run in self._runs.values():
                run.stop.set("the endpoint is shutting down")
                self._db.execute(
                    "UPDATE jobs SET status = ?, attempts = attempts - 1, started_at = NULL, worker_id = NULL"
                    " WHERE id = ?",
                    (Status.IN_QUEUE.value, run.job_id),
                )
            self._runs.clear()
            for waiters in self._waiters.values():
                for wake in waiters:
                    wake()  # release /runsync waiters, which would otherwise hold up the exit
            self._waiters.clear()
            self._work.notify_all()
            self._clock.notify_all()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("%s still busy in the handler at shutdown", thread.name)
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ requests

    def submit(self, request: RunRequest, *, sync: bool) -> JobState:
        """Store the job (on disk before this returns), or raise `QueueFullError`."""
        policy = request.policy
        timeout_ms = policy.execution_timeout if policy and policy.execution_timeout else None
        ttl_ms = policy.ttl if policy and policy.ttl else None
        job_id = f"sync-{uuid.uuid4()}" if sync else str(uuid.uuid4())
        job_input = json.dumps(request.input)
        s3_config = json.dumps(request.s3_config) if request.s3_config is not None else None
        with self._lock:
            waiting = self._check_room()
            self._db.execute(
                "INSERT INTO jobs (id, position, status, job_input, s3_config, execution_timeout_s, ttl_s, queued_at,"
                " webhook, result_ttl_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    self._take_position(),
                    Status.IN_QUEUE.value,
                    job_input,
                    s3_config,
                    timeout_ms / 1000 if timeout_ms else self._execution_timeout_s,
                    ttl_ms / 1000 if ttl_ms else DEFAULT_TTL_S,
                    time.time(),
                    request.webhook,
                    self._sync_result_ttl_s if sync else self._result_ttl_s,
                ),
            )
            self._work.notify()
            self._clock.notify()
        log.info("job %s queued (%d waiting)", job_id, waiting + 1)
        return JobState(id=job_id, status=Status.IN_QUEUE)

    def status(self, job_id: str, *, ttl_ms: int | None = None) -> JobState:
        """The job's state; with `ttl_ms` (/status?ttl=), the job is gone that many milliseconds from now."""
        with self._lock:
            state = self._state_of(job_id)
            if ttl_ms is not None:
                self._db.execute("UPDATE jobs SET expires_at = ? WHERE id = ?", (time.time() + ttl_ms / 1000, job_id))
                self._clock.notify()
        return state

    def _state_of(self, job_id: str) -> JobState:
        """The /status body (called with the lock held)."""
        row = self._db.execute(
            "SELECT status, queued_at, started_at, finished_at, output, error, worker_id FROM jobs WHERE id = ?",
            (job_id,),
        ).fetchone()
        if row is None:
            raise UnknownJobError(job_id)
        run = self._runs.get(job_id)
        progress = run.progress if run is not None else None
        status, queued_at, started_at, finished_at, output, error, worker_id = row
        delay = execution = None
        if started_at is not None:
            delay = round((started_at - queued_at) * 1000)
            if finished_at is not None:
                execution = round((finished_at - started_at) * 1000)
        return JobState(
            id=job_id,
            status=Status(status),
            delay_time=delay,
            execution_time=execution,
            output=json.loads(output) if output is not None else progress,
            error=error,
            worker_id=worker_id,
        )

    def on_final(self, job_id: str, wake: Callable[[], None]) -> Callable[[], None]:
        """Call `wake` (from whichever thread ends the job; it must not block) once the job reaches a final state,
        at once if it has; return the function that cancels the call. How /runsync waits without a thread."""
        with self._lock:
            if self._status_of(job_id).final:
                wake()
                return lambda: None
            self._waiters.setdefault(job_id, []).append(wake)

        def forget() -> None:
            with self._lock:
                waiters = self._waiters.get(job_id, [])
                if wake in waiters:
                    waiters.remove(wake)
                if not waiters:
                    self._waiters.pop(job_id, None)

        return forget

    def stream(self, job_id: str) -> StreamState:
        with self._lock:
            status = self._status_of(job_id)
            items = list(self._streams.pop(job_id, ()))
            error = self._scalar("SELECT error FROM jobs WHERE id = ?", job_id) if status.final else None
        return StreamState(id=job_id, status=status, stream=items, error=error)

    def cancel(self, job_id: str) -> JobState:
        """Queued: never runs. Running: CANCELLED now, its run stopped, its result discarded. Final: unchanged."""
        with self._lock:
            status = self._status_of(job_id)
            if not status.final:
                self._end_run(job_id, "cancelled")
                status = self._finish(job_id, Status.CANCELLED)
                log.info("job %s cancelled", job_id)
            return JobState(id=job_id, status=status)

    def retry(self, job_id: str) -> JobState:
        """Re-queue a FAILED or TIMED_OUT job under the same id, at the back; its result (and any /status?ttl= on it)
        is removed. RunPod retries only those two; a CANCELLED job stays cancelled."""
        with self._lock:
            status = self._status_of(job_id)
            if status not in _RETRYABLE:
                raise NotRetryableError(
                    f"job {job_id} is {status.value}; only FAILED and TIMED_OUT jobs can be retried"
                )
            self._check_room()
            self._db.execute(
                "UPDATE jobs SET status = ?, position = ?, queued_at = ?, attempts = 0, started_at = NULL,"
                " finished_at = NULL, output = NULL, error = NULL, worker_id = NULL, expires_at = NULL,"
                " webhook_pending = 0 WHERE id = ?",
                (Status.IN_QUEUE.value, self._take_position(), time.time(), job_id),
            )
            self._streams.pop(job_id, None)
            self._count("retried")
            self._work.notify()
            self._clock.notify()
        log.info("job %s re-queued", job_id)
        return JobState(id=job_id, status=Status.IN_QUEUE)

    def purge(self) -> PurgeResult:
        """Drop every queued job (each becomes CANCELLED, so its pollers stop); running jobs go on."""
        with self._lock:
            queued = [job_id for (job_id,) in self._db.execute("SELECT id FROM jobs WHERE status = 'IN_QUEUE'")]
            for job_id in queued:
                self._finish(job_id, Status.CANCELLED)
        log.info("queue purged: %d jobs removed", len(queued))
        return PurgeResult(removed=len(queued))

    def health(self) -> Health:
        with self._lock:
            by_status = dict(self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall())
            counters = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
            busy = self._busy
        return Health(
            jobs=JobCounts(
                completed=counters.get("completed", 0),
                failed=counters.get("failed", 0),
                in_progress=by_status.get(Status.IN_PROGRESS.value, 0),
                in_queue=by_status.get(Status.IN_QUEUE.value, 0),
                retried=counters.get("retried", 0),
            ),
            workers=WorkerCounts(idle=self._concurrency - busy, ready=self._concurrency - busy, running=busy),
        )

    # ------------------------------------------------------------------ internals (called with the lock held)

    def _scalar(self, sql: str, *parameters: Any) -> Any:
        row = self._db.execute(sql, parameters).fetchone()
        return row[0] if row is not None else None

    def _status_of(self, job_id: str) -> Status:
        status = self._scalar("SELECT status FROM jobs WHERE id = ?", job_id)
        if status is None:
            raise UnknownJobError(job_id)
        return Status(status)

    def _check_room(self) -> int:
        """The number of queued jobs, or `QueueFullError` if there is no room for one more."""
        if self._closing:
            raise QueueFullError("the endpoint is shutting down")
        waiting: int = self._scalar("SELECT COUNT(*) FROM jobs WHERE status = 'IN_QUEUE'")
        if waiting >= self._max_queue:
            raise QueueFullError(f"the queue is full: {waiting} jobs are waiting (at most {self._max_queue})")
        return waiting

    def _take_position(self) -> int:
        position = self._next_position
        self._next_position += 1
        return position

    def _count(self, name: str) -> None:
        self._db.execute(
            "INSERT INTO counters (name, value) VALUES (?, 1) ON CONFLICT (name) DO UPDATE SET value = value + 1",
            (name,),
        )

    def _end_run(self, job_id: str, reason: str) -> None:
        """Stop the job's live run, if it has one; its thread frees the slot when the handler returns."""
        run = self._runs.pop(job_id, None)
        if run is not None:
            run.stop.set(reason)

    def _finish(self, job_id: str, status: Status, *, output: str | None = None, error: str | None = None) -> Status:
        # A COMPLETED job cannot run again, so its input goes; the others keep theirs for /retry until they expire.
        self._db.execute(
            "UPDATE jobs SET status = ?, finished_at = ?, output = ?, error = ?,"
            " job_input = CASE WHEN ? THEN NULL ELSE job_input END WHERE id = ?",
            (status.value, time.time(), output, error, status is Status.COMPLETED, job_id),
        )
        if status is Status.COMPLETED:
            self._count("completed")
        elif status in (Status.FAILED, Status.TIMED_OUT):
            # /health has no timed-out count; a job that ran out of time failed from the caller's side.
            self._count("failed")
        for wake in self._waiters.pop(job_id, []):
            wake()
        self._clock.notify()
        if self._db.execute(
            "UPDATE jobs SET webhook_pending = 1 WHERE id = ? AND webhook IS NOT NULL", (job_id,)
        ).rowcount:
            self._send_webhook(job_id)
        return status

    def _send_webhook(self, job_id: str) -> None:
        """Start delivering the final job's /status body to its webhook, on a thread of its own."""
        url, finished_at = self._db.execute("SELECT webhook, finished_at FROM jobs WHERE id = ?", (job_id,)).fetchone()
        body = self._state_of(job_id).model_dump_json(by_alias=True, exclude_none=True)
        threading.Thread(
            target=self._deliver, args=(job_id, url, body, finished_at), name=f"webhook-{job_id}", daemon=True
        ).start()

    def _deliver(self, job_id: str, url: str, body: str, finished_at: float) -> None:
        """POST the body: up to `WEBHOOK_ATTEMPTS` tries, only 200 counts. Once delivered or given up, the job no
        longer owes it (unless it was retried since: `finished_at` tells that run's end). The URL is not logged: it
        may carry a token."""
        headers = {"Content-Type": "application/json"}
        for attempt in range(1, WEBHOOK_ATTEMPTS + 1):
            try:
                answer = httpx.post(url, content=body, headers=headers, timeout=WEBHOOK_TIMEOUT_S)
                outcome = f"HTTP {answer.status_code}"
                if answer.status_code == 200:
                    log.info("webhook for job %s delivered (attempt %d)", job_id, attempt)
                    break
            except httpx.HTTPError as error:
                outcome = type(error).__name__
            if attempt == WEBHOOK_ATTEMPTS:
                log.warning("webhook for job %s not delivered after %d attempts (%s)", job_id, attempt, outcome)
            elif self._closed.wait(self._webhook_retry_delay_s):
                log.info("webhook for job %s interrupted by the shutdown; it is sent again at the next start", job_id)
                return
        with self._lock:
            if not self._closing:
                self._db.execute(
                    "UPDATE jobs SET webhook_pending = 0 WHERE id = ? AND finished_at = ?", (job_id, finished_at)
                )

    def _recover(self) -> None:
        """Jobs left IN_PROGRESS by a process that died go back to the queue, or fail after `max_attempts` runs."""
        interrupted = self._db.execute("SELECT id, attempts FROM jobs WHERE status = 'IN_PROGRESS'").fetchall()
        for job_id, attempts in interrupted:
            if attempts >= self._max_attempts:
                message = (
                    f"the endpoint died while running this job, on each of its {attempts} runs (the limit is"
                    f" {self._max_attempts}); it was not run again"
                )
                self._finish(job_id, Status.FAILED, error=WorkerError("internal", message).to_json())
                log.warning("job %s failed: the worker died during each of its %d runs", job_id, attempts)
            else:
                self._db.execute(
                    "UPDATE jobs SET status = ?, started_at = NULL, worker_id = NULL WHERE id = ?",
                    (Status.IN_QUEUE.value, job_id),
                )
                self._count("retried")
                log.warning("job %s was running when the endpoint stopped: back in the queue", job_id)

    def _claim(self, worker_id: str) -> tuple[_Run, str, str | None] | None:
        """Take the first queued job: its run, its input JSON and its s3Config JSON."""
        row = self._db.execute(
            "SELECT id, job_input, s3_config, execution_timeout_s FROM jobs WHERE status = 'IN_QUEUE'"
            " ORDER BY position LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        job_id, job_input, s3_config, timeout_s = row
        self._db.execute(
            "UPDATE jobs SET status = ?, started_at = ?, worker_id = ?, attempts = attempts + 1 WHERE id = ?",
            (Status.IN_PROGRESS.value, time.time(), worker_id, job_id),
        )
        deadline = time.monotonic() + timeout_s if timeout_s else None
        run = _Run(job_id=job_id, worker_id=worker_id, stop=StopSignal(), deadline=deadline)
        self._runs[job_id] = run
        self._busy += 1
        self._clock.notify()
        return run, job_input, s3_config

    # ------------------------------------------------------------------ threads

    def _worker(self, worker_id: str) -> None:
        while True:
            with self._lock:
                claimed = None
                while not self._closing and (claimed := self._claim(worker_id)) is None:
                    self._work.wait()
                if claimed is None:
                    return
            run, job_input, s3_config = claimed
            payload: dict[str, Any] = {"id": run.job_id, "input": json.loads(job_input)}
            if s3_config is not None:
                payload["s3Config"] = json.loads(s3_config)
            del job_input
            log.info("job %s started on %s", run.job_id, worker_id)
            output: str | None = None
            error: str | None = None
            try:
                result = self._handle(payload, self._progress(run), run.stop)
                if isinstance(result.get("error"), str):
                    error = result["error"]
                else:
                    output = json.dumps(result)
            except JobStopped:
                pass
            except Exception as exc:  # handle() promises not to raise; a broken promise must not kill the slot
                log.exception("handler raised for job %s", run.job_id)
                error = WorkerError("internal", f"handler raised {type(exc).__name__}").to_json()
            del payload
            with self._lock:
                self._busy -= 1
                if self._closing:
                    return
                if self._runs.get(run.job_id) is not run:
                    log.info("job %s stopped (%s); its slot is free", run.job_id, run.stop.reason)
                    continue
                del self._runs[run.job_id]
                status = self._finish(
                    run.job_id, Status.FAILED if error is not None else Status.COMPLETED, output=output, error=error
                )
            log.info("job %s %s", run.job_id, status.value)

    def _progress(self, run: _Run) -> UpdateCallback:
        """What RunPod's `progress_update` does: /status shows the latest update as `output`, every segment so far
        in it. /stream gets each update as an item, holding only the segments new since the item before, as the
        streaming handler yields them. A stopped run's next report raises `JobStopped`, wherever the stages
        themselves do not check."""

        def report(update: dict[str, Any]) -> None:
            with self._lock:
                run.stop.check()
                if run.progress != update:
                    run.progress = update
                    item = {**update, "segments": update["segments"][run.streamed :]}
                    run.streamed = max(run.streamed, len(update["segments"]))
                    backlog = self._streams.setdefault(run.job_id, deque(maxlen=_STREAM_BACKLOG))
                    backlog.append(StreamItem(output=item))

        return report

    def _timekeeper(self) -> None:
        """Applies execution timeouts, queue TTLs and result expiry, sleeping on a condition until the next one."""
        with self._lock:
            while not self._closing:
                self._clock.wait(self._apply_deadlines())

    def _apply_deadlines(self) -> float:
        """Apply every deadline that has passed; return the seconds until the next one."""
        now, clock = time.time(), time.monotonic()
        upcoming = [_LONGEST_SLEEP_S]
        for run in list(self._runs.values()):
            if run.deadline is None:
                continue
            if clock < run.deadline:
                upcoming.append(run.deadline - clock)
                continue
            self._end_run(run.job_id, "timed out")
            self._finish(run.job_id, Status.TIMED_OUT)
            log.info("job %s timed out (policy.executionTimeout)", run.job_id)
        expired_in_queue = self._db.execute(
            "SELECT id FROM jobs WHERE status = 'IN_QUEUE' AND queued_at + ttl_s <= ?", (now,)
        ).fetchall()
        for (job_id,) in expired_in_queue:
            self._finish(job_id, Status.TIMED_OUT)
            log.info("job %s expired in the queue (policy.ttl)", job_id)
        for (job_id,) in self._db.execute(
            "SELECT id FROM jobs WHERE status IN ('IN_QUEUE', 'IN_PROGRESS') AND expires_at <= ?", (now,)
        ).fetchall():
            self._end_run(job_id, "its ttl ran out")
            self._finish(job_id, Status.TIMED_OUT)
            log.info("job %s expired (/status?ttl=)", job_id)
        placeholders = ", ".join("?" * len(_FINAL))
        # A result lasts its own retention (/run or /runsync), unless /status?ttl= set the job's end.
        result_end = f"COALESCE(expires_at, finished_at + COALESCE(result_ttl_s, {self._result_ttl_s!r}))"
        expired = self._db.execute(
            f"SELECT id FROM jobs WHERE status IN ({placeholders}) AND {result_end} <= ?", (*_FINAL, now)
        ).fetchall()
        for (job_id,) in expired:
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            self._streams.pop(job_id, None)
        next_in_queue = self._scalar("SELECT MIN(queued_at + ttl_s) FROM jobs WHERE status = 'IN_QUEUE'")
        next_result = self._scalar(f"SELECT MIN({result_end}) FROM jobs WHERE status IN ({placeholders})", *_FINAL)
        next_expiry = self._scalar("SELECT MIN(expires_at) FROM jobs WHERE status IN ('IN_QUEUE', 'IN_PROGRESS')")
        upcoming += [moment - now for moment in (next_in_queue, next_result, next_expiry) if moment is not None]
        return max(0.0, min(upcoming))
