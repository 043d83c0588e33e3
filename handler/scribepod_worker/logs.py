"""Logging for the worker's entry points, with credentials removed from every line before it is written.

Jobs carry secrets in their URLs: a password in `https://user:pass@host/...`, a presigned signature in the query.
httpx logs each request's URL at INFO, and an exception's text can quote a URL or a header, so every record is
redacted on its way out, whoever logged it, and the HTTP clients' own request lines are kept to warnings.
"""

from __future__ import annotations

import logging
import os
import re

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
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@?#]*@")
_QUERY = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^\s?#\"']*)\?[^\s#\"']*")
_AUTHORIZATION = re.compile(r"(?i)\b(authorization[\"']?\s*[:=]\s*[\"']?)(bearer\s+|basic\s+)?[^\s,\"'}]+")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+")
_SIGNED_PARAMETER = re.compile(
    r"(?i)\b(x-amz-signature|x-amz-credential|x-amz-security-token|signature|awsaccesskeyid|sig|token|"
    r"access_token|api_key|apikey|password)=[^&\s\"']+"
)


def redact(text: str) -> str:
    """`text` without URL passwords, query strings, signed parameters, Authorization values or known secrets."""
    text = _USERINFO.sub(r"\1***@", text)
    text = _QUERY.sub(r"\1?***", text)
    text = _SIGNED_PARAMETER.sub(r"\1=***", text)
    text = _AUTHORIZATION.sub(r"\1\2***", text)
    text = _BEARER.sub(r"\1***", text)
    for name in _SECRET_VARIABLES:
        secret = os.environ.get(name, "")
        if len(secret) >= 8:  # short values would redact ordinary words
            text = text.replace(secret, "***")
    return text


class RedactingFilter(logging.Filter):
    """Rewrites each record's final text (message, arguments and traceback) through `redact`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args = redact(message), None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def configure_logging() -> None:
    """The root logger at SCRIBEPOD_LOG_LEVEL (INFO by default), every handler redacting, HTTP clients at WARNING."""
    level = os.environ.get("SCRIBEPOD_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(existing, RedactingFilter) for existing in handler.filters):
            handler.addFilter(RedactingFilter())
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))
