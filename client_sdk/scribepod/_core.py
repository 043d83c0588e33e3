"""What the sync and async clients share: URLs, payload limits, job-state parsing, error mapping, the retry
policy (the one place retries are decided) and the polling schedule. No I/O happens here."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import ValidationError
from tenacity import RetryCallState, retry_if_exception, stop_after_attempt, stop_after_delay

from scribepod.errors import (
    AuthenticationError,
    EndpointUnavailable,
    InvalidInput,
    JobCancelled,
    JobFailed,
    JobNotFound,
    JobTimedOut,
    PayloadTooLarge,
    ScribepodError,
    SubmissionUncertain,
)
from scribepod.models import Enrollment, JobInfo, Provider, Segment, Transcript, Voiceprint
from scribepod.redaction import redact

DEFAULT_BASE_URL = "https://api.runpod.ai/v2/{endpoint_id}"
# RunPod's request size limits: /run takes 10 MB, /runsync 20 MB. A little headroom for headers and options.
RUN_PAYLOAD_LIMIT = 10_000_000 - 64_000
RUNSYNC_PAYLOAD_LIMIT = 20_000_000 - 64_000
FINAL_STATUSES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})
# RunPod answers 429 (rate limit, queue full) before anything is queued. A 5xx may come from a proxy or gateway
# after the API created the job, so for a submission it proves nothing (see retry_arguments).
_REJECTED_BEFORE_PROCESSING = frozenset({429})
_TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class JobState:
    """One reading of a job's status (RunPod's /run, /runsync, /status and /stream answers)."""

    id: str
    status: str
    output: Any = None
    error: Any = None
    delay_time: float | None = None
    execution_time: float | None = None
    worker_id: str | None = None
    stream: tuple[Any, ...] = ()

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def progress(self) -> dict[str, Any] | None:
        """The worker's latest update (`{"stage", "percent", "segments"}`) while the job runs, if it sent any."""
        if self.status == "IN_PROGRESS" and isinstance(self.output, dict) and "stage" in self.output:
            return self.output
        return None

    @property
    def updates(self) -> list[Any]:
        """Every update this reading holds: the latest from /status, the items of /stream, and those of a finished
        job's output from an endpoint in streaming mode (a list: updates, then the transcript)."""
        items = [item.get("output", item) if isinstance(item, dict) else item for item in self.stream]
        if self.progress is not None:
            items.append(self.progress)
        if self.status == "COMPLETED" and isinstance(self.output, list):
            items.extend(self.output[:-1])
        return items


class LiveSegments:
    """A job's segments, each once and in order, as its updates reveal them: provisional ones while it runs (from
    any mix of /status readings, /stream items and streaming-mode output), then the final transcript's segments
    from where the provisional ones end. Together they cover the recording once; the transcript itself is exact."""

    def __init__(self) -> None:
        self._next_id = 0
        self._covered_until = 0.0

    def provisional(self, updates: list[Any]) -> list[Segment]:
        new: list[Segment] = []
        for update in updates:
            if not isinstance(update, Mapping) or not isinstance(update.get("segments"), list):
                continue
            for raw in update["segments"]:
                if isinstance(raw, Mapping) and isinstance(raw.get("id"), int) and raw["id"] >= self._next_id:
                    try:
                        segment = Segment.model_validate(raw)
                    except ValidationError:  # a live view is best effort; the transcript is checked in full
                        continue
                    new.append(segment)
                    self._next_id = segment.id + 1
                    self._covered_until = max(self._covered_until, segment.end)
        return new

    def rest(self, transcript: Transcript) -> list[Segment]:
        """The final segments after the provisional ones: all of them when none came while the job ran."""
        if self._next_id == 0:
            return list(transcript.segments)
        return [segment for segment in transcript.segments if segment.start >= self._covered_until]


def parse_job(body: Mapping[str, Any]) -> JobState:
    if "id" not in body or "status" not in body:
        raise EndpointUnavailable(f"the endpoint answered without a job id or status: {redact(str(body))[:200]}")

    def seconds(key: str) -> float | None:
        value = body.get(key)
        return value / 1000.0 if isinstance(value, int | float) else None

    stream = body.get("stream")
    return JobState(
        id=str(body["id"]),
        status=str(body["status"]),
        output=body.get("output"),
        error=body.get("error"),
        delay_time=seconds("delayTime"),
        execution_time=seconds("executionTime"),
        worker_id=body.get("workerId"),
        stream=tuple(stream) if isinstance(stream, list) else (),
    )


