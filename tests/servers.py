"""Real local servers for source tests: a small HTTP file server with misbehaving routes, and moto's S3 server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing answered at {url} within {timeout} s")


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Run `handler` on a free loopback port in a background thread; yield its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def file_server(files: dict[str, Path]) -> Iterator[str]:
    """Serve `files` by name on loopback, plus /redirect/<name>, /slow (stalls) and /huge (claims 10 GB)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            name = self.path.lstrip("/")
            if name.startswith("redirect/"):
                self.send_response(302)
                self.send_header("Location", "/" + name.removeprefix("redirect/"))
                self.end_headers()
            elif name == "slow":
                self.send_response(200)
                self.send_header("Content-Length", "1000")
                self.end_headers()
                self.wfile.write(b"RIFF")
                self.wfile.flush()
                time.sleep(3)
            elif name == "huge":
                self.send_response(200)
                self.send_header("Content-Length", str(10 * 1024**3))
                self.end_headers()
            elif name in files:
                data = files[name].read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            else:
                self.send_error(404, "Not Found")

    with serving(Handler) as base:
        yield base


ROOT = Path(__file__).resolve().parent.parent
LOCAL_WORKER_ENV = {"SCRIBEPOD_MODEL": "tiny.en", "SCRIBEPOD_DIARIZER": "builtin", "SCRIBEPOD_DEVICE": "cpu"}


@contextmanager
def local_endpoint(*args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """`scribepod-worker serve` with tiny.en and `builtin` on a free loopback port; yields its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "scribepod_worker.cli", "serve", "--host", "127.0.0.1", "--port", str(port), *args],
        cwd=ROOT,
        env={**os.environ, **LOCAL_WORKER_ENV, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(f"{base}/health", timeout=120)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)


@contextmanager
def moto_s3_server() -> Iterator[str]:
    """moto's standalone server (a real S3-compatible HTTP endpoint) on a free loopback port."""
    port = free_port()
    command = shutil.which("moto_server") or sys.executable
    args = [command, "-H", "127.0.0.1", "-p", str(port)]
    if command == sys.executable:
        args = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(url)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def capture_server() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """Record every POST (path, body) on loopback and answer 200: stands in for RunPod's job-result webhook."""
    received: list[tuple[str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            received.append((self.path, body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    with serving(Handler) as base:
        yield base, received


class FaultProxy:
    """A loopback HTTP proxy in front of an endpoint that injects planned faults into matching requests.

    `plan(path_prefix, *faults)` queues faults for the next requests whose path starts with the prefix, one fault
    per request, in order. Faults: `("status", code, headers)` answers without forwarding; `("drop",)` closes the
    connection without forwarding; `("drop_after",)` forwards, then closes without answering (the job exists, the
    client cannot know); `("stall", seconds)` waits, then forwards. Every request is recorded in `requests`.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.requests: list[tuple[str, str]] = []
        self._plans: list[tuple[str, list[tuple[Any, ...]]]] = []
        self._lock = threading.Lock()

    def plan(self, path_prefix: str, *faults: tuple[Any, ...]) -> None:
        with self._lock:
            self._plans.append((path_prefix, list(faults)))

    def _next_fault(self, path: str) -> tuple[Any, ...] | None:
        with self._lock:
            for prefix, faults in self._plans:
                if path.startswith(prefix) and faults:
                    return faults.pop(0)
        return None

    def count(self, method: str, path_prefix: str) -> int:
        return sum(1 for m, p in self.requests if m == method and p.startswith(path_prefix))

    @contextmanager
    def running(self) -> Iterator[str]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                proxy.requests.append((self.command, self.path))
                fault = proxy._next_fault(self.path)
                if fault and fault[0] == "status":
                    payload = b'{"error": "injected fault"}'
                    self.send_response(fault[1])
                    for name, value in (fault[2] if len(fault) > 2 else {}).items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if fault and fault[0] == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault and fault[0] == "stall":
                    time.sleep(fault[1])
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")}
                upstream = httpx.request(
                    self.command, proxy.upstream + self.path, content=body, headers=headers, timeout=120
                )
                if fault and fault[0] == "drop_after":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.send_response(upstream.status_code)
                self.send_header("Content-Type", upstream.headers.get("content-type", "application/json"))
                self.send_header("Content-Length", str(len(upstream.content)))
                self.end_headers()
                self.wfile.write(upstream.content)

            do_GET = do_POST = _handle  # noqa: N815 (the names http.server dispatches to)

        with serving(Handler) as base:
            yield base
