"""Misbehaving servers against stage 0: a total deadline over every download, a job's stop reaching a blocked
download within about a second, and no credential, password or signature in any message or log line.

Real servers on loopback drip a byte a second into the body or the headers, as the server in issue 9 did.
"""

from __future__ import annotations

import base64
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scribepod_worker import sources
from scribepod_worker.config import WorkerSettings
from scribepod_worker.errors import WorkerError
from scribepod_worker.stop import JobStopped, StopSignal

from servers import FileServer, free_port, recording_file_server, tls_for_localhost
from test_ssrf import AUDIO, Resolver, fetch, fetch_error, job_tmp  # noqa: F401 (job_tmp: the fixture used below)

LOCAL = WorkerSettings(allow_private_urls=True, fetch_timeout_s=5.0, fetch_deadline_s=60.0)
DEADLINE_S = 1.5
GRACE_S = 1.0  # how long after the deadline or the stop the job may take to end
pytestmark = pytest.mark.usefixtures("job_tmp")  # no temp files left, no watcher left running, after every case


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FileServer]:
    audio = tmp_path / "a.wav"
    audio.write_bytes(AUDIO)
    with recording_file_server({"a.wav": audio}) as running:
        yield running


def finish_within(limit_s: float, work: Callable[[], Any]) -> tuple[float, BaseException | None]:
    """Run `work` on a thread; fail unless it ends within `limit_s`. Returns its duration and what it raised."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            work()
            outcome.append(None)
        except BaseException as error:  # JobStopped is a BaseException
            outcome.append(error)

    started = time.monotonic()
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(limit_s)
    assert not worker.is_alive(), f"still running after {limit_s} s"
    return time.monotonic() - started, outcome[0]


def s3_source(server: FileServer, route: str) -> dict[str, Any]:
    """The same drips behind a presigned S3 GET: the file server stands in for the job's S3 endpoint."""
    return {
        "audio": f"s3://{route}/a.wav",
        "s3_config": {"accessId": "k", "accessSecret": "s", "endpointUrl": server.base},
    }


def url_source(server: FileServer, route: str) -> dict[str, Any]:
    return {"audio": f"{server.base}/{route}"}


SOURCES = [
    pytest.param(url_source, "drip", id="url-body"),
    pytest.param(url_source, "drip-headers", id="url-headers"),
    pytest.param(url_source, "redirect/drip", id="url-after-a-redirect"),
    pytest.param(s3_source, "drip", id="s3-body"),
    pytest.param(s3_source, "drip-headers", id="s3-headers"),
]


@pytest.mark.parametrize(("source", "route"), SOURCES)
def test_the_total_deadline_ends_a_dripping_download(
    server: FileServer, source: Callable[..., dict[str, Any]], route: str
) -> None:
    """A byte a second never trips the per-read timeout (5 s); the total deadline ends it."""
    settings = WorkerSettings(allow_private_urls=True, fetch_timeout_s=5.0, fetch_deadline_s=DEADLINE_S)
    job = source(server, route)
    elapsed, error = finish_within(
        DEADLINE_S + 5, lambda: fetch(job["audio"], settings, s3_config=job.get("s3_config"))
    )
    assert isinstance(error, WorkerError) and error.code == "audio_fetch_failed", error
    assert "SCRIBEPOD_FETCH_DEADLINE" in error.message
    assert elapsed < DEADLINE_S + GRACE_S
    assert server.drip_ended.wait(GRACE_S), "the server's connection stayed open"


@pytest.mark.parametrize(("source", "route"), SOURCES)
def test_a_stop_ends_a_dripping_download_within_a_second(
    server: FileServer, source: Callable[..., dict[str, Any]], route: str
) -> None:
    stop = StopSignal()
    threading.Timer(0.5, stop.set, args=("cancelled",)).start()
    job = source(server, route)
    elapsed, error = finish_within(10, lambda: fetch(job["audio"], LOCAL, s3_config=job.get("s3_config"), stop=stop))
    assert isinstance(error, JobStopped) and str(error) == "cancelled", error
    assert elapsed < 0.5 + GRACE_S
    assert server.drip_ended.wait(GRACE_S), "the server's connection stayed open"


def test_a_stopped_job_fetches_nothing(server: FileServer) -> None:
    stop = StopSignal()
    stop.set("shutting down")
    with pytest.raises(JobStopped):
        fetch(f"{server.base}/a.wav", LOCAL, stop=stop)
    assert server.requests == []


def test_a_stop_ends_a_hanging_dns_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("socket.getaddrinfo", Resolver({"slow-dns.test": [["127.0.0.1"]]}, delay_s=30))
    stop = StopSignal()
    threading.Timer(0.3, stop.set, args=("timed out",)).start()
    elapsed, error = finish_within(10, lambda: fetch("http://slow-dns.test/a.wav", LOCAL, stop=stop))
    assert isinstance(error, JobStopped), error
    assert elapsed < 0.3 + GRACE_S


def test_the_deadline_ends_a_hanging_dns_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("socket.getaddrinfo", Resolver({"slow-dns.test": [["127.0.0.1"]]}, delay_s=30))
    settings = WorkerSettings(allow_private_urls=True, fetch_deadline_s=1.0)
    elapsed, error = finish_within(10, lambda: fetch("http://slow-dns.test/a.wav", settings))
    assert isinstance(error, WorkerError) and "SCRIBEPOD_FETCH_DEADLINE" in error.message, error
    assert elapsed < 1.0 + GRACE_S


def test_a_fast_download_is_whole(server: FileServer) -> None:
    stop = StopSignal()
    assert fetch(f"{server.base}/a.wav", LOCAL, stop=stop) == AUDIO


