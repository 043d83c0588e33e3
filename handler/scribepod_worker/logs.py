"""Logging for the worker's entry points, with credentials removed from every line before it is written.

Jobs carry secrets in their URLs: a password in `https://user:pass@host/...`, a presigned signature in the query.
httpx logs each request's URL at INFO, and an exception's text can quote a URL or a header, so every record is
redacted on its way out (the SDK's `scribepod.redaction`, one set of rules for both), whoever logged it, and the HTTP
clients' own request lines are kept to warnings.
"""

from __future__ import annotations

import logging
import os

from scribepod.redaction import RedactingFilter, register_secret

# Loggers that print request URLs (httpx, httpcore) or request details (botocore, boto3, urllib3) at INFO or DEBUG.
_CHATTY_LOGGERS = ("httpx", "httpcore", "botocore", "boto3", "urllib3", "s3transfer")
# Environment variables whose values are secrets wherever they appear.
_SECRET_VARIABLES = (
    "SCRIBEPOD_API_KEY",
    "RUNPOD_API_KEY",
    "RUNPOD_AI_API_KEY",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "HF_TOKEN",
)


def configure_logging(*secrets: str | None) -> None:
    """The root logger at SCRIBEPOD_LOG_LEVEL (INFO by default), every handler redacting `secrets` and the usual
    credentials, HTTP clients at WARNING."""
    for secret in (*secrets, *(os.environ.get(name) for name in _SECRET_VARIABLES)):
        register_secret(secret)
    level = os.environ.get("SCRIBEPOD_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(existing, RedactingFilter) for existing in handler.filters):
            handler.addFilter(RedactingFilter())
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))