def job_failure(state: JobState) -> ScribepodError:
    """The typed error for a job that ended without a transcript."""
    if state.status == "CANCELLED":
        return JobCancelled(f"job {state.id} was cancelled", state.id)
    if state.status == "TIMED_OUT":
        return JobTimedOut(f"job {state.id} passed the endpoint's execution timeout", state.id)
    error = state.error
    if isinstance(error, str):
        try:
            error = json.loads(error)
        except ValueError:
            return JobFailed("internal", error, job_id=state.id)
    if isinstance(error, Mapping):
        if "code" in error and "message" in error:
            return JobFailed(str(error["code"]), str(error["message"]), error.get("field"), job_id=state.id)
        if "error_message" in error:  # runpod-python's report of an exception that escaped a handler
            return JobFailed("internal", str(error["error_message"]), job_id=state.id)
    return JobFailed("internal", f"job failed without an error message ({redact(str(error))[:200]})", job_id=state.id)


def output_of(state: JobState) -> Any:
    """The output of a COMPLETED job; the job's typed error otherwise."""
    if state.status != "COMPLETED":
        raise job_failure(state)
    output = state.output
    if isinstance(output, list) and output:  # an endpoint in streaming mode: its updates, then the transcript
        output = output[-1]
        if isinstance(output, Mapping) and "error" in output:  # RunPod's local API server reports it so
            raise job_failure(JobState(id=state.id, status="FAILED", error=output["error"]))
    return output


def enrollment_of(state: JobState, provider: Provider = "runpod") -> Enrollment:
    """The voiceprints of a COMPLETED `enroll` job. Fields a newer worker adds to a voiceprint are left out: a
    voiceprint is sent back as a request field, where unknown fields are refused."""
    output = output_of(state)
    if isinstance(output, Mapping) and isinstance(output.get("speakers"), list):
        output = {**output, "speakers": [_known_voiceprint_fields(entry) for entry in output["speakers"]]}
    return Enrollment.model_validate(output)


def _known_voiceprint_fields(entry: Any) -> Any:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("voiceprint"), Mapping):
        return entry
    voiceprint = {key: value for key, value in entry["voiceprint"].items() if key in Voiceprint.model_fields}
    return {"name": entry.get("name"), "voiceprint": voiceprint}


def transcript_of(state: JobState, provider: Provider = "runpod") -> Transcript:
    """The transcript of a COMPLETED job, with where and how long it ran."""
    transcript = Transcript.model_validate(output_of(state))
    transcript.job = JobInfo(
        id=state.id,
        delay_time=state.delay_time,
        execution_time=state.execution_time,
        worker_id=state.worker_id,
        provider=provider,
    )
    return transcript


class MethodNotAllowed(InvalidInput):
    """HTTP 405: runpod-python's development server (`--rp_serve_api`) takes /status only as POST, where RunPod's
    API documents GET (and the local endpoint takes both); `_flows.status` asks again with POST."""


class TransientStatus(Exception):
    """An HTTP answer worth retrying (429, 5xx); carries Retry-After when the server sent one."""

    def __init__(self, status_code: int, retry_after: float | None, detail: str) -> None:
        super().__init__(f"HTTP {status_code}: {detail[:200]}")
        self.status_code = status_code
        self.retry_after = retry_after


def check_response(response: httpx.Response, job_id: str | None = None) -> Any:
    """The JSON body of a successful answer; otherwise the typed error (or TransientStatus, for retries)."""
    status = response.status_code
    if status < 400:
        try:
            return response.json()
        except ValueError:
            raise EndpointUnavailable(f"the endpoint answered HTTP {status} with a body that is not JSON") from None
    detail = redact(response.text)[:500]  # redacted before it is cut, so no part of a secret is left
    if status in _TRANSIENT_STATUSES:
        raise TransientStatus(status, _retry_after(response.headers.get("retry-after")), detail)
    if status in (401, 403):
        if "authorization" not in response.request.headers:
            raise AuthenticationError(
                f"the endpoint needs an API key and none was sent (HTTP {status}): set RUNPOD_API_KEY or pass api_key"
            )
        raise AuthenticationError(f"the endpoint refused the API key (HTTP {status})")
    if status == 413:
        raise PayloadTooLarge(f"the endpoint refused the request as too large (HTTP 413): {detail}")
    if status == 404 and job_id is not None:
        raise JobNotFound(f"the endpoint does not know job {job_id} (expired or never existed)")
    if status == 404:
        raise EndpointUnavailable(f"no such endpoint at {response.request.url} (HTTP 404)")
    if status == 405:
        raise MethodNotAllowed(f"the endpoint does not take {response.request.method} {response.request.url.path}")
    raise InvalidInput(f"the endpoint rejected the request (HTTP {status}): {detail}")


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date; the backoff applies instead


