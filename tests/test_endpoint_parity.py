"""The local endpoint behaves like RunPod's (issue 10, part 3), driven with runpod-python's own clients: webhooks are
sent and retried, /health has RunPod's worker counts, results are kept as long as RunPod keeps them, `?ttl=` on
/status is honoured, policy bounds are enforced, and only FAILED and TIMED_OUT jobs can be retried.

One real `scribepod-worker serve` with tiny.en, its retention and webhook delay shortened by its own flags so the
test need not wait RunPod's minutes: /run results 5 s, /runsync results 2 s, 0.5 s between webhook attempts.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
import runpod
import soundfile as sf
from runpod.http_client import AsyncClientSession

from scribepod.models import Transcript

from conftest import ROOT
from servers import LOCAL_WORKER_ENV, capture_server, file_server, free_port, local_endpoint, serving, wait_for

API_KEY = "parity-test-key"
ENDPOINT_ID = "parity"
RUN_RESULT_TTL_S = 5.0
SYNC_RESULT_TTL_S = 2.0
WEBHOOK_DELAY_S = 0.5
NOT_AUDIO = base64.b64encode(b"not audio").decode()
WORKERS = {"idle", "initializing", "ready", "running", "throttled", "unhealthy"}


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    args = ["--api-key", API_KEY, "--endpoint-id", ENDPOINT_ID, "--allow-local-files"]
    args += ["--result-ttl", str(RUN_RESULT_TTL_S), "--sync-result-ttl", str(SYNC_RESULT_TTL_S)]
    args += ["--webhook-retry-delay", str(WEBHOOK_DELAY_S)]
    # Private URLs: the never-ending download below is on loopback.
    with local_endpoint(*args, env={"SCRIBEPOD_ALLOW_PRIVATE_URLS": "1"}) as base:
        yield base


@pytest.fixture
def api(server: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=f"{server}/v2/{ENDPOINT_ID}", headers=headers, timeout=60) as client:
        yield client


@pytest.fixture
def endpoint(server: str, monkeypatch: pytest.MonkeyPatch) -> runpod.Endpoint:
    """runpod-python pointed at the local server: it builds `{endpoint_url_base}/{endpoint_id}/run`, so the base is
    the server's `/v2`, as RunPod's is https://api.runpod.ai/v2."""
    monkeypatch.setattr(runpod, "api_key", API_KEY)
    monkeypatch.setattr(runpod, "endpoint_url_base", f"{server}/v2")
    return runpod.Endpoint(ENDPOINT_ID)


@pytest.fixture(scope="module")
def short_clip(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """8 s of the sample, speech included: a job that ends in a few seconds."""
    audio, rate = sf.read(sample_dir / "sample.wav", dtype="float32")
    path = tmp_path_factory.mktemp("parity") / "short.wav"
    sf.write(path, audio[6 * rate : 14 * rate], rate)
    return str(path)


@pytest.fixture(scope="module")
def endless_audio() -> Iterator[str]:
    """A URL whose body comes a byte a second: a job fetching it runs until it is stopped."""
    with file_server({}) as base:
        yield f"{base}/drip"


@dataclass
class Receiver:
    """A webhook receiver answering each POST with the next of `answers` (200 once they run out); records the
    bodies and when they came."""

    answers: list[int]
    bodies: list[dict[str, Any]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, count: int, timeout: float = 60) -> None:
        with self.arrived:
            if not self.arrived.wait_for(lambda: len(self.bodies) >= count, timeout):
                raise AssertionError(f"{len(self.bodies)} webhook calls arrived, not {count}")


@contextmanager
def receiver(*answers: int) -> Iterator[tuple[str, Receiver]]:
    record = Receiver(list(answers))

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            with record.arrived:
                record.bodies.append(body)
                record.times.append(time.monotonic())
                answer = record.answers.pop(0) if record.answers else 200
                record.arrived.notify_all()
            self.send_response(answer)
            self.send_header("Content-Length", "0")
            self.end_headers()

    with serving(Handler) as base:
        yield f"{base}/hook?token=secret", record


def status_code(api: httpx.Client, job_id: str) -> int:
    return api.get(f"/status/{job_id}").status_code


def gone_within(api: httpx.Client, job_id: str, seconds: float) -> float:
    """The seconds until /status answers 404 for the job, at most `seconds`."""
    started = time.monotonic()
    while time.monotonic() < started + seconds:
        if status_code(api, job_id) == 404:
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} was still there {seconds} s later")


def test_runpod_client_runs_a_job_reads_its_status_and_health(endpoint: runpod.Endpoint, short_clip: str) -> None:
    job = endpoint.run({"audio": short_clip, "diarize": False})
    output = job.output(timeout=60)
    assert job.status() == "COMPLETED" and "hello" in Transcript.model_validate(output).text.lower()

    health = endpoint.health()
    assert set(health["workers"]) == WORKERS, "RunPod's /health worker counts"
    assert health["workers"]["ready"] == health["workers"]["idle"] == 1
    assert health["workers"]["unhealthy"] == health["workers"]["initializing"] == 0
    assert health["jobs"]["completed"] >= 1

    output = endpoint.run_sync({"audio": short_clip, "diarize": False}, timeout=60)
    assert "hello" in Transcript.model_validate(output).text.lower()


