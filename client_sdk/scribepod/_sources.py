"""Turning what the caller has (a path, bytes, a file object, a URL, an s3:// URI) into the request's audio field.

Small inputs travel inline as `audio_base64`. An input whose request would pass the endpoint's payload limit is first
compressed to 16 kHz mono Opus where ffmpeg is installed (a 15-minute WAV of 28.8 MB becomes about 2.7 MB); if it
still does not fit, it is uploaded to S3 and sent as a presigned URL, or refused before any request when no bucket
is configured.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Union

from scribepod.errors import InvalidInput, PayloadTooLarge

Source = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes]]
"""A local path, raw bytes, a binary file object, an http(s) URL or an s3:// URI."""

log = logging.getLogger("scribepod")

_REMOTE_PREFIXES = ("http://", "https://", "s3://")
_COMPRESS_TIMEOUT_S = 600


@dataclass(frozen=True)
class S3Settings:
    """Where large inputs are uploaded (credentials: the arguments or boto3's usual environment)."""

    bucket: str
    prefix: str = "scribepod-uploads/"
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    url_expires_s: int = 3600
    delete_after: bool = True

    @classmethod
    def from_env(cls) -> S3Settings | None:
        bucket = os.environ.get("SCRIBEPOD_S3_BUCKET")
        if not bucket:
            return None
        return cls(
            bucket=bucket,
            prefix=os.environ.get("SCRIBEPOD_S3_PREFIX", "scribepod-uploads/"),
            endpoint_url=os.environ.get("SCRIBEPOD_S3_ENDPOINT_URL") or None,
        )


@dataclass(frozen=True)
class Upload:
    """An object this SDK put in S3 for one job (deleted afterwards unless configured otherwise)."""

    bucket: str
    key: str


@dataclass(frozen=True)
class PreparedAudio:
    fields: dict[str, str]
    name: str
    upload: Upload | None = None


def describe(source: Source) -> str:
    """A short human name for a source (CLI lines, log messages, output file names)."""
    if isinstance(source, str | os.PathLike):
        text = os.fspath(source)
        return text.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0] or text
    name = getattr(source, "name", None)
    return Path(name).name if isinstance(name, str) else "audio"


def is_remote(source: Source) -> bool:
    return isinstance(source, str) and source.lower().startswith(_REMOTE_PREFIXES)


def read_bytes(source: Source) -> bytes:
    """The bytes of a local source; a clear InvalidInput (before any request) when it cannot be read."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    elif isinstance(source, str | os.PathLike):
        path = Path(source).expanduser()
        if not path.is_file():
            raise InvalidInput(f"no such file: {path}")
        data = path.read_bytes()
    elif hasattr(source, "read"):
        data = source.read()
        if not isinstance(data, bytes):
            raise InvalidInput("file objects must be opened in binary mode ('rb')")
    else:
        raise InvalidInput(f"unsupported audio source of type {type(source).__name__}")
    if not data:
        raise InvalidInput(f"{describe(source)} is empty")
    return data


def prepare(
    source: Source, *, options_size: int, limit: int, s3: S3Settings | None, keep_channels: bool = False
) -> PreparedAudio:
    """The audio field for `source`, uploading to S3 when inline base64 would pass `limit` bytes of request."""
    name = describe(source)
    if is_remote(source):
        assert isinstance(source, str)
        return PreparedAudio({"audio": source}, name)
    data = read_bytes(source)
    inline_size = _inline_size(data, options_size)
    if inline_size > limit:
        # Over the limit: 16 kHz mono Opus, what the worker decodes to anyway, is 10 to 20 times smaller than WAV.
        compressed = compress_for_upload(data, name, keep_channels=keep_channels)
        if compressed is not None and len(compressed) < len(data):
            data, inline_size = compressed, _inline_size(compressed, options_size)
    if inline_size <= limit:
        return PreparedAudio({"audio_base64": base64.b64encode(data).decode("ascii")}, name)
    if s3 is None:
        raise PayloadTooLarge(
            f"{name} is {len(data)} bytes; inline it would make a {inline_size}-byte request, over the endpoint's "
            f"{limit}-byte limit. Configure an S3 bucket (s3_bucket=... or SCRIBEPOD_S3_BUCKET) to upload it, or "
            "pass a URL"
        )
    url, upload = _upload(data, name, s3)
    return PreparedAudio({"audio": url}, name, upload)


def _inline_size(data: bytes, options_size: int) -> int:
    return 4 * ((len(data) + 2) // 3) + options_size + 64


def compress_for_upload(data: bytes, name: str, *, keep_channels: bool = False) -> bytes | None:
    """`data` as 16 kHz mono Opus at 24 kbit/s (speech stays intact for Whisper), with the ffmpeg on PATH; None
    where there is no ffmpeg or it cannot read the input (the caller then sends the original or uploads it).
    `keep_channels` (a `multichannel` job: each channel is a speaker) keeps them, at 48 kbit/s in all."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return None
    with tempfile.TemporaryDirectory(prefix="scribepod-sdk-") as folder:
        source, target = Path(folder) / "input", Path(folder) / "audio.ogg"
        source.write_bytes(data)
        command = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(source), "-vn", "-map", "0:a:0"]
        command += [] if keep_channels else ["-ac", "1"]
        command += ["-ar", "16000", "-c:a", "libopus", "-b:a", "48k" if keep_channels else "24k"]
        command += ["-application", "voip", str(target)]
        try:
            subprocess.run(command, check=True, capture_output=True, timeout=_COMPRESS_TIMEOUT_S)
        except (OSError, subprocess.SubprocessError):
            log.info("could not compress %s with ffmpeg; sending it as it is", name)
            return None
        compressed = target.read_bytes()
    log.info("compressed %s to 16 kHz mono Opus: %d -> %d bytes", name, len(data), len(compressed))
    return compressed


def _s3_client(s3: S3Settings) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3.endpoint_url,
        region_name=s3.region,
        aws_access_key_id=s3.access_key_id,
        aws_secret_access_key=s3.secret_access_key,
    )


def _upload(data: bytes, name: str, s3: S3Settings) -> tuple[str, Upload]:
    from botocore.exceptions import BotoCoreError, ClientError

    key = f"{s3.prefix}{uuid.uuid4().hex}/{name}"
    client = _s3_client(s3)
    try:
        client.put_object(Bucket=s3.bucket, Key=key, Body=data)
        url = client.generate_presigned_url(
            "get_object", Params={"Bucket": s3.bucket, "Key": key}, ExpiresIn=s3.url_expires_s
        )
    except (BotoCoreError, ClientError) as error:
        raise InvalidInput(f"could not upload {name} to s3://{s3.bucket}/{key}: {error}") from None
    return str(url), Upload(s3.bucket, key)


def delete_upload(upload: Upload, s3: S3Settings) -> None:
    """Remove an uploaded input once its job has ended; a failure here must not fail the job."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        _s3_client(s3).delete_object(Bucket=upload.bucket, Key=upload.key)
    except (BotoCoreError, ClientError) as error:
        log.warning("could not delete uploaded input s3://%s/%s: %s", upload.bucket, upload.key, error)