def retry_arguments(*, idempotent: bool, attempts: int, max_seconds: float) -> dict[str, Any]:
    """tenacity arguments for one HTTP call: the single place that decides what is retried, and how.

    Safe to repeat (idempotent): GET /status, /stream, /health and POST /cancel: every transport error, 429 and
    5xx is retried. Not safe: POST /run and /runsync, because a repeat can create a duplicate job: only failures
    that prove the request was not processed are retried: no connection made, and 429, which RunPod answers before
    anything is queued. A 502, 503 or 504 is not such a proof: a proxy or gateway answers it when it lost the API's
    answer, which may come after the job was created (in fault tests, retrying them made 1 to 3 duplicates in 20).
    Those, a 500, and a connection lost after the request was sent end as `SubmissionUncertain`.

    Why not make the submission idempotent instead: RunPod's API takes no idempotency key (a request carries
    `input`, `webhook`, `policy` and `s3Config`; runpod-python sends none, and its urllib3 Retry repeats only 408
    and 429, never for POST), and it has no call that lists jobs, so a lost answer cannot be looked up either.
    """

    def transient(error: BaseException) -> bool:
        if isinstance(error, TransientStatus):
            return idempotent or error.status_code in _REJECTED_BEFORE_PROCESSING
        if isinstance(error, httpx.TransportError):
            return idempotent or isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
        return False

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, TransientStatus) and error.retry_after is not None:
            return min(error.retry_after, 60.0)
        backoff: float = min(8.0, 0.25 * 2.0 ** (state.attempt_number - 1))
        return backoff * random.uniform(0.5, 1.0)

    return {
        "retry": retry_if_exception(transient),
        "wait": wait,
        "stop": stop_after_attempt(attempts) | stop_after_delay(max_seconds),
        "reraise": True,
    }


def final_error(error: BaseException, *, idempotent: bool, what: str) -> ScribepodError:
    """What to raise once retries are over (or were not allowed) for a transport error or transient status."""
    status_code = error.status_code if isinstance(error, TransientStatus) else None
    if not idempotent and not (
        isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
        or status_code in _REJECTED_BEFORE_PROCESSING
    ):
        return SubmissionUncertain(
            f"{what} failed after it may have reached the endpoint ({_describe(error)}); not repeated, to avoid "
            "a duplicate job",
            request=what,
            status_code=status_code,
        )
    return EndpointUnavailable(f"{what} failed: {_describe(error)}")


def _describe(error: BaseException) -> str:
    """An error's text, or its class for httpx errors that have none (a read timeout can be "")."""
    return str(error) or type(error).__name__


def poll_delays(first: float = 0.25, factor: float = 1.6, cap: float = 5.0) -> Iterator[float]:
    """Waits between status polls: fast at first (a 2 s job costs no 5 s wait), then backing off to `cap`,
    with jitter so that many clients polling many jobs do not synchronise."""
    delay = first
    while True:
        yield delay * random.uniform(0.8, 1.2)
        delay = min(cap, delay * factor)


ProgressCallback = Callable[[dict[str, Any]], None]
"""Receives the worker's `{"stage": ..., "percent": ...}` while a job runs."""

SegmentCallback = Callable[[Segment], None]
"""Receives each segment once, in order, while a job runs (see `LiveSegments`)."""


def provider_of(base_url: str | None) -> Provider:
    """Who runs a client's jobs: RunPod's API, another endpoint (such as `scribepod-worker serve`), or this process."""
    if base_url is None:
        return "local"
    host = httpx.URL(base_url).host
    return "runpod" if host == "runpod.ai" or host.endswith((".runpod.ai", ".runpod.io")) else "endpoint"
