"""SSRF through a job's URLs: DNS rebinding, odd spellings of internal addresses, redirect hops, the job's own S3
endpoint, and probing the worker's files through local paths.

Stage 0 runs alone (`sources.materialize`), against real servers on loopback and moto's real S3 server. A stand-in
for `socket.getaddrinfo` answers chosen names differently on each call, as a rebinding DNS server does.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import boto3
import pytest

from scribepod_worker import sources
from scribepod_worker.config import WorkerSettings
from scribepod_worker.errors import WorkerError
from scribepod_worker.stop import StopSignal

from servers import FileServer, moto_s3_server, recording_file_server, recording_proxy

AUDIO = b"RIFF this stands in for audio; stage 0 does not decode it"
SETTINGS = WorkerSettings(allow_private_urls=False, fetch_timeout_s=2.0, fetch_deadline_s=10.0)
# A public address for a rebinding name's "harmless" answer. Nothing of ours listens there: whatever happens there
# (refused, no route, another host's answer), the loopback server must see nothing.
PUBLIC = "1.1.1.1"
CREDENTIALS = {"accessId": "test-key", "accessSecret": "test-secret"}


class Resolver:
    """Stands in for `socket.getaddrinfo`: a name in `answers` gets its next list of addresses on each call (the
    last list repeats), after `delay_s`; every other name goes to the real resolver."""

    def __init__(self, answers: dict[str, Sequence[Sequence[str]]], delay_s: float = 0.0) -> None:
        self.real = socket.getaddrinfo
        self.answers = answers
        self.delay_s = delay_s
        self.calls: dict[str, int] = {}

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        name = host.decode() if isinstance(host, bytes) else host
        if name not in self.answers:
            return self.real(host, port, *args, **kwargs)
        count = self.calls.get(name, 0)
        self.calls[name] = count + 1
        time.sleep(self.delay_s)
        addresses = self.answers[name][min(count, len(self.answers[name]) - 1)]
        return [info for address in addresses for info in self.real(address, port, *args, **kwargs)]


def install_resolver(monkeypatch: pytest.MonkeyPatch, answers: dict[str, Sequence[Sequence[str]]]) -> Resolver:
    resolver = Resolver(answers)
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    return resolver


@pytest.fixture
def job_tmp(job_tmp: Path) -> Iterator[Path]:
    """conftest's private temp dir (empty after each case), and no download watcher may still run."""
    yield job_tmp
    assert not [thread for thread in threading.enumerate() if thread.name == "scribepod-download-watch"]


@pytest.fixture
def audio_file(tmp_path: Path) -> Path:
    path = tmp_path / "a.wav"
    path.write_bytes(AUDIO)
    return path


@pytest.fixture
def loopback(audio_file: Path) -> Iterator[FileServer]:
    """The internal server a job must not reach: it records every request."""
    with recording_file_server({"a.wav": audio_file}) as server:
        yield server


def fetch(
    audio: str,
    settings: WorkerSettings = SETTINGS,
    *,
    s3_config: dict[str, Any] | None = None,
    stop: StopSignal | None = None,
) -> bytes:
    """Stage 0 alone: the bytes it would hand to the decoder."""
    limits = {"stop": stop} if stop else {}  # without it, this also runs against the old stage 0 (to see it fail)
    with sources.materialize(audio=audio, audio_base64=None, settings=settings, s3_config=s3_config, **limits) as path:
        return path.read_bytes()


def fetch_error(audio: str, settings: WorkerSettings = SETTINGS, **kwargs: Any) -> WorkerError:
    with pytest.raises(WorkerError) as raised:
        fetch(audio, settings, **kwargs)
    return raised.value


def port_of(server: FileServer) -> int:
    return int(server.base.rsplit(":", 1)[1])


