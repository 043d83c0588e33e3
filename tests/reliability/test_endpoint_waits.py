"""The local endpoint's waits and stops: /runsync waits hold no thread, and cancel or timeout free the slot at once.

Before, each /runsync wait took a thread of asyncio's default pool (min(32, cores + 4) threads): with 12 callers on
2 cores, 6 answered at 3.3 s and 6 at 6.3 s. And a cancelled or timed-out job was only stopped at its next progress
report, so a job stuck in a download held its slot for as long as the download lasted.

The real app and `JobStore` served by uvicorn in this process, over the real handler and tiny.en; the one worker is
kept busy by a download that a loopback server holds open.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest
import uvicorn

from scribepod_worker import handler
from scribepod_worker.endpoint.app import create_app
from scribepod_worker.endpoint.jobs import JobStore
from scribepod_worker.engine import Engine

from servers import serving

CALLERS = 40  # more than asyncio's default pool has threads on any machine (at most 32)
WAIT_MS = 2000


@pytest.fixture
def held_audio() -> Iterator[str]:
    """A URL whose download never starts until the test ends: a job fetching it keeps its worker busy."""
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            release.wait(60)
            with contextlib.suppress(OSError):  # the job was stopped: its connection is gone
                self.send_error(404)

    with serving(Handler) as base:
        yield f"{base}/held.wav"
        release.set()


@pytest.fixture
def endpoint(worker: Engine, tmp_path: Path) -> Iterator[str]:
    """The real app on uvicorn, one worker slot, its jobs in a SQLite file under tmp_path."""
    store = JobStore(handler.handle, database=tmp_path / "jobs.sqlite3", concurrency=1)
    config = uvicorn.Config(create_app(store), host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    sock = config.bind_socket()
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        yield base
    finally:
        httpx.post(f"{base}/purge-queue", timeout=10)
        server.should_exit = True
        thread.join(15)


def test_concurrent_runsync_waits_all_answer_when_their_wait_ends(endpoint: str, held_audio: str) -> None:
    with httpx.Client(base_url=endpoint, timeout=30, limits=httpx.Limits(max_connections=CALLERS + 5)) as client:
        busy = client.post("/run", json={"input": {"audio": held_audio}}).json()["id"]
        while client.get("/health").json()["workers"]["running"] == 0:
            time.sleep(0.02)

        def runsync(_: int) -> tuple[float, str]:
            started = time.monotonic()
            response = client.post("/runsync", params={"wait": WAIT_MS}, json={"input": {"audio": held_audio}})
            return time.monotonic() - started, response.json()["status"]

        with ThreadPoolExecutor(CALLERS) as pool:
            answers = list(pool.map(runsync, range(CALLERS)))
        client.post(f"/cancel/{busy}")

    times = sorted(elapsed for elapsed, _ in answers)
    print(
        f"{CALLERS} concurrent /runsync?wait={WAIT_MS}: first answered at {times[0]:.2f} s, last at {times[-1]:.2f} s"
    )
    assert {status for _, status in answers} == {"IN_QUEUE"}
    assert times[0] >= WAIT_MS / 1000 - 0.05
    assert times[-1] < WAIT_MS / 1000 + 1.0, f"some waits were queued behind others: {times}"


def free_within(client: httpx.Client, seconds: float) -> float:
    """The seconds until /health shows the worker slot idle (its handler has returned), at most `seconds`."""
    started = time.monotonic()
    while time.monotonic() < started + seconds:
        if client.get("/health").json()["workers"]["running"] == 0:
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"the worker slot was still busy {seconds} s later")


def test_cancel_and_timeout_stop_the_running_job_and_free_its_slot(endpoint: str, held_audio: str) -> None:
    with httpx.Client(base_url=endpoint, timeout=30) as client:
        running = client.post("/run", json={"input": {"audio": held_audio}}).json()["id"]
        while client.get(f"/status/{running}").json()["status"] != "IN_PROGRESS":
            time.sleep(0.02)
        assert client.post(f"/cancel/{running}").json() == {"id": running, "status": "CANCELLED"}
        cancel_s = free_within(client, 1.5)

        body = {"input": {"audio": held_audio}, "policy": {"executionTimeout": 5001}}  # RunPod: over 5 s
        late = client.post("/run", json=body).json()["id"]
        while (state := client.get(f"/status/{late}").json())["status"] != "TIMED_OUT":
            time.sleep(0.02)
        timeout_s = free_within(client, 1.5)
        assert client.get(f"/status/{running}").json()["status"] == "CANCELLED"
    print(f"slot free {cancel_s:.2f} s after a cancel, {timeout_s:.2f} s after a time-out")
    assert 5001 <= state["executionTime"] < 6500 and "output" not in state
