"""Request and response bodies, spelled as RunPod's cloud API spells them (camelCase on the wire)."""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
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


# The longest executionTimeout or ttl taken: a week (a 400-digit number once overflowed the conversion to seconds,
# and a deadline past threading.TIMEOUT_MAX would stop the timekeeper).
MAX_POLICY_MS = 7 * 24 * 3600 * 1000


class Policy(_Wire):
    """`policy` of a /run or /runsync body, in milliseconds as RunPod takes them (`lowPriority` has no meaning here)."""

    model_config = ConfigDict(extra="ignore")

    execution_timeout: int | None = Field(default=None, gt=0, le=MAX_POLICY_MS)
    ttl: int | None = Field(default=None, gt=0, le=MAX_POLICY_MS)


class RunRequest(_Wire):
    """The body of /run and /runsync. `input` is required; the handler judges what is inside it."""

    model_config = ConfigDict(extra="ignore")

    input: Any
    webhook: str | None = None
    policy: Policy | None = None
    s3_config: dict[str, Any] | None = None


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
    idle: int
    running: int


class Health(BaseModel):
    jobs: JobCounts
    workers: WorkerCounts


class ErrorBody(BaseModel):
    error: str
