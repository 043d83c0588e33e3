"""Credentials kept out of everything the SDK (and the worker) raises or logs.

An endpoint or proxy may echo a request back in its error body (the Authorization header, the job's presigned URL),
and the SDK quotes bodies, URLs and worker messages in its errors. `redact` is applied where those errors are built
(`ScribepodError` redacts its own message) and to every record of the `scribepod` logger, so no call site can forget.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import quote

_MIN_SECRET_LENGTH = 8  # shorter values would redact ordinary words
_known_secrets: set[str] = set()

_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@?#\"'<>]*@")
_QUERY = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^\s?#\"'<>]*)\?[^\s#\"'<>]*")
# `name=value` pairs that carry a credential, in a query string or anywhere else (an AWS Authorization header's
# `Credential=...` and `Signature=...`, a form body, a log line that splits a URL).
# `=` also percent-encoded, as in a URL quoted inside another URL.
_SECRET_PARAMETER = re.compile(
    r"(?i)\b([\w.-]*(?:signature|credential|security-token|token|secret|password|passwd|api[_-]?key|"
    r"access[_-]?key|awsaccesskeyid|sig))(=|%3D)[^&\s\"'<>,;]+"
)
# The same credentials as JSON or header fields (`"aws_secret_access_key": "x"`, `X-Amz-Signature: x`); only full
# names here, since `name: value` is also how ordinary prose reads.
_SECRET_FIELD = re.compile(
    r"(?i)\b(x-amz-signature|x-amz-credential|x-amz-security-token|aws_secret_access_key|aws_session_token|"
    r"secret_access_key|accesssecret|password|api[_-]?key)([\"']?\s*:\s*[\"']?)[^\"'\s,;}\]]+"
)
# A header echoed as text or JSON: `Authorization: Bearer x`, `"authorization": "x"`, `"authorization": ["x"]`,
# `X-Api-Key=x`, a CGI-style `HTTP_AUTHORIZATION` (no word boundary before the name, for that one).
_SECRET_HEADER = re.compile(
    r"(?i)((?:proxy-)?authorization|x-api-key|api-key|cookie|set-cookie)([\"']?\s*[:=]\s*\[?\s*[\"']?)"
    r"[^\"'\r\n}\]]+"
)
_SCHEME_TOKEN = re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{6,}")


def register_secret(secret: str | None, min_length: int = _MIN_SECRET_LENGTH) -> None:
    """Remember a credential (an API key, an S3 secret) so that `redact` removes it wherever it appears. Values
    shorter than `min_length` are not registered: they would redact ordinary words; the client's own key passes a
    lower bound, since its key is what must never show."""
    if secret and len(secret) >= min_length:
        _known_secrets.update({secret, quote(secret, safe="")})


def redact(text: str) -> str:
    """`text` without URL passwords, query strings, credential parameters, Authorization values or known secrets."""
    for secret in sorted(_known_secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    text = _USERINFO.sub(r"\1***@", text)
    text = _QUERY.sub(r"\1?***", text)
    text = _SECRET_PARAMETER.sub(r"\1\2***", text)
    text = _SECRET_FIELD.sub(r"\1\2***", text)
    text = _SECRET_HEADER.sub(r"\1\2***", text)
    return _SCHEME_TOKEN.sub(r"\1\2***", text)


class RedactingFilter(logging.Filter):
    """Rewrites a record's final text (message with its arguments, and any traceback) through `redact`."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


logging.getLogger("scribepod").addFilter(RedactingFilter())
