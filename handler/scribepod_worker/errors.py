"""The worker's one exception type: each failure carries a contract error code and, where it applies, the field."""

from __future__ import annotations

import json

from pydantic import ValidationError

from scribepod.models import ErrorInfo


class WorkerError(Exception):
    """A job failure the caller can act on; `code` is one of the contract's error codes."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def info(self) -> ErrorInfo:
        return ErrorInfo(code=self.code, message=self.message, field=self.field)

    def to_json(self) -> str:
        """The string that goes into RunPod's `error` field."""
        return json.dumps(self.info().model_dump(exclude_none=True))

    @classmethod
    def from_validation(cls, error: ValidationError) -> WorkerError:
        """Turn pydantic's report into `invalid_input` naming the first offending field."""
        first = error.errors()[0]
        location = ".".join(str(part) for part in first["loc"])
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            message = f"unknown field {location!r}"
        elif first["type"] == "value_error" and not location:
            # Cross-field checks name their field at the start of the message: "min_speakers: must not ..."
            message = message.removeprefix("Value error, ")
            location, _, _ = message.partition(":")
        else:
            message = f"{location}: {message}" if location else message
        return cls("invalid_input", message, location or None)
