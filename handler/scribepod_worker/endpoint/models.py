"""Request and response bodies, spelled as RunPod's cloud API spells them (camelCase on the wire)."""

from __future__ import annotations

from enum import Enum
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic.alias_generators import to_camel


class Status(str, Enum):
    """RunPod's job states (docs.runpod.io serverless/endpoints/job-states)."""

    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"

    @property
    def final(self) -> bool:
        return self not in (Status.IN_QUEUE, Status.IN_PROGRESS)


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


# The longest executionTimeout or ttl taken: a week, RunPod's maximum for `ttl` (a 400-digit number once overflowed
# the conversion to seconds, and a deadline past threading.TIMEOUT_MAX would stop the timekeeper).
MAX_POLICY_MS = 7 * 24 * 3600 * 1000
MIN_EXECUTION_TIMEOUT_MS = 5000  # RunPod: executionTimeout "must be > 5000 ms"
MIN_TTL_MS = 10_000  # RunPod: ttl "must be >= 10000 ms, max 1 week"


class Policy(_Wire):
    """`policy` of a /run or /runsync body, in milliseconds as RunPod takes them (`lowPriority` has no meaning here).

    RunPod's bounds are enforced, so that a policy tried here is one RunPod takes. RunPod documents no maximum for
    `executionTimeout`; the stricter choice here holds it to a week too, like `ttl`.
    """

    model_config = ConfigDict(extra="ignore")

    execution_timeout: int | None = None
    ttl: int | None = None

    @field_validator("execution_timeout")
    @classmethod
    def _execution_timeout_in_bounds(cls, value: int | None) -> int | None:
        if value is not None and not MIN_EXECUTION_TIMEOUT_MS < value <= MAX_POLICY_MS:
            raise ValueError(
                f"must be over {MIN_EXECUTION_TIMEOUT_MS} ms (RunPod's minimum) and at most {MAX_POLICY_MS} ms"
                " (a week), in milliseconds"
            )
        return value

    @field_validator("ttl")
    @classmethod
    def _ttl_in_bounds(cls, value: int | None) -> int | None:
        if value is not None and not MIN_TTL_MS <= value <= MAX_POLICY_MS:
            raise ValueError(
                f"must be from {MIN_TTL_MS} ms (10 s) to {MAX_POLICY_MS} ms (a week), as RunPod takes it,"
                " in milliseconds"
            )
        return value


class RunRequest(_Wire):
    """The body of /run and /runsync. `input` is required; the handler judges what is inside it.

    `webhook` may point anywhere the endpoint can reach, loopback and private addresses included: unlike a job's
    audio URL, it comes from the API-key holder (the developer, on their own machine), and pointing it at a local
    receiver is what it is for. Only its form is checked; it is never logged (it may carry a token).
    """

    model_config = ConfigDict(extra="ignore")

    input: Any
    webhook: str | None = None
    policy: Policy | None = None
    s3_config: dict[str, Any] | None = None

    @field_validator("webhook")
    @classmethod
    def _webhook_is_http(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("must be an http:// or https:// URL")
        return value


class JobState(_Wire):
    """/status (and /run, /runsync, /cancel, /retry) answer; absent fields are left out, as RunPod leaves them out."""

    id: str
    status: Status
    delay_time: int | None = None
    execution_time: int | None = None
    output: Any = None
    error: str | None = None
    worker_id: str | None = None


class StreamItem(BaseModel):
    output: Any


class StreamState(BaseModel):
    """/stream answer: the items produced since the previous /stream call (each item is delivered once)."""

    id: str
    status: Status
    stream: list[StreamItem]
    error: str | None = None


class PurgeResult(BaseModel):
    removed: int
    status: str = "completed"


class JobCounts(_Wire):
    completed: int
    failed: int
    in_progress: int
    in_queue: int
    retried: int


class WorkerCounts(BaseModel):
    """RunPod's worker counts, for one local process whose worker slots are its workers: they are warmed up before
    the port opens (none `initializing`), an idle slot is `ready`, and none is `throttled` or `unhealthy`."""

    idle: int
    initializing: int = 0
    ready: int
    running: int
    throttled: int = 0
    unhealthy: int = 0


class Health(BaseModel):
    jobs: JobCounts
    workers: WorkerCounts


class ErrorBody(BaseModel):
    error: str
