"""Typed errors: callers branch on the class, scripts on the CLI's exit codes (see scribepod.cli)."""

from __future__ import annotations

from scribepod.redaction import redact


class ScribepodError(Exception):
    """Base class of every error the SDK raises. Its message is redacted here, once for every subclass: messages
    quote response bodies, URLs and worker errors, which may carry an API key, a URL password or a signature."""

    def __init__(self, message: str = "") -> None:
        super().__init__(redact(message))


class JobFailed(ScribepodError):
    """The worker ran the job and reported an error (the contract's `code`, `message` and `field`)."""

    def __init__(self, code: str, message: str, field: str | None = None, job_id: str | None = None) -> None:
        super().__init__(f"{code}: {message}" + (f" (field {field!r})" if field else ""))
        self.code = code
        self.message = redact(message)
        self.field = field
        self.job_id = job_id


class JobCancelled(ScribepodError):
    """The job was cancelled before it finished."""

    def __init__(self, message: str, job_id: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id


class JobTimedOut(ScribepodError):
    """The job did not finish in time: the caller's timeout (the SDK then cancels it) or the endpoint's policy."""

    def __init__(self, message: str, job_id: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id


class AuthenticationError(ScribepodError):
    """The endpoint refused the API key (HTTP 401/403)."""


class EndpointUnavailable(ScribepodError):
    """The endpoint could not be reached or kept failing (transport errors, 429 or 5xx after retries)."""


class SubmissionUncertain(EndpointUnavailable):
    """A POST /run or /runsync failed after it may have reached the endpoint; it was not repeated, because a
    repeated submission can create a duplicate job. The job may or may not exist, and its id is not known.

    `request` names the call ("POST /run"); `status_code` is the HTTP status that ended it (502, 503, 504, 500),
    or None when the connection failed after the request was sent. Submitting again is the caller's decision: it
    runs the job twice if the first one was queued."""

    def __init__(self, message: str, *, request: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.request = request
        self.status_code = status_code


class PayloadTooLarge(ScribepodError):
    """The request is over the endpoint's payload limit and no S3 bucket is configured to upload the audio."""


class InvalidInput(ScribepodError):
    """The request was rejected before any job ran (bad options, unreadable source, HTTP 400)."""


class JobNotFound(ScribepodError):
    """The endpoint does not know the job id (expired or never existed)."""


class LocalInferenceUnavailable(ScribepodError):
    """Local inference was asked for but the worker engine is not installed (the message says how to install it)."""