def test_asyncio_client_runs_and_cancels(server: str, short_clip: str, endless_audio: str) -> None:
    async def scenario() -> tuple[str, Any, str, dict[str, Any]]:
        async with AsyncClientSession() as session:
            endpoint = runpod.AsyncioEndpoint(ENDPOINT_ID, session)
            done = await endpoint.run({"audio": short_clip, "diarize": False})
            output = await done.output(timeout=60)
            endless = await endpoint.run({"audio": endless_audio})
            while await endless.status() != "IN_PROGRESS":
                await asyncio.sleep(0.1)
            cancelled = await endless.cancel()
            return await done.status(), output, await endless.status(), cancelled

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runpod, "api_key", API_KEY)
        patch.setattr(runpod, "endpoint_url_base", f"{server}/v2")
        status, output, endless_status, cancelled = asyncio.run(scenario())
    assert status == "COMPLETED" and "hello" in Transcript.model_validate(output).text.lower()
    assert cancelled["status"] == endless_status == "CANCELLED"


def test_webhook_gets_the_status_body_once_the_job_ends(
    endpoint: runpod.Endpoint, api: httpx.Client, short_clip: str
) -> None:
    with capture_server() as (base, received):
        job = endpoint.run({"input": {"audio": short_clip, "diarize": False}, "webhook": f"{base}/done"})
        job.output(timeout=60)
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            time.sleep(0.05)
        state = api.get(f"/status/{job.job_id}").json()
    assert len(received) == 1, "one POST, once the job completed"
    path, body = received[0]
    assert path == "/done" and json.loads(body) == state and state["status"] == "COMPLETED"


def test_webhook_failures_are_retried_twice_10_s_apart_scaled(api: httpx.Client) -> None:
    """RunPod tries a failing webhook 3 times in all, 10 s apart (0.5 s here); only a 200 ends the tries."""
    with receiver(500, 500, 500, 500) as (always_failing, failing), receiver(503, 200) as (flaky_url, flaky):
        failed = api.post("/run", json={"input": {"audio_base64": NOT_AUDIO}, "webhook": always_failing}).json()
        flaky_job = api.post("/run", json={"input": {"audio_base64": NOT_AUDIO}, "webhook": flaky_url}).json()
        failing.wait_for(3)
        flaky.wait_for(2)
        time.sleep(WEBHOOK_DELAY_S * 3)  # time for a fourth try, or a third to the flaky one, that must not come
    assert len(failing.bodies) == 3 and len(flaky.bodies) == 2
    gaps = [later - earlier for earlier, later in zip(failing.times, failing.times[1:], strict=False)]
    assert all(gap >= WEBHOOK_DELAY_S for gap in gaps), gaps
    assert {body["id"] for body in failing.bodies} == {failed["id"]}
    assert all(body["status"] == "FAILED" and "audio_decode_failed" in body["error"] for body in failing.bodies)
    assert flaky.bodies[-1]["id"] == flaky_job["id"]


def test_webhook_fires_for_a_cancelled_job(api: httpx.Client, endless_audio: str) -> None:
    with receiver() as (url, record):
        job_id = api.post("/run", json={"input": {"audio": endless_audio}, "webhook": url}).json()["id"]
        assert api.post(f"/cancel/{job_id}").json()["status"] == "CANCELLED"
        record.wait_for(1)
    state = api.get(f"/status/{job_id}").json()
    assert record.bodies == [state] and state["status"] == "CANCELLED"


def test_runsync_results_expire_sooner_than_run_results(api: httpx.Client) -> None:
    """RunPod keeps a /runsync result 1 minute and a /run result 30 minutes (2 s and 5 s on this server)."""
    synced = api.post("/runsync", json={"input": {"audio_base64": NOT_AUDIO}}).json()
    ran = api.post("/run", json={"input": {"audio_base64": NOT_AUDIO}}).json()
    while api.get(f"/status/{ran['id']}").json()["status"] != "FAILED":
        time.sleep(0.05)
    assert synced["status"] == "FAILED"
    sync_gone = gone_within(api, synced["id"], SYNC_RESULT_TTL_S + 2)
    assert status_code(api, ran["id"]) == 200, "the /run result outlives the /runsync one"
    run_gone = gone_within(api, ran["id"], RUN_RESULT_TTL_S + 2)
    print(f"/runsync result gone {sync_gone:.1f} s after it ended; /run result {run_gone:.1f} s later")
    assert api.post(f"/retry/{ran['id']}").status_code == 404, "an expired job cannot be retried"


