"""Audio sources through the handler: URLs from a real local HTTP server, S3 from moto's server, their failures."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from scribepod_worker import handler
from scribepod_worker.engine import Engine
from scribepod_worker.stop import JobStopped, StopSignal

from conftest import with_settings
from servers import FileServer, moto_s3_server, recording_file_server
from test_handler import failed, ok

CREDENTIALS = {"accessId": "test-key", "accessSecret": "test-secret"}


@pytest.fixture(scope="module")
def http_server(media: dict[str, Path], sample_dir: Path) -> Iterator[FileServer]:
    with recording_file_server(
        {"sample.wav": sample_dir / "sample.wav", "video.mp4": media["mp4"], "empty.wav": media["empty"]}
    ) as server:
        yield server


@pytest.fixture(scope="module")
def http_base(http_server: FileServer) -> str:
    return http_server.base


@pytest.fixture(scope="module")
def s3(sample_dir: Path) -> Iterator[str]:
    with moto_s3_server() as endpoint:
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="test-key",
            aws_secret_access_key="test-secret",
            region_name="us-east-1",
        )
        client.create_bucket(Bucket="meetings")
        client.upload_file(str(sample_dir / "sample.wav"), "meetings", "2026/standup.wav")
        yield endpoint


def test_url(worker: Engine, http_base: str) -> None:
    transcript = ok({"audio": f"{http_base}/video.mp4"})
    assert len(transcript.speakers) >= 1 and "new jersey" in transcript.text.lower()


def test_url_redirect_is_followed(worker: Engine, http_base: str) -> None:
    assert ok({"audio": f"{http_base}/redirect/sample.wav", "diarize": False}).text


def test_url_404(worker: Engine, http_base: str) -> None:
    error = failed({"audio": f"{http_base}/missing.wav"})
    assert (error.code, error.field) == ("audio_fetch_failed", "audio") and "404" in error.message


def test_url_empty_file(worker: Engine, http_base: str) -> None:
    assert failed({"audio": f"{http_base}/empty.wav"}).code == "audio_decode_failed"


def test_url_over_the_size_cap(worker: Engine, http_base: str) -> None:
    error = failed({"audio": f"{http_base}/huge"})
    assert error.code == "audio_fetch_failed" and "cap" in error.message


def test_url_download_cap_while_streaming(worker: Engine, http_base: str) -> None:
    with_settings(worker, max_download_bytes=100_000)  # the sample is 960 kB and declares it
    assert "cap" in failed({"audio": f"{http_base}/sample.wav"}).message


def test_url_stall_times_out(worker: Engine, http_base: str) -> None:
    with_settings(worker, fetch_timeout_s=1.0)
    error = failed({"audio": f"{http_base}/slow"})
    assert error.code == "audio_fetch_failed" and "timed out" in error.message


def test_url_download_deadline(worker: Engine, http_base: str) -> None:
    """A byte a second never trips the per-read timeout; the total deadline fails the job (issue 9)."""
    with_settings(worker, fetch_timeout_s=5.0, fetch_deadline_s=1.0)
    error = failed({"audio": f"{http_base}/drip"})
    assert error.code == "audio_fetch_failed" and "SCRIBEPOD_FETCH_DEADLINE" in error.message


def test_a_stopped_job_ends_its_download_within_a_second(worker: Engine, http_server: FileServer) -> None:
    """The job's stop signal reaches a download blocked on a dripping server, through the handler and the engine."""
    stop = StopSignal()
    http_server.drip_ended.clear()
    threading.Timer(0.5, stop.set, args=("cancelled",)).start()
    started = time.monotonic()
    with pytest.raises(JobStopped):
        handler.handle({"id": "test", "input": {"audio": f"{http_server.base}/drip"}}, stop=stop)
    assert time.monotonic() - started < 1.5
    assert http_server.drip_ended.wait(1.0)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:9/a.wav", "http://169.254.169.254/latest/meta-data", "http://[::1]/a.wav", "http://10.0.0.8/a"],
)
def test_private_addresses_refused(worker: Engine, url: str) -> None:
    with_settings(worker, allow_private_urls=False)
    error = failed({"audio": url})
    assert (error.code, error.field) == ("audio_fetch_failed", "audio") and "non-public address" in error.message


def test_unresolvable_host(worker: Engine) -> None:
    with_settings(worker, allow_private_urls=False)
    error = failed({"audio": "https://no-such-host.invalid/a.wav"})
    assert error.code == "audio_fetch_failed" and "cannot resolve" in error.message


def test_s3_with_job_credentials(worker: Engine, s3: str) -> None:
    transcript = ok({"audio": "s3://meetings/2026/standup.wav"}, s3Config={**CREDENTIALS, "endpointUrl": s3})
    assert len(transcript.speakers) >= 1 and "chicago" in transcript.text.lower()


def test_s3_with_environment_credentials(worker: Engine, s3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    # The operator's endpoint (SCRIBEPOD_S3_ENDPOINT_URL) is trusted even where jobs may not reach private hosts.
    with_settings(worker, s3_endpoint_url=s3, allow_private_urls=False)
    assert ok({"audio": "s3://meetings/2026/standup.wav", "diarize": False}).text


def test_s3_missing_key(worker: Engine, s3: str) -> None:
    error = failed({"audio": "s3://meetings/2026/nope.wav"}, s3Config={**CREDENTIALS, "endpointUrl": s3})
    assert (error.code, error.field) == ("audio_fetch_failed", "audio") and "not found" in error.message


def test_s3_object_over_the_cap(worker: Engine, s3: str) -> None:
    with_settings(worker, max_download_bytes=1000)
    error = failed({"audio": "s3://meetings/2026/standup.wav"}, s3Config={**CREDENTIALS, "endpointUrl": s3})
    assert error.code == "audio_fetch_failed" and "cap" in error.message


def test_s3_uri_without_key(worker: Engine) -> None:
    error = failed({"audio": "s3://meetings"})
    assert (error.code, error.field) == ("invalid_input", "audio")


def test_s3_endpoint_chosen_by_the_job_must_be_public(worker: Engine, s3: str) -> None:
    """A job's s3Config.endpointUrl is a URL the job sends: it must not reach the worker's own network."""
    with_settings(worker, allow_private_urls=False)
    error = failed({"audio": "s3://meetings/2026/standup.wav"}, s3Config={**CREDENTIALS, "endpointUrl": s3})
    assert (error.code, error.field) == ("audio_fetch_failed", "s3Config.endpointUrl")
    assert "non-public address" in error.message