def test_s3_signed_for_the_wrong_region_is_signed_again_for_the_buckets(server: FileServer) -> None:
    """S3 answers 400 naming the bucket's region (as boto3's redirector expects); the second GET is signed for it."""
    config = {"accessId": "k", "accessSecret": "s", "endpointUrl": server.base}
    assert fetch("s3://regional/a.wav", LOCAL, s3_config=config) == AUDIO
    assert [path.partition("?")[0] for path in server.requests] == ["/regional/a.wav", "/regional/a.wav"]
    assert "%2Feu-west-1%2F" in server.requests[1]


def test_url_credentials_go_only_to_their_own_origin(server: FileServer, tmp_path: Path) -> None:
    with recording_file_server({"a.wav": tmp_path / "a.wav"}, host="127.0.0.2") as elsewhere:
        url = f"http://reader:hunter2@{server.base.removeprefix('http://')}/bounce?to={elsewhere.base}/a.wav"
        assert fetch(url, LOCAL) == AUDIO
    assert server.headers[0]["Authorization"] == "Basic " + base64.b64encode(b"reader:hunter2").decode()
    assert "Authorization" not in elsewhere.headers[0]


@pytest.fixture
def tls_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FileServer]:
    """A file server over TLS whose certificate names `localhost` only, trusted by stage 0 for this test."""
    ca_file, context = tls_for_localhost(tmp_path)
    monkeypatch.setattr(sources, "_tls_context", lambda: ssl.create_default_context(cafile=str(ca_file)))
    audio = tmp_path / "a.wav"
    audio.write_bytes(AUDIO)
    with recording_file_server({"a.wav": audio}, tls=context) as running:
        yield running


def test_tls_is_checked_against_the_name_not_the_pinned_address(tls_server: FileServer) -> None:
    """The connection goes to the checked address; the certificate is still checked against the URL's host name."""
    port = tls_server.base.rsplit(":", 1)[1]
    assert fetch(f"https://localhost:{port}/a.wav", LOCAL) == AUDIO
    error = fetch_error(f"https://127.0.0.1:{port}/a.wav", LOCAL)
    assert error.code == "audio_fetch_failed" and "certificate verify failed" in error.message


def test_a_stop_ends_a_dripping_tls_download_within_a_second(tls_server: FileServer) -> None:
    stop = StopSignal()
    threading.Timer(0.5, stop.set, args=("cancelled",)).start()
    port = tls_server.base.rsplit(":", 1)[1]
    elapsed, error = finish_within(10, lambda: fetch(f"https://localhost:{port}/drip", LOCAL, stop=stop))
    assert isinstance(error, JobStopped), error
    assert elapsed < 0.5 + GRACE_S
    assert tls_server.drip_ended.wait(GRACE_S), "the server's connection stayed open"


PASSWORD, SIGNATURE, TOKEN, SECRET = "hunter2-pw", "sig0123456789abcdef", "tok-42", "s3cr3t-access-key"


def secret_url(host: str, path: str) -> str:
    return f"http://reader:{PASSWORD}@{host}/{path}?X-Amz-Signature={SIGNATURE}&token={TOKEN}"


def failures(server: FileServer) -> list[tuple[str, WorkerSettings, dict[str, Any] | None]]:
    """(audio, settings, s3Config) for every way a download with secrets in it can fail."""
    here = server.base.removeprefix("http://")
    s3 = {"accessId": "AKIDEXAMPLE", "accessSecret": SECRET, "endpointUrl": server.base}
    return [
        (secret_url(here, "missing.wav"), LOCAL, None),
        (secret_url(here, "a.wav"), WorkerSettings(allow_private_urls=False), None),
        (secret_url("no-such-host.invalid", "a.wav"), LOCAL, None),
        (secret_url(f"127.0.0.1:{free_port()}", "a.wav"), LOCAL, None),
        (secret_url(here, "huge"), LOCAL, None),
        (secret_url(here, "slow"), WorkerSettings(allow_private_urls=True, fetch_timeout_s=1.0), None),
        (secret_url(here, "drip"), WorkerSettings(allow_private_urls=True, fetch_deadline_s=1.0), None),
        (secret_url(here, "echo"), LOCAL, None),
        (secret_url(here, "echo-reason"), LOCAL, None),
        (secret_url(here, f"bounce?to=file:///etc/passwd%3Ftoken%3D{TOKEN}"), LOCAL, None),
        (secret_url(here, "bounce?to=http://[::1"), LOCAL, None),
        ("s3://meetings/missing.wav", LOCAL, s3),
        ("s3://drip/a.wav", WorkerSettings(allow_private_urls=True, fetch_deadline_s=1.0), s3),
        ("s3://meetings/a.wav", WorkerSettings(allow_private_urls=False), s3),
        ("s3://meetings/a.wav", LOCAL, {**s3, "endpointUrl": f"http://user:{PASSWORD}@[::1/?{TOKEN}"}),
    ]


def test_no_message_or_log_line_holds_a_password_signature_or_key(
    server: FileServer, caplog: pytest.LogCaptureFixture
) -> None:
    """At INFO, the worker's level: httpx's request lines printed these (the HTTP clients' DEBUG lines are kept to
    WARNING and redacted by `logs.configure_logging`)."""
    caplog.set_level(logging.INFO)
    leaks = []
    for audio, settings, s3_config in failures(server):
        error = fetch_error(audio, settings, s3_config=s3_config)
        shown = f"{error} {error!r} {error.to_json()}"
        leaks += [(audio, shown) for secret in (PASSWORD, SIGNATURE, TOKEN, SECRET, "X-Amz") if secret in shown]
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert leaks == []
    assert not [secret for secret in (PASSWORD, SIGNATURE, TOKEN, SECRET, "X-Amz-Signature") if secret in logged]
