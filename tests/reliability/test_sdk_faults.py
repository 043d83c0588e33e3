"""The SDK under faults: no duplicate jobs, no uncertainty without a failure, no credential in what it raises or logs.

Jobs run on the real local endpoint (`scribepod-worker serve`, tiny.en); faults come from a real proxy on loopback
(tests/faultproxy.py) that forwards to it. Jobs are counted from the endpoint's own answers, which the proxy sees
even when it then replaces them with a fault, and from the endpoint's /health.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from scribepod import (
    AuthenticationError,
    Client,
    EndpointUnavailable,
    InvalidInput,
    JobFailed,
    JobTimedOut,
    PayloadTooLarge,
    ScribepodError,
    SubmissionUncertain,
    Transcript,
)

from conftest import API_KEY, ffmpeg
from faultproxy import Fault, FaultProxy, delay, hold, lose_answer, reject, reset_after, reset_before
from servers import serving


@pytest.fixture(scope="module")
def short_audio(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path) -> bytes:
    """Four seconds of the sample: a real job that takes about a second."""
    path = tmp_path_factory.mktemp("short") / "short.wav"
    ffmpeg("-i", str(sample_dir / "sample.wav"), "-t", "4", str(path))
    return path.read_bytes()


def jobs_known(base: str) -> int:
    """Every job the endpoint has created and not forgotten (a state change moves a job between these counts)."""
    counts: dict[str, int] = httpx.get(f"{base}/health", timeout=10).json()["jobs"]
    return sum(count for name, count in counts.items() if name != "retried")


# Item 10: a submission is repeated only when the failure proves nothing was queued.


@dataclass(frozen=True)
class Case:
    """One submission: the faults its consecutive requests meet, and what must come of it."""

    name: str
    faults: tuple[Fault, ...]
    uncertain: bool  # else a transcript
    status_code: int | None  # the SubmissionUncertain's
    jobs: int  # created at the endpoint
    requests: int  # POSTs the proxy received

    @property
    def forwarded(self) -> bool:
        return all(fault.forwards for fault in self.faults)


CASES = (
    Case("forwarded", (), False, None, 1, 1),
    Case("429 before forwarding", (reject(429, Retry_After="0"),), False, None, 1, 2),
    Case("429 twice", (reject(429), reject(429, Retry_After="0")), False, None, 1, 3),
    Case("delayed 1 s", (delay(1.0),), False, None, 1, 1),
    Case("502 after forwarding", (lose_answer(502),), True, 502, 1, 1),
    Case("503 after forwarding", (lose_answer(503),), True, 503, 1, 1),
    Case("504 after forwarding", (lose_answer(504),), True, 504, 1, 1),
    Case("reset after forwarding", (reset_after(),), True, None, 1, 1),
    Case("503 before forwarding", (reject(503),), True, 503, 0, 1),  # indistinguishable from 503 after
    Case("reset before forwarding", (reset_before(),), True, None, 0, 1),
)


def test_injected_faults_make_no_duplicate_jobs(endpoint: str, short_audio: bytes) -> None:
    """Each case through /run (submit, then wait) and through /runsync (transcribe): 20 submissions."""
    proxy = FaultProxy(endpoint)
    known_before = jobs_known(endpoint)
    outcomes: list[tuple[str, str, bool, int]] = []  # case, path, correct, jobs created
    with proxy.running() as url, Client(base_url=url, timeout=60, max_retries=4) as client:
        for path in ("/run", "/runsync"):
            for case in CASES:
                proxy.clear()
                proxy.plan("POST", "/run", *case.faults)  # "/run" also matches /runsync
                requests_before, jobs_before = proxy.count("POST", "/run"), len(proxy.created_jobs())
                result: Transcript | ScribepodError
                try:
                    if path == "/run":
                        result = client.submit(short_audio, diarize=False).wait(timeout=60)
                    else:
                        result = client.transcribe(short_audio, diarize=False)
                except ScribepodError as error:
                    result = error
                created = proxy.created_jobs()[jobs_before:]
                if case.uncertain:
                    correct = (
                        isinstance(result, SubmissionUncertain)
                        and result.status_code == case.status_code
                        and result.request == f"POST {path}"
                    )
                else:
                    correct = isinstance(result, Transcript) and result.job is not None and result.job.id in created
                correct = correct and len(created) == case.jobs
                correct = correct and proxy.count("POST", "/run") - requests_before == case.requests
                outcomes.append((case.name, path, correct, len(created)))
    duplicates = sum(max(0, jobs - 1) for _, _, _, jobs in outcomes)
    wrong = [(name, path, jobs) for name, path, correct, jobs in outcomes if not correct]
    print(
        f"\nsubmissions under faults: {len(outcomes)} tried, {len(outcomes) - len(wrong)} correct, "
        f"{duplicates} duplicate jobs, {len(proxy.created_jobs())} jobs created"
    )
    assert duplicates == 0
    assert wrong == []
    assert jobs_known(endpoint) - known_before == len(proxy.created_jobs()) == 16  # 2 x 8 cases that forward


# Item 8: a busy endpoint is not a failure.


def late_runsync(_method: str, path: str) -> Fault:
    """Answer /runsync only after its ?wait= and 31 s more: as `serve` did when its 6 wait threads were taken,
    and past the 30 s the SDK used to allow, after which it called the submission uncertain."""
    wait_ms = int(parse_qs(urlsplit(path).query).get("wait", ["90000"])[0])
    return hold(wait_ms / 1000 + 31.0)


def test_a_batch_on_a_busy_endpoint_is_never_uncertain(endpoint: str, sample_dir: Path, short_audio: bytes) -> None:
    """transcribe_many at concurrency 8 on an endpoint with 2 workers already busy, whose /runsync answers late."""
    long_job = {"input": {"audio_base64": _b64((sample_dir / "sample.wav").read_bytes()), "diarize": False}}
    busy = [httpx.post(f"{endpoint}/run", json=long_job, timeout=30) for _ in range(2)]
    assert all(answer.status_code == 200 for answer in busy)
    proxy = FaultProxy(endpoint)
    proxy.rule("POST", "/runsync", late_runsync)
    known_before = jobs_known(endpoint)
    started = time.monotonic()
    with proxy.running() as url, Client(base_url=url, timeout=300) as client:
        results = client.transcribe_many([short_audio] * 8, concurrency=8, diarize=False)
    elapsed = time.monotonic() - started
    transcripts = [result for result in results if isinstance(result, Transcript)]
    uncertain = [result for result in results if isinstance(result, SubmissionUncertain)]
    created = proxy.created_jobs()
    print(f"\nbusy batch: {len(transcripts)} transcripts, {len(uncertain)} uncertain, {len(created)} jobs", end="")
    print(f" in {elapsed:.1f} s")
    assert len(transcripts) == 8 and not uncertain, results
    assert len(set(created)) == len(created) == 8
    assert {t.job.id for t in transcripts if t.job is not None} == set(created)
    assert jobs_known(endpoint) - known_before == 8


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# Item 3: nothing the SDK raises or logs carries a credential, even from an endpoint that echoes the request.

SIGNATURE = "5d41402abc4b2a76b9719d911017c592aa0c1f7e3e7b9e5bd3c1f9c0d3e4a5b6"
ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
URL_PASSWORD = "pa55-w0rd-in-url"
PRESIGNED = (
    f"https://uploader:{URL_PASSWORD}@bucket.s3.amazonaws.com/in/meeting.wav?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    f"&X-Amz-Credential={ACCESS_KEY_ID}%2F20250101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20250101T000000Z"
    f"&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature={SIGNATURE}"
)
SECRETS = (API_KEY, SIGNATURE, ACCESS_KEY_ID, URL_PASSWORD)

# mode: (error the SDK must raise, what the endpoint answers for each request)
Answer = tuple[int, dict[str, Any]]
QUEUED: Answer = (200, {"id": "job-1", "status": "IN_QUEUE"})
MODES: dict[str, tuple[type[ScribepodError], Callable[[str, str, str], Answer]]] = {
    "400": (InvalidInput, lambda method, path, echo: (400, {"error": echo})),
    "401": (AuthenticationError, lambda method, path, echo: (401, {"error": echo})),
    "404": (EndpointUnavailable, lambda method, path, echo: (404, {"error": echo})),
    "413": (PayloadTooLarge, lambda method, path, echo: (413, {"error": echo})),
    "500": (SubmissionUncertain, lambda method, path, echo: (500, {"error": echo})),
    "502": (SubmissionUncertain, lambda method, path, echo: (502, {"error": echo})),
    "no job id": (EndpointUnavailable, lambda method, path, echo: (200, {"echo": echo})),
    "failed job": (
        JobFailed,
        lambda method, path, echo: (
            200,
            {"id": "job-1", "status": "FAILED", "error": json.dumps({"code": "audio_fetch_failed", "message": echo})},
        ),
    ),
    "status fails": (
        EndpointUnavailable,
        lambda method, path, echo: (500, {"error": echo}) if method == "GET" else QUEUED,
    ),
    "cancel fails": (  # the SDK logs the failed cancel of a timed-out job
        JobTimedOut,
        lambda method, path, echo: (400, {"error": echo}) if "/cancel" in path else QUEUED,
    ),
}


@contextmanager
def echoing_endpoint(mode: list[str], echoes: list[str]) -> Iterator[str]:
    """An endpoint that quotes each request back, headers and body, in its answer (`mode[0]` says how)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _handle(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            echo = "".join(f"{name}: {value}\n" for name, value in self.headers.items()) + body.decode()
            echoes.append(echo)
            status, answer = MODES[mode[0]][1](self.command, self.path, echo)
            payload = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _handle  # noqa: N815 (the names http.server dispatches to)

    with serving(Handler) as base:
        yield base


def test_no_credential_in_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    mode: list[str] = [""]
    echoes: list[str] = []
    raised: list[ScribepodError] = []
    with echoing_endpoint(mode, echoes) as base, Client(base_url=base, api_key=API_KEY, max_retries=2) as client:
        for name, (expected, _) in MODES.items():
            mode[0] = name
            with pytest.raises(expected) as caught:
                if name == "status fails":
                    client.submit(PRESIGNED).wait(timeout=30)
                else:
                    client.transcribe(PRESIGNED, timeout=1 if name == "cancel fails" else 30)
            raised.append(caught.value)
    assert all(secret in "".join(echoes) for secret in SECRETS)  # the endpoint did quote them back
    assert "could not cancel timed-out job" in caplog.text
    with Client(base_url=f"http://user:{URL_PASSWORD}@127.0.0.1:9") as with_password:
        shown = [repr(with_password)]
    for error in raised:
        shown += [str(error), repr(error), *(str(arg) for arg in error.args), str(getattr(error, "message", ""))]
    shown += [record.getMessage() for record in caplog.records] + [caplog.text]
    leaks = [(secret, text[:300]) for text in shown for secret in SECRETS if secret in text]
    assert leaks == []