def test_a_name_that_rebinds_to_loopback_after_the_check(
    job_tmp: Path, loopback: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Public to the first lookup, 127.0.0.1 to every later one: the worker connects where it checked, or nowhere."""
    resolver = install_resolver(monkeypatch, {"rebind.test": [[PUBLIC], ["127.0.0.1"]]})
    error = fetch_error(f"http://rebind.test:{port_of(loopback)}/a.wav")
    assert error.code == "audio_fetch_failed"
    assert loopback.requests == []
    assert resolver.calls == {"rebind.test": 1}, "one lookup per connection"


def test_a_name_that_answers_loopback_first(
    job_tmp: Path, loopback: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_resolver(monkeypatch, {"rebind.test": [["127.0.0.1"], [PUBLIC]]})
    error = fetch_error(f"http://rebind.test:{port_of(loopback)}/a.wav")
    assert (error.code, error.field) == ("audio_fetch_failed", "audio") and "non-public address" in error.message
    assert loopback.requests == []


def test_every_address_of_an_answer_is_checked(
    job_tmp: Path, loopback: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_resolver(monkeypatch, {"mixed.test": [[PUBLIC, "127.0.0.1"]]})
    assert "non-public address" in fetch_error(f"http://mixed.test:{port_of(loopback)}/a.wav").message
    assert loopback.requests == []


INTERNAL_HOSTS = [
    "127.0.0.1",
    "2130706433",  # 127.0.0.1 in decimal
    "0x7f.1",
    "127.1",
    "0",
    "localhost",
    "LOCALHOST",
    "[::1]",
    "[::]",
    "[::127.0.0.1]",  # IPv4-compatible
    "[::ffff:127.0.0.1]",  # IPv4-mapped
    "[::ffff:7f00:1]",
    "[64:ff9b::7f00:1]",  # NAT64 well-known prefix
    "[64:ff9b::a9fe:a9fe]",  # NAT64 of 169.254.169.254
    "[64:ff9b:1::a00:1]",  # NAT64 local-use prefix
    "[2002:7f00:1::]",  # 6to4 of 127.0.0.1
    "[2001:0:4136:e378:8000:63bf:80ff:fffe]",  # Teredo whose client is 127.0.0.1
    "169.254.169.254",
    "[::ffff:169.254.169.254]",
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "100.64.0.1",  # carrier-grade NAT
    "[fc00::1]",
    "[fe80::1]",
    "224.0.0.1",
    "255.255.255.255",
]


@pytest.mark.parametrize("host", INTERNAL_HOSTS)
def test_internal_addresses_in_every_spelling_are_refused(job_tmp: Path, loopback: FileServer, host: str) -> None:
    error = fetch_error(f"http://{host}:{port_of(loopback)}/a.wav")
    assert (error.code, error.field) == ("audio_fetch_failed", "audio") and "non-public address" in error.message
    assert loopback.requests == []


def test_an_octal_address_is_not_a_url(job_tmp: Path, loopback: FileServer) -> None:
    """0177.0.0.1 is 127.0.0.1 to inet_aton; the URL parser refuses it before any lookup."""
    error = fetch_error(f"http://0177.0.0.1:{port_of(loopback)}/a.wav")
    assert (error.code, error.field) == ("invalid_input", "audio") and "0177" not in error.message
    assert loopback.requests == []


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700::1111", True),
        ("::ffff:8.8.8.8", True),  # IPv4-mapped: the IPv4 decides
        ("64:ff9b::808:808", True),  # DNS64 on an IPv6-only network: the IPv4 decides
        ("64:ff9b::a00:1", False),
        ("::8.8.8.8", False),  # IPv4-compatible: deprecated, refused outright
        ("2002:808:808::", False),  # 6to4: deprecated, refused outright
        ("2001::1", False),  # Teredo
        ("192.0.2.1", False),  # documentation
        ("198.18.0.1", False),  # benchmarking
        ("240.0.0.1", False),  # reserved
        ("192.0.0.192", False),  # IETF protocol assignments (Python 3.11 counts them global)
        ("fec0::1", False),  # site-local, deprecated (likewise)
        ("feff::1", False),
        ("3fff::1", False),  # documentation, RFC 9637
    ],
)
def test_is_public_address(address: str, public: bool) -> None:
    assert sources.is_public_address(ipaddress.ip_address(address)) is public


@pytest.fixture
def public_front(audio_file: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FileServer]:
    """A server that passes for public: on 127.0.0.2, which this test's check treats as a public address, so that
    its redirects show how each later hop is checked."""
    check = sources.is_public_address
    monkeypatch.setattr(
        sources, "is_public_address", lambda address: address == ipaddress.ip_address("127.0.0.2") or check(address)
    )
    with recording_file_server({"a.wav": audio_file}, host="127.0.0.2") as server:
        yield server


def test_a_redirect_to_a_public_host_is_followed(job_tmp: Path, public_front: FileServer) -> None:
    """The setup works: a hop to an allowed host is fetched."""
    assert fetch(f"{public_front.base}/bounce?to={public_front.base}/a.wav") == AUDIO


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{port}/a.wav",
        "http://[::ffff:127.0.0.1]:{port}/a.wav",
        "http://2130706433:{port}/a.wav",
        "http://rebind.test:{port}/a.wav",
        "http://169.254.169.254/latest/meta-data/",
    ],
)
def test_every_redirect_hop_is_checked(
    job_tmp: Path, public_front: FileServer, loopback: FileServer, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    install_resolver(monkeypatch, {"rebind.test": [["127.0.0.1"]]})
    error = fetch_error(f"{public_front.base}/bounce?to={target.format(port=port_of(loopback))}")
    assert error.code == "audio_fetch_failed" and "non-public address" in error.message
    assert loopback.requests == []


@pytest.mark.parametrize("target", ["file:///etc/passwd", "gopher://127.0.0.1:70/_x", "ftp://example.com/a.wav"])
def test_redirects_to_other_schemes_are_refused(job_tmp: Path, public_front: FileServer, target: str) -> None:
    error = fetch_error(f"{public_front.base}/bounce?to={target}")
    assert error.code == "audio_fetch_failed" and "non-http(s)" in error.message


@pytest.fixture(scope="module")
def s3_behind_recorder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[tuple[str, str]], int]]:
    """moto's S3 server holding s3://bkt/five.opus, reached only through a proxy (on the port given) that records
    every request."""
    audio = tmp_path_factory.mktemp("s3") / "five.opus"
    audio.write_bytes(AUDIO)
    with moto_s3_server() as endpoint:
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=CREDENTIALS["accessId"],
            aws_secret_access_key=CREDENTIALS["accessSecret"],
        )
        client.create_bucket(Bucket="bkt")
        client.upload_file(str(audio), "bkt", "five.opus")
        with recording_proxy(endpoint) as (base, received):
            yield received, int(base.rsplit(":", 1)[1])


def test_the_s3_setup_serves_the_object(job_tmp: Path, s3_behind_recorder: tuple[list[tuple[str, str]], int]) -> None:
    """With private addresses allowed, the job's endpoint reaches moto through the recorder."""
    recorder, port = s3_behind_recorder
    recorder.clear()
    settings = WorkerSettings(allow_private_urls=True, fetch_timeout_s=2.0)
    config = {**CREDENTIALS, "endpointUrl": f"http://127.0.0.1:{port}"}
    assert fetch("s3://bkt/five.opus", settings, s3_config=config) == AUDIO
    assert [(method, path.partition("?")[0]) for method, path in recorder] == [("GET", "/bkt/five.opus")]


@pytest.mark.parametrize(
    ("endpoint_host", "answers"),
    [
        ("rebind.test", [[PUBLIC], ["127.0.0.1"]]),
        ("rebind.test", [["127.0.0.1"], [PUBLIC]]),
        ("[::ffff:127.0.0.1]", []),
        ("[::127.0.0.1]", []),
        ("2130706433", []),
    ],
)
def test_a_jobs_s3_endpoint_cannot_reach_the_workers_network(
    job_tmp: Path,
    s3_behind_recorder: tuple[list[tuple[str, str]], int],
    monkeypatch: pytest.MonkeyPatch,
    endpoint_host: str,
    answers: list[list[str]],
) -> None:
    recorder, port = s3_behind_recorder
    recorder.clear()
    install_resolver(monkeypatch, {"rebind.test": answers} if answers else {})
    error = fetch_error(
        "s3://bkt/five.opus", s3_config={**CREDENTIALS, "endpointUrl": f"http://{endpoint_host}:{port}"}
    )
    assert error.code == "audio_fetch_failed"
    assert recorder == [], "moto received a request"
    if answers[:1] != [[PUBLIC]]:
        assert error.field == "s3Config.endpointUrl" and "non-public address" in error.message


PROBE = """
import json, os, sys
from scribepod_worker.config import WorkerSettings
from scribepod_worker.errors import WorkerError
from scribepod_worker.sources import materialize

if os.geteuid() == 0:  # root reads any file: become nobody, after the imports, for "unreadable" to mean it
    os.setgid(65534)
    os.setuid(65534)
answers = []
for path in json.loads(sys.argv[1]):
    try:
        with materialize(audio=path, audio_base64=None, settings=WorkerSettings(allow_local_files=True)):
            answers.append(["read"])
    except WorkerError as error:
        answers.append([error.code, error.message])
    except Exception as error:
        answers.append(["crashed", repr(error)])
print(json.dumps(answers))
"""


def test_local_paths_do_not_reveal_which_files_exist() -> None:
    """Missing, unreadable, a directory, a FIFO, a device, a dangling link, a name too long, a NUL: one answer,
    which names no path. Run in a child process that is not root, so that an unreadable file is unreadable."""
    with tempfile.TemporaryDirectory(prefix="probe-", dir="/tmp") as folder:
        base = Path(folder)
        base.chmod(0o755)
        (base / "jobtmp").mkdir(mode=0o777)
        (base / "jobtmp").chmod(0o777)
        readable = base / "readable.wav"
        readable.write_bytes(AUDIO)
        readable.chmod(0o644)
        unreadable = base / "secret.wav"
        unreadable.write_bytes(AUDIO)
        unreadable.chmod(0)
        os.mkfifo(base / "fifo")
        (base / "dangling").symlink_to(base / "nowhere")
        probes = [
            str(base / "missing.wav"),
            str(unreadable),
            str(base),
            str(base / "fifo"),
            "/dev/null",
            str(base / "dangling"),
            str(readable / "below-a-file"),
            str(base / ("x" * 5000)),
            str(base / "nul\0.wav"),
            "~no-such-user-here/a.wav",
        ]
        result = subprocess.run(
            [sys.executable, "-c", PROBE, json.dumps([str(readable), *probes])],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "TMPDIR": str(base / "jobtmp")},
        )
        first, *answers = json.loads(result.stdout)
        assert first == ["read"], "the readable file must be read (the probe itself works)"
        assert answers[0][0] == "audio_fetch_failed"
        assert all(answer == answers[0] for answer in answers), dict(zip(probes, answers, strict=True))
        assert "/" not in answers[0][1] and "secret" not in answers[0][1]
        assert list((base / "jobtmp").iterdir()) == []
        assert stat.S_IMODE(unreadable.stat().st_mode) == 0
