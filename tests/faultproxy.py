"""A fault-injecting HTTP proxy on loopback, in front of a real endpoint.

It forwards each request to the upstream and can, per request, fail it the ways a gateway or a network does:
answer before forwarding (RunPod's 429: nothing was queued), lose the upstream's answer and send a 502/503/504
instead (the job exists; the client cannot know), reset the connection before or after forwarding, delay the
request, or hold the answer. It records every request and the job ids the upstream created, so a test can count
jobs against submissions without trusting the client.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

import httpx

FaultKind = Literal["reject", "lose_answer", "reset_before", "reset_after", "delay", "hold"]


@dataclass(frozen=True)
class Fault:
    """What to do to one request. Build with the functions below."""

    kind: FaultKind
    status: int = 0
    seconds: float = 0.0
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def forwards(self) -> bool:
        return self.kind not in ("reject", "reset_before")


def reject(status: int, **headers: str) -> Fault:
    """Answer `status` without forwarding (a rate limit, a gateway that could not reach the API)."""
    return Fault("reject", status=status, headers=tuple((name.replace("_", "-"), v) for name, v in headers.items()))


def lose_answer(status: int) -> Fault:
    """Forward, then answer `status` instead of the upstream's answer (a proxy timing out on a slow API)."""
    return Fault("lose_answer", status=status)


def reset_before() -> Fault:
    """Reset the connection (TCP RST) without forwarding."""
    return Fault("reset_before")


def reset_after() -> Fault:
    """Forward, then reset the connection instead of answering."""
    return Fault("reset_after")


def delay(seconds: float) -> Fault:
    """Wait, then forward and answer normally."""
    return Fault("delay", seconds=seconds)


def hold(seconds: float) -> Fault:
    """Forward at once, then hold the upstream's answer for `seconds` (an endpoint answering late)."""
    return Fault("hold", seconds=seconds)


@dataclass(frozen=True)
class Request:
    """One request as the proxy saw it; `job_id` is the id the upstream answered with, if it was forwarded."""

    method: str
    path: str
    fault: Fault | None
    upstream_status: int | None = None
    job_id: str | None = None


Decide = Callable[[str, str], Fault | None]
"""Chooses the fault for a request from its method and path (with query); None forwards it untouched."""


@dataclass
class _Rule:
    method: str
    path_prefix: str
    decide: Decide


@dataclass
class FaultProxy:
    """Forwards to `upstream`; `plan` and `rule` say which requests to fail and how."""

    upstream: str
    requests: list[Request] = field(default_factory=list)
    _rules: list[_Rule] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def plan(self, method: str, path_prefix: str, *faults: Fault | None) -> None:
        """The next matching requests get these faults, one each, in order (None: forwarded untouched)."""
        queue = list(faults)

        def next_fault(_method: str, _path: str) -> Fault | None:
            return queue.pop(0) if queue else None

        self.rule(method, path_prefix, next_fault)

    def rule(self, method: str, path_prefix: str, decide: Decide) -> None:
        """Every matching request gets `decide(method, path)`. The first rule that matches decides."""
        with self._lock:
            self._rules.append(_Rule(method, path_prefix, decide))

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def count(self, method: str, path_prefix: str) -> int:
        """Requests received (forwarded or not) for this method and path prefix."""
        with self._lock:
            return sum(1 for r in self.requests if r.method == method and r.path.startswith(path_prefix))

    def created_jobs(self) -> list[str]:
        """Ids of the jobs the upstream created through this proxy (from /run and /runsync answers it received,
        including those it then replaced with a fault)."""
        with self._lock:
            return [
                r.job_id
                for r in self.requests
                if r.job_id is not None and r.method == "POST" and r.path.split("?")[0].endswith(("/run", "/runsync"))
            ]

    def _fault_for(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for rule in self._rules:
                if rule.method == method and path.startswith(rule.path_prefix):
                    return rule.decide(method, path)
        return None

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    @contextmanager
    def running(self) -> Iterator[str]:
        """Serve on a free loopback port; yields the proxy's base URL."""
        proxy = self
        upstream = httpx.Client(base_url=self.upstream.rstrip("/"), timeout=httpx.Timeout(30.0, read=600.0))

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _reset(self) -> None:
                """Close with RST (SO_LINGER 0), as a crashed or cut connection looks to the client."""
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()

            def _answer(self, status: int, body: bytes, headers: tuple[tuple[str, str], ...] = ()) -> None:
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                fault = proxy._fault_for(self.command, self.path)
                if fault is not None and fault.kind == "reject":
                    proxy._record(Request(self.command, self.path, fault))
                    return self._answer(fault.status, b'{"error": "injected fault"}', fault.headers)
                if fault is not None and fault.kind == "reset_before":
                    proxy._record(Request(self.command, self.path, fault))
                    return self._reset()
                if fault is not None and fault.kind == "delay":
                    time.sleep(fault.seconds)
                kept = ("authorization", "content-type", "accept", "user-agent")
                headers = {name: value for name, value in self.headers.items() if name.lower() in kept}
                answer = upstream.request(self.command, self.path, content=body, headers=headers)
                proxy._record(Request(self.command, self.path, fault, answer.status_code, _job_id(answer)))
                if fault is not None and fault.kind == "reset_after":
                    return self._reset()
                if fault is not None and fault.kind == "lose_answer":
                    return self._answer(fault.status, b"<html>upstream answer lost</html>")
                if fault is not None and fault.kind == "hold":
                    time.sleep(fault.seconds)
                self._answer(answer.status_code, answer.content)

            do_GET = do_POST = _handle  # noqa: N815 (the names http.server dispatches to)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()
            upstream.close()


def _job_id(answer: httpx.Response) -> str | None:
    try:
        body = answer.json()
    except ValueError:
        return None
    job_id = body.get("id") if isinstance(body, dict) else None
    return str(job_id) if job_id is not None else None
