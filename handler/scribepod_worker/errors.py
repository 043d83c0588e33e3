"""The worker's one exception type: each failure carries a contract error code and, where it applies, the field."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from scribepod.models import ErrorInfo

# Problems one `invalid_input` message lists: a list of thousands of bad values (a mangled voiceprint) would make a
# message of megabytes, logged and sent back.
_MOST_LISTED = 20


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
    def from_validation(cls, error: ValidationError, renamed: Mapping[str, str] | None = None) -> WorkerError:
        """Turn pydantic's report into one `invalid_input` naming every offending field, so a caller fixes them all
        in one go; `renamed` gives the name the caller used for a field (the official worker's `enable_vad` for our
        `vad_filter`)."""
        return cls.invalid_fields(validation_problems(error, renamed))

    @classmethod
    def invalid_fields(cls, problems: Sequence[tuple[str | None, str]], given: Iterable[str] = ()) -> WorkerError:
        """One `invalid_input` for (field, message) problems: the message lists them all, in the order of the
        caller's fields (`given`, the input's keys; problems of other fields last), and `field` is the first."""
        position = {name: index for index, name in enumerate(given)}
        ordered = sorted(problems, key=lambda problem: position.get((problem[0] or "").split(".")[0], len(position)))
        if len(ordered) == 1:
            field, message = ordered[0]
            return cls("invalid_input", message, field)
        listed = "; ".join(message for _, message in ordered[:_MOST_LISTED])
        more = f"; and {len(ordered) - _MOST_LISTED} more" if len(ordered) > _MOST_LISTED else ""
        return cls("invalid_input", f"{len(ordered)} invalid fields: {listed}{more}", ordered[0][0])


def validation_problems(
    error: ValidationError, renamed: Mapping[str, str] | None = None
) -> list[tuple[str | None, str]]:
    """(field, message) for each of pydantic's errors, in its order."""
    return [_problem(item, renamed or {}) for item in error.errors()]


def _problem(error: ErrorDetails, renamed: Mapping[str, str]) -> tuple[str | None, str]:
    """(field, message) for one of pydantic's errors, the field as the caller named it."""
    parts = [str(part) for part in error["loc"]]
    if parts:
        parts[0] = renamed.get(parts[0], parts[0])
    location = ".".join(parts)
    message = error["msg"].removeprefix("Value error, ")  # pydantic's prefix for our own validators' messages
    if error["type"] == "extra_forbidden":
        message = f"unknown field {location!r}"
    elif error["type"] == "value_error" and not location:
        # Cross-field checks name their field at the start of the message: "min_speakers: must not ..."
        location, _, _ = message.partition(":")
    else:
        message = f"{location}: {message}" if location else message
    return location or None, message
