"""`scribepod-worker serve` end to end: a real server in a subprocess, the real tiny.en model, RunPod's wire shapes."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf

from scribepod.models import ErrorInfo, Transcript

from conftest import ROOT
from servers import file_server, free_port, wait_for

API_KEY = "local-test-key"
ENDPOINT_ID = "test-endpoint"
ENV = {
    **os.environ,
    "SCRIBEPOD_MODEL": "tiny.en",
    "SCRIBEPOD_DIARIZER": "builtin",
    "SCRIBEPOD_DEVICE": "cpu",
    "SCRIBEPOD_LOG_LEVEL": "WARNING",
    "SCRIBEPOD_ALLOW_PRIVATE_URLS": "1",  # the never-ending download is on loopback
}
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}
NOT_AUDIO = base64.b64encode(b"not audio").decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server for the module, with an API key, a fixed endpoint id, and local files allowed (the clips)."""
    port = free_port()
    state = tmp_path_factory.mktemp("state")
    args = ["serve", "--port", str(port), "--api-key", API_KEY, "--endpoint-id", ENDPOINT_ID]
    args += ["--state-dir", str(state), "--allow-local-files"]
    process = subprocess.Popen(
        [sys.executable, "-m", "scribepod_worker.cli", *args],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{base}/health", timeout=90)
        yield base
    finally:
        process.terminate()
        out, err = process.communicate(timeout=20)
        # Graceful shutdown, then uvicorn re-raises SIGTERM so the exit status names it.
        assert process.returncode in (0, -signal.SIGTERM), err[-2000:]
        assert "Traceback" not in err, err[-2000:]
        assert f"listening on {base}" in out
        assert API_KEY not in out + err, "the API key was logged"


@pytest.fixture(scope="module")
def api(server: str) -> Iterator[httpx.Client]:
    """A client on RunPod's URL shape: {base}/v2/{endpoint_id}/..., Bearer key."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=f"{server}/v2/{ENDPOINT_ID}", headers=headers, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def clips(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The 30 s sample, 8 s of it (speech starts at 6.7 s), and the sample four times over (2 min: time to watch)."""
    audio, rate = sf.read(sample_dir / "sample.wav", dtype="float32")
    out = tmp_path_factory.mktemp("clips")
    sf.write(out / "short.wav", audio[6 * rate : 14 * rate], rate)
    sf.write(out / "long.wav", np.tile(audio, 4), rate)
    return {
        "sample": str(sample_dir / "sample.wav"),
        "short": str(out / "short.wav"),
        "long": str(out / "long.wav"),
    }


def long_job(clips: dict[str, str]) -> dict[str, Any]:
    # batch_size 1 decodes sequentially, so progress (and a stop at the next report) comes segment by segment.
    return {"audio": clips["long"], "batch_size": 1}


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def poll(
    api: httpx.Client, job_id: str, until: Callable[[dict[str, Any]], bool], timeout: float = 60
) -> dict[str, Any]:
    """Poll /status until `until(state)` holds (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = ok(api.get(f"/status/{job_id}"))
        if until(state):
            return state
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never got there; last state {state}")


def finished(api: httpx.Client, job_id: str) -> dict[str, Any]:
    return poll(api, job_id, lambda state: state["status"] in FINAL)


def idle(api: httpx.Client, within: float = 60) -> float:
    """Wait until no worker is busy (a stopped handler has returned) and nothing waits; the seconds it took."""
    started = time.monotonic()
    while time.monotonic() < started + within:
        health = ok(api.get("/health"))
        if health["workers"]["running"] == 0 and health["jobs"]["inQueue"] == 0:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"the endpoint was not idle within {within} s: {health}")


def test_run_then_status_polls_to_a_completed_transcript(api: httpx.Client, clips: dict[str, str]) -> None:
    submitted = ok(api.post("/run", json={"input": {"audio": clips["sample"]}}))
    assert submitted == {"id": submitted["id"], "status": "IN_QUEUE"}
    state = finished(api, submitted["id"])
    assert state["status"] == "COMPLETED"
    assert set(state) == {"id", "status", "delayTime", "executionTime", "output", "workerId"}
    assert isinstance(state["delayTime"], int) and state["executionTime"] > 100
    transcript = Transcript.model_validate(state["output"])
    assert "hello" in transcript.text.lower() and len(transcript.speakers) == 2


def test_runsync_returns_a_short_job_completed(api: httpx.Client, clips: dict[str, str]) -> None:
    audio = base64.b64encode(Path(clips["short"]).read_bytes()).decode()
    state = ok(api.post("/runsync", json={"input": {"audio_base64": audio, "output_formats": ["srt"]}}))
    assert state["status"] == "COMPLETED" and state["id"].startswith("sync-")
    assert "-->" in Transcript.model_validate(state["output"]).formats["srt"]
    assert ok(api.post(f"/status/{state['id']}"))["status"] == "COMPLETED"  # POST /status works too, as on RunPod


def test_runsync_that_outlasts_its_wait_answers_the_id_for_polling(api: httpx.Client, clips: dict[str, str]) -> None:
    state = ok(api.post("/runsync", params={"wait": 1}, json={"input": {"audio": clips["sample"]}}))
    assert state["status"] in {"IN_QUEUE", "IN_PROGRESS"}, "the 1 s minimum wait outlasted a 30 s clip"
    assert finished(api, state["id"])["status"] == "COMPLETED"


def test_failed_job_carries_the_worker_error_json_and_retries_under_its_id(api: httpx.Client) -> None:
    state = ok(api.post("/runsync", json={"input": {"audio_base64": NOT_AUDIO}}))
    assert state["status"] == "FAILED" and "output" not in state
    assert ErrorInfo.model_validate_json(state["error"]).code == "audio_decode_failed"
    retried_before = ok(api.get("/health"))["jobs"]["retried"]

    assert ok(api.post(f"/retry/{state['id']}")) == {"id": state["id"], "status": "IN_QUEUE"}
    again = finished(api, state["id"])
    assert again["status"] == "FAILED" and ErrorInfo.model_validate_json(again["error"]).code == "audio_decode_failed"
    assert ok(api.get("/health"))["jobs"]["retried"] == retried_before + 1


def test_progress_stream_health_and_cancel(api: httpx.Client, clips: dict[str, str]) -> None:
    idle(api)
    running = ok(api.post("/run", json={"input": long_job(clips)}))["id"]
    queued = ok(api.post("/run", json={"input": {"audio": clips["short"]}}))["id"]

    state = poll(api, running, lambda s: s["status"] == "IN_PROGRESS" and s.get("output", {}).get("percent", 0) > 5)
    assert set(state["output"]) == {"stage", "percent", "segments"} and state["output"]["stage"] == "transcribe"
    assert ok(api.get(f"/status/{queued}")) == {"id": queued, "status": "IN_QUEUE"}
    health = ok(api.get("/health"))
    assert health["jobs"]["inProgress"] == 1 and health["jobs"]["inQueue"] == 1
    assert health["workers"] == {"idle": 0, "initializing": 0, "ready": 0, "running": 1, "throttled": 0, "unhealthy": 0}

    stream = ok(api.get(f"/stream/{running}"))
    assert stream["id"] == running and stream["status"] == "IN_PROGRESS"
    assert stream["stream"][0]["output"] == {"stage": "decode", "percent": 0.0, "segments": []}
    assert all(set(item["output"]) == {"stage", "percent", "segments"} for item in stream["stream"])
    later = ok(api.get(f"/stream/{running}"))["stream"]
    assert not later or later[0] != stream["stream"][0], "stream items are delivered once"

    assert ok(api.post(f"/cancel/{queued}")) == {"id": queued, "status": "CANCELLED"}
    assert ok(api.post(f"/cancel/{running}")) == {"id": running, "status": "CANCELLED"}
    # The job's thread leaves at once; the ASR window in flight (1-4 s of CPU here) finishes in the background.
    print(f"slot free {idle(api, within=2.0):.2f} s after the cancel")
    cancelled = ok(api.get(f"/status/{running}"))
    assert cancelled["status"] == "CANCELLED" and "output" not in cancelled, "the late result was discarded"
    assert ok(api.get(f"/status/{queued}")) == {"id": queued, "status": "CANCELLED"}, "a cancelled job never ran"


def test_execution_timeout_marks_the_job_timed_out(api: httpx.Client) -> None:
    """The shortest executionTimeout RunPod takes (over 5 s), on a download that never ends."""
    idle(api)
    with file_server({}) as base:
        body = {"input": {"audio": f"{base}/drip"}, "policy": {"executionTimeout": 5001, "ttl": 60_000}}
        job_id = ok(api.post("/run", json=body))["id"]
        state = finished(api, job_id)
        assert state["status"] == "TIMED_OUT" and 5001 <= state["executionTime"] < 8000 and "output" not in state
        print(f"slot free {idle(api, within=2.0):.2f} s after the time-out was seen")
        assert ok(api.get(f"/status/{job_id}"))["status"] == "TIMED_OUT", "the late result was discarded"

        assert ok(api.post(f"/retry/{job_id}"))["status"] == "IN_QUEUE"
        assert ok(api.post(f"/cancel/{job_id}"))["status"] == "CANCELLED"
    response = api.post(f"/retry/{job_id}")
    assert response.status_code == 400 and "CANCELLED" in response.json()["error"], "RunPod retries no CANCELLED job"
    idle(api)


def test_purge_queue_removes_waiting_jobs_only(api: httpx.Client, clips: dict[str, str]) -> None:
    idle(api)
    running = ok(api.post("/run", json={"input": long_job(clips)}))["id"]
    poll(api, running, lambda s: s["status"] == "IN_PROGRESS")
    waiting = [ok(api.post("/run", json={"input": {"audio": clips["short"]}}))["id"] for _ in range(2)]

    assert ok(api.post("/purge-queue")) == {"removed": 2, "status": "completed"}
    assert [ok(api.get(f"/status/{job}"))["status"] for job in waiting] == ["CANCELLED", "CANCELLED"]
    assert ok(api.get(f"/status/{running}"))["status"] == "IN_PROGRESS"
    ok(api.post(f"/cancel/{running}"))
    idle(api)


def test_finished_jobs_cannot_be_retried(api: httpx.Client, clips: dict[str, str]) -> None:
    state = ok(api.post("/runsync", json={"input": {"audio": clips["short"]}}))
    response = api.post(f"/retry/{state['id']}")
    assert response.status_code == 400 and "COMPLETED" in response.json()["error"]


def test_api_key_is_required_bearer_or_bare(server: str) -> None:
    url = f"{server}/health"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(url, headers={"Authorization": API_KEY}).status_code == 200
    assert httpx.get(url, headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200
    assert httpx.post(f"{server}/run", json={"input": {}}).json() == {"error": "Unauthorized: missing or wrong API key"}


def test_payload_limits_match_runpods(api: httpx.Client) -> None:
    eleven_mb = "A" * (11 * 1024 * 1024)
    assert api.post("/run", json={"input": {"audio_base64": eleven_mb}}).status_code == 413
    assert ok(api.post("/runsync", json={"input": {"audio_base64": eleven_mb}}))["status"] == "FAILED"
    response = api.post("/runsync", json={"input": {"audio_base64": "A" * (21 * 1024 * 1024)}})
    assert response.status_code == 413 and "20 MB" in response.json()["error"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"input": {"audio": ', "Invalid JSON"),
        (b'{"audio": "x.wav"}', "input: Field required"),
        (b"[]", ""),
        (b'{"input": {}, "policy": {"ttl": 1' + b"0" * 400 + b"}}", "policy.ttl"),
        (b'{"input": {}, "policy": {"executionTimeout": 99999999999999}}', "policy.executionTimeout"),
    ],
)
def test_bad_bodies_are_400_with_a_json_error(api: httpx.Client, body: bytes, message: str) -> None:
    response = api.post("/run", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and message in response.json()["error"]


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "status"), ("GET", "stream"), ("POST", "cancel"), ("POST", "retry")]
)
def test_unknown_job_ids_are_404(api: httpx.Client, method: str, path: str) -> None:
    response = api.request(method, f"/{path}/no-such-job")
    assert response.status_code == 404 and response.json() == {"error": "request does not exist"}


def test_api_docs_need_the_key(server: str) -> None:
    """With a key, the schema needs it too; the browsable pages, which cannot send it, are off."""
    assert httpx.get(f"{server}/openapi.json").status_code == 401
    schema = httpx.get(f"{server}/openapi.json", headers={"Authorization": API_KEY})
    assert schema.status_code == 200 and "/runsync" in schema.json()["paths"]
    for page in ("/docs", "/redoc"):
        assert httpx.get(f"{server}{page}", headers={"Authorization": API_KEY}).status_code == 404


def test_serving_beyond_loopback_without_a_key_warns(tmp_path: Path) -> None:
    port = free_port()
    args = ["serve", "--host", "0.0.0.0", "--port", str(port), "--state-dir", str(tmp_path)]
    env = {key: value for key, value in ENV.items() if key != "SCRIBEPOD_API_KEY"}
    process = subprocess.Popen(
        [sys.executable, "-m", "scribepod_worker.cli", *args], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stderr is not None
        first_line = process.stderr.readline()  # the warning comes before anything is loaded
    finally:
        process.kill()
        process.communicate(timeout=20)
    assert "WARNING" in first_line and "0.0.0.0 without an API key" in first_line


def test_a_missing_default_model_stops_the_start_naming_what_is_present(tmp_path: Path) -> None:
    """Not "listening" and then model_unavailable for every job: the start fails, listing the models present."""
    args = ["serve", "--port", str(free_port()), "--state-dir", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, "-m", "scribepod_worker.cli", *args],
        cwd=ROOT,
        env={**ENV, "SCRIBEPOD_MODEL": "large-v3"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1 and "listening" not in result.stdout
    assert "model 'large-v3' is not present" in result.stderr and "available: tiny.en" in result.stderr
    assert "SCRIBEPOD_MODEL=tiny.en" in result.stderr and "Traceback" not in result.stderr


def test_routes_answer_at_the_root_and_only_under_their_endpoint_id(server: str) -> None:
    headers = {"Authorization": API_KEY}
    assert httpx.get(f"{server}/health", headers=headers).status_code == 200
    assert httpx.get(f"{server}/v2/{ENDPOINT_ID}/health", headers=headers).status_code == 200
    assert httpx.get(f"{server}/v2/another-endpoint/health", headers=headers).status_code == 404