def test_status_ttl_sets_the_rest_of_the_jobs_life(api: httpx.Client, endless_audio: str) -> None:
    done = api.post("/run", json={"input": {"audio_base64": NOT_AUDIO}}).json()["id"]
    while api.get(f"/status/{done}").json()["status"] != "FAILED":
        time.sleep(0.05)
    assert api.get(f"/status/{done}", params={"ttl": 500}).json()["status"] == "FAILED"
    assert gone_within(api, done, 2.0) < 2.0, "the result is gone long before --result-ttl"

    running = api.post("/run", json={"input": {"audio": endless_audio}}).json()["id"]
    while api.get(f"/status/{running}").json()["status"] != "IN_PROGRESS":
        time.sleep(0.05)
    api.get(f"/status/{running}", params={"ttl": 500})
    gone_within(api, running, 3.0)
    started = time.monotonic()
    while api.get("/health").json()["workers"]["running"]:
        assert time.monotonic() < started + 2.0, "the expired job's run was not stopped"
        time.sleep(0.05)

    for bad in ("0", "-5", str(7 * 24 * 3600 * 1000 + 1), "soon"):
        response = api.get(f"/status/{done}", params={"ttl": bad})
        assert response.status_code == 400 and "ttl" in response.json()["error"], bad


@pytest.mark.parametrize(
    ("policy", "accepted"),
    [
        ({"executionTimeout": 5000}, False),
        ({"executionTimeout": 5001}, True),
        ({"executionTimeout": 7 * 24 * 3600 * 1000 + 1}, False),
        ({"ttl": 9999}, False),
        ({"ttl": 10_000}, True),
        ({"ttl": 7 * 24 * 3600 * 1000}, True),
        ({"ttl": 7 * 24 * 3600 * 1000 + 1}, False),
    ],
)
def test_policy_bounds_are_runpods(api: httpx.Client, policy: dict[str, int], accepted: bool) -> None:
    response = api.post("/run", json={"input": {"audio_base64": NOT_AUDIO}, "policy": policy})
    if accepted:
        assert response.status_code == 200, response.text
    else:
        (name,) = policy
        assert response.status_code == 400 and f"policy.{name}" in response.json()["error"]
        assert "RunPod" in response.json()["error"]


def test_every_invalid_field_is_named_in_one_answer(api: httpx.Client) -> None:
    body = {"input": {}, "policy": {"executionTimeout": 1000, "ttl": 1000}, "webhook": "ftp://user:pw@host/x"}
    error = api.post("/run", json=body).json()["error"]
    assert "policy.executionTimeout" in error and "policy.ttl" in error and "webhook" in error
    assert "pw" not in error, "the webhook URL is not echoed"


def test_only_failed_and_timed_out_jobs_can_be_retried(api: httpx.Client, endless_audio: str) -> None:
    queued = api.post("/run", json={"input": {"audio": endless_audio}}).json()["id"]
    assert api.post(f"/cancel/{queued}").json()["status"] == "CANCELLED"
    response = api.post(f"/retry/{queued}")
    assert response.status_code == 400 and "CANCELLED" in response.json()["error"]
    assert api.get(f"/status/{queued}").json()["status"] == "CANCELLED"

    failed = api.post("/runsync", json={"input": {"audio_base64": NOT_AUDIO}}).json()
    assert failed["status"] == "FAILED"
    assert api.post(f"/retry/{failed['id']}").json() == {"id": failed["id"], "status": "IN_QUEUE"}


@contextmanager
def serve_on(state: Path, *args: str) -> Iterator[str]:
    """`serve` on a given state directory (a restart reuses it); stopped with SIGTERM, as a developer's Ctrl-C."""
    port = free_port()
    command = [sys.executable, "-m", "scribepod_worker.cli", "serve", "--port", str(port), "--state-dir", str(state)]
    process = subprocess.Popen(
        [*command, *args], cwd=ROOT, env={**os.environ, **LOCAL_WORKER_ENV}, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/health", timeout=120)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
        assert "Traceback" not in err and "secret" not in err, err[-2000:]


def test_a_webhook_interrupted_by_a_restart_is_sent_after_it(tmp_path: Path) -> None:
    """The first try fails; the endpoint stops during the wait before the second and sends it after its restart."""
    with receiver(500) as (url, record):
        with serve_on(tmp_path, "--webhook-retry-delay", "60") as base:
            job_id = httpx.post(f"{base}/run", json={"input": {"audio_base64": NOT_AUDIO}, "webhook": url}).json()["id"]
            record.wait_for(1)
        with serve_on(tmp_path, "--webhook-retry-delay", "60") as base:
            record.wait_for(2, timeout=10)
            state = httpx.get(f"{base}/status/{job_id}").json()
        with serve_on(tmp_path):
            time.sleep(1)  # delivered: the third start owes nothing
    assert record.bodies == [state, state] and state["status"] == "FAILED"
