"""Stage 0: turn the request's audio source into a local file, with size caps, timeouts and guaranteed cleanup.

Sources: inline base64, http(s) URLs (streamed, capped, private addresses refused), `s3://bucket/key` (boto3), and
local paths where the operator allows them. Every temporary file lives in one directory that is removed on exit,
whether the job succeeds or fails.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import shutil
import socket
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from scribepod_worker.config import WorkerSettings
from scribepod_worker.errors import WorkerError

_MAX_REDIRECTS = 5
_CHUNK_BYTES = 1024 * 1024


@contextmanager
def materialize(
    *,
    audio: str | None,
    audio_base64: str | None,
    settings: WorkerSettings,
    s3_config: Mapping[str, Any] | None = None,
) -> Iterator[Path]:
    """Yield a readable local file holding the job's audio; temporary copies are deleted afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="scribepod-"))
    try:
        if audio_base64 is not None:
            yield _write_base64(audio_base64, workdir / "audio", settings)
        elif audio is not None:
            yield _fetch(audio, workdir / "audio", settings, s3_config)
        else:
            raise WorkerError("invalid_input", "give exactly one of `audio` and `audio_base64`", "audio")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _write_base64(data: str, target: Path, settings: WorkerSettings) -> Path:
    if data.startswith("data:"):
        _, _, data = data.partition(",")
    data = "".join(data.split())
    if len(data) * 3 // 4 > settings.max_base64_bytes:
        raise WorkerError(
            "invalid_input",
            f"audio_base64 holds about {len(data) * 3 // 4} bytes; this worker accepts at most "
            f"{settings.max_base64_bytes} inline (send a URL or s3:// URI instead)",
            "audio_base64",
        )
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        try:
            raw = base64.urlsafe_b64decode(data)
        except (binascii.Error, ValueError) as error:
            raise WorkerError("invalid_input", f"audio_base64 is not valid base64: {error}", "audio_base64") from None
    if not raw:
        raise WorkerError("audio_decode_failed", "audio_base64 decodes to an empty file", "audio_base64")
    target.write_bytes(raw)
    return target


def _fetch(source: str, target: Path, settings: WorkerSettings, s3_config: Mapping[str, Any] | None) -> Path:
    scheme = urlsplit(source).scheme.lower()
    if scheme in ("http", "https"):
        _download_http(source, target, settings)
        return target
    if scheme == "s3":
        _download_s3(source, target, settings, s3_config)
        return target
    if scheme and len(scheme) > 1:  # "c:" is a Windows drive, not a scheme
        raise WorkerError("invalid_input", f"audio: unsupported URL scheme {scheme!r} (use https, http or s3)", "audio")
    if not settings.allow_local_files:
        raise WorkerError(
            "invalid_input",
            "audio must be an http(s) URL or an s3:// URI; local file paths are disabled on this worker",
            "audio",
        )
    path = Path(source).expanduser()
    if not path.is_file():
        raise WorkerError("audio_fetch_failed", f"audio: no such file: {source}", "audio")
    return path


def _check_address(url: str, settings: WorkerSettings, field: str = "audio") -> None:
    """Refuse hosts that resolve to private, loopback, link-local or otherwise internal addresses (SSRF)."""
    host = urlsplit(url).hostname
    if not host:
        raise WorkerError("invalid_input", f"{field}: URL has no host: {url}", field)
    if settings.allow_private_urls:
        return
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as error:
        raise WorkerError(
            "audio_fetch_failed", f"{field}: cannot resolve host {host!r}: {error.strerror}", field
        ) from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global or address.is_multicast:
            raise WorkerError(
                "audio_fetch_failed",
                f"{field}: host {host!r} resolves to a non-public address ({address}); refused "
                "(set SCRIBEPOD_ALLOW_PRIVATE_URLS=1 to allow it)",
                field,
            )


def _download_http(url: str, target: Path, settings: WorkerSettings) -> None:
    timeout = httpx.Timeout(settings.fetch_timeout_s, connect=min(10.0, settings.fetch_timeout_s))
    cap = settings.max_download_bytes
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            for _ in range(_MAX_REDIRECTS + 1):
                _check_address(url, settings)
                with client.stream("GET", url) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    if response.status_code != 200:
                        raise WorkerError(
                            "audio_fetch_failed",
                            f"audio: GET returned HTTP {response.status_code} {response.reason_phrase}",
                            "audio",
                        )
                    declared = response.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > cap:
                        raise WorkerError(
                            "audio_fetch_failed", f"audio: {declared} bytes is over this worker's cap of {cap}", "audio"
                        )
                    received = 0
                    with target.open("wb") as out:
                        for chunk in response.iter_bytes(_CHUNK_BYTES):
                            received += len(chunk)
                            if received > cap:
                                raise WorkerError(
                                    "audio_fetch_failed",
                                    f"audio: download passed this worker's cap of {cap} bytes",
                                    "audio",
                                )
                            out.write(chunk)
                    return
            raise WorkerError("audio_fetch_failed", f"audio: more than {_MAX_REDIRECTS} redirects", "audio")
    except httpx.TimeoutException:
        raise WorkerError(
            "audio_fetch_failed", f"audio: download timed out (limit {settings.fetch_timeout_s:g} s)", "audio"
        ) from None
    except httpx.HTTPError as error:
        raise WorkerError("audio_fetch_failed", f"audio: download failed: {error}", "audio") from None


def _download_s3(uri: str, target: Path, settings: WorkerSettings, s3_config: Mapping[str, Any] | None) -> None:
    """Credentials come from the job's `s3Config` (RunPod's accessId/accessSecret/endpointUrl) or boto3's defaults;
    a job's own endpointUrl must be public, like any URL a job sends."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    parts = urlsplit(uri)
    bucket, key = parts.netloc, parts.path.lstrip("/")
    if not bucket or not key:
        raise WorkerError("invalid_input", f"audio: expected s3://bucket/key, got {uri!r}", "audio")
    config = dict(s3_config or {})
    if config.get("endpointUrl"):
        # The job chose this endpoint, so it is checked like any URL a job sends (the operator's is trusted).
        _check_address(str(config["endpointUrl"]), settings, "s3Config.endpointUrl")
    client = boto3.client(
        "s3",
        aws_access_key_id=config.get("accessId") or None,
        aws_secret_access_key=config.get("accessSecret") or None,
        endpoint_url=config.get("endpointUrl") or settings.s3_endpoint_url,
        region_name=config.get("region") or None,
        config=Config(
            connect_timeout=min(10.0, settings.fetch_timeout_s),
            read_timeout=settings.fetch_timeout_s,
            retries={"max_attempts": 3, "mode": "standard"},
        ),
    )
    try:
        size = client.head_object(Bucket=bucket, Key=key)["ContentLength"]
        if size > settings.max_download_bytes:
            raise WorkerError(
                "audio_fetch_failed",
                f"audio: s3 object is {size} bytes, over this worker's cap of {settings.max_download_bytes}",
                "audio",
            )
        client.download_file(bucket, key, str(target))
    except ClientError as error:
        status = error.response.get("Error", {}).get("Code", "")
        reason = {
            "404": "not found",
            "NoSuchKey": "not found",
            "NoSuchBucket": "bucket not found",
            "403": "access denied",
        }
        raise WorkerError(
            "audio_fetch_failed",
            f"audio: s3 object {uri} {reason.get(status, f'could not be read ({status})')}",
            "audio",
        ) from None
    except BotoCoreError as error:
        raise WorkerError("audio_fetch_failed", f"audio: s3 download failed: {error}", "audio") from None
