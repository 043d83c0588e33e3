"""Real local servers for tests: an HTTP(S) file server with misbehaving routes, a recording proxy, moto's S3 server,
the local endpoint, and a webhook catcher."""

from __future__ import annotations

import contextlib
import datetime
import os
import select
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

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
def serving(
    handler: type[BaseHTTPRequestHandler], host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
) -> Iterator[str]:
    """Run `handler` on a free port of `host` (a loopback address) in a background thread, over TLS with `tls`;
    yield its base URL."""
    server = ThreadingHTTPServer((host, 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class FileServer:
    """A running `file_server`: its base URL, the paths it was asked for (with their headers), and when a dripped
    connection ended."""

    base: str
    requests: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    drip_ended: threading.Event = field(default_factory=threading.Event)


@contextmanager
def file_server(files: dict[str, Path], host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """`recording_file_server`, yielding only its base URL."""
    with recording_file_server(files, host, tls) as server:
        yield server.base


@contextmanager
def recording_file_server(
    files: dict[str, Path], host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
) -> Iterator[FileServer]:
    """Serve `files` by name on loopback, plus misbehaving routes: /redirect/<name>, /bounce?to=<url> (302 to any
    URL), /slow (stalls), /huge (claims 10 GB), /drip[/...] (a body byte a second) and /drip-headers[/...] (a header
    byte a second), the drips until the client goes away, /echo and /echo-reason (the request line sent back as the
    status line or as the reason phrase), and /regional/<name>, an S3 bucket in eu-west-1 that answers a presigned
    GET signed for another region as S3 does (400 naming the bucket's region)."""
    served = FileServer(base="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            served.requests.append(self.path)
            served.headers.append(dict(self.headers))
            name, _, query = self.path.lstrip("/").partition("?")
            route, _, rest = name.partition("/")
            if name.startswith("redirect/"):
                self.send_response(302)
                self.send_header("Location", "/" + name.removeprefix("redirect/"))
                self.end_headers()
            elif name == "bounce":
                self.send_response(302)
                self.send_header("Location", parse_qs(query)["to"][0])
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
            elif route == "drip":
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                self._drip(b"\0" * 100000)
            elif route == "echo":  # our request line as the status line: not HTTP, and it quotes the URL
                self.wfile.write(self.requestline.encode() + b"\r\n\r\n")
                self.close_connection = True
            elif route == "echo-reason":  # our request line as the reason phrase
                self.wfile.write(b"HTTP/1.1 404 " + self.requestline.encode() + b"\r\nContent-Length: 0\r\n\r\n")
            elif route == "drip-headers":
                self._drip(b"HTTP/1.1 200 OK\r\nX-Padding: " + b"a" * 100000)
            elif route == "regional" and "/eu-west-1/" not in parse_qs(query).get("X-Amz-Credential", [""])[0]:
                error = b"<Error><Code>AuthorizationQueryParametersError</Code><Region>eu-west-1</Region></Error>"
                self.send_response(400)
                self.send_header("x-amz-bucket-region", "eu-west-1")
                self.send_header("Content-Length", str(len(error)))
                self.end_headers()
                self.wfile.write(error)
            elif name in files or (route == "regional" and rest in files):
                data = files[rest if route == "regional" else name].read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                with contextlib.suppress(ConnectionError):  # a client that stops reading at its cap
                    self.wfile.write(data)
            else:
                self.send_error(404, "Not Found")

        def _drip(self, data: bytes) -> None:
            """Send `data` a byte a second until the client closes its end (readable with nothing to read)."""
            self.wfile.flush()
            self.close_connection = True
            for byte in data:
                try:
                    self.connection.sendall(bytes([byte]))
                except OSError:
                    break
                readable, _, _ = select.select([self.connection], [], [], 1.0)
                if readable:
                    break
            served.drip_ended.set()

    with serving(Handler, host, tls) as base:
        served.base = base
        yield served


def tls_for_localhost(folder: Path) -> tuple[Path, ssl.SSLContext]:
    """A throwaway CA (its certificate written to `folder`) and a server context whose certificate it signed for the
    name `localhost` only, not for 127.0.0.1: a client that checks the name it asked for is told apart from one that
    checks the address it reached."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def certificate(
        subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, signer: ec.EllipticCurvePrivateKey, ca: bool
    ) -> x509.Certificate:
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_file, chain_file = folder / "ca.pem", folder / "server.pem"
    ca_file.write_bytes(
        certificate("test CA", ca_key, "test CA", ca_key, ca=True).public_bytes(serialization.Encoding.PEM)
    )
    chain_file.write_bytes(
        certificate("localhost", server_key, "test CA", ca_key, ca=False).public_bytes(serialization.Encoding.PEM)
        + server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain_file)
    return ca_file, context


ROOT = Path(__file__).resolve().parent.parent
LOCAL_WORKER_ENV = {"SCRIBEPOD_MODEL": "tiny.en", "SCRIBEPOD_DIARIZER": "builtin", "SCRIBEPOD_DEVICE": "cpu"}


@contextmanager
def _worker_process(
    command: list[str], port: int, ready_path: str, env: dict[str, str] | None, log: Path | None = None
) -> Iterator[str]:
    """A worker command (tiny.en, `builtin`) listening on `port`: its base URL once `ready_path` answers. `log`
    receives its stdout and stderr (else they are discarded)."""
    with Path(log or os.devnull).open("wb") as output:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **LOCAL_WORKER_ENV, **(env or {})},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for(f"{base}{ready_path}", timeout=120)
            yield base
        finally:
            process.terminate()
            process.wait(timeout=20)


@contextmanager
def local_endpoint(*args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """`scribepod-worker serve` with tiny.en and `builtin` on a free loopback port; yields its base URL."""
    port = free_port()
    state = tempfile.mkdtemp(prefix="endpoint-state-")  # each endpoint its own job database
    command = [sys.executable, "-m", "scribepod_worker.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    try:
        with _worker_process([*command, "--state-dir", state, *args], port, "/health", env) as base:
            yield base
    finally:
        shutil.rmtree(state, ignore_errors=True)


@contextmanager
def runpod_dev_server(env: dict[str, str] | None = None, log: Path | None = None) -> Iterator[str]:
    """The worker under runpod-python's own development server (`--rp_serve_api`), tiny.en and `builtin`."""
    port = free_port()
    command = [sys.executable, "-m", "scribepod_worker", "--rp_serve_api", "--rp_api_host", "127.0.0.1"]
    with _worker_process([*command, "--rp_api_port", str(port)], port, "/docs", env, log) as base:
        yield base


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


@contextmanager
def recording_proxy(upstream: str) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """Forward every request to `upstream` on a loopback port and record its (method, path): shows whether anything
    reached the upstream. Yields the proxy's base URL and the record."""
    received: list[tuple[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _forward(self) -> None:
            received.append((self.command, self.path))
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {name: value for name, value in self.headers.items() if name.lower() != "host"}
            answer = httpx.request(self.command, upstream + self.path, content=body, headers=headers, timeout=30)
            self.send_response(answer.status_code)
            for name, value in answer.headers.items():
                if name.lower() not in ("content-length", "content-encoding", "transfer-encoding", "connection"):
                    self.send_header(name, value)
            length = answer.headers.get("content-length", "0") if self.command == "HEAD" else len(answer.content)
            self.send_header("Content-Length", str(length))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer.content)

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward  # noqa: N815 (the names http.server calls)

    with serving(Handler) as base:
        yield base, received
