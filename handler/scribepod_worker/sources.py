"""Stage 0: turn the request's audio source into a local file, with size caps, time limits and guaranteed cleanup.

Sources: inline base64, http(s) URLs, `s3://bucket/key`, and local paths where the operator allows them. Every
temporary file lives in one directory that is removed on exit, whether the job succeeds, fails or is stopped.

Downloads (URLs and S3 alike) go through httpcore with this module's own network backend: each connection resolves
its host once, checks every address it got, and connects to an address it checked, so a name that answers a public
address to the check and 127.0.0.1 to the connect (DNS rebinding) reaches nothing inside. Redirects are followed
here, each hop through the same backend. A watcher thread ends a download when its total deadline passes or the
job's `StopSignal` is set, by shutting its socket down, which wakes a blocked read at once.

No message repeats a URL, a presigned one, what a server said, or a local path: a URL's password and query can hold
credentials and signatures, a server can echo them back, and a path tells a caller which files exist.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import ipaddress
import re
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from scribepod_worker.config import WorkerSettings
from scribepod_worker.errors import WorkerError
from scribepod_worker.stop import StopSignal

_MAX_REDIRECTS = 5
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_WATCH_INTERVAL_S = 0.1  # how often the watcher looks at the deadline and the stop signal
_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")
_ERROR_BODY_BYTES = 16 * 1024  # enough for an S3 error document
_PRESIGNED_URL_LIFETIME_S = 900  # checked by S3 when the request starts, not while the body streams

# Where an IPv6 address carries an IPv4 one that a gateway may reach for us, that IPv4 is what must be public: the
# IPv4-mapped form (a dual-stack socket connects to the IPv4) and the well-known NAT64 prefix (DNS64 answers these on
# IPv6-only networks, so refusing them outright would stop such a worker from fetching anything).
_WELL_KNOWN_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Refused outright: local-use NAT64 (RFC 8215; by definition inside someone's network, and where its IPv4 sits depends
# on the operator's prefix length), 6to4 (deprecated by RFC 7526) and Teredo (the client address is obfuscated and
# the relay is someone else's). No audio host needs them; each can carry a loopback or private IPv4. The deprecated
# IPv4-compatible form (::a.b.c.d) lies in ::/8, which `is_reserved` already refuses.
_REFUSED_IPV6 = tuple(ipaddress.IPv6Network(net) for net in ("64:ff9b:1::/48", "2002::/16", "2001::/32"))
# Not public, though the `ipaddress` of Python 3.11 counts them global (later versions fixed its tables): IETF
# protocol assignments (192.0.0.0/24: NAT64 discovery, DS-Lite, PCP anycast, ...), the deprecated site-local fec0::/10
# (feff:: included) and the documentation range 3fff::/20 (RFC 9637).
_REFUSED_IPV4 = (ipaddress.IPv4Network("192.0.0.0/24"),)
_REFUSED_IPV6 += tuple(ipaddress.IPv6Network(net) for net in ("fec0::/10", "3fff::/20"))


@contextlib.contextmanager
def materialize(
    *,
    audio: str | None,
    audio_base64: str | None,
    settings: WorkerSettings,
    s3_config: Mapping[str, Any] | None = None,
    stop: StopSignal | None = None,
) -> Iterator[Path]:
    """Yield a readable local file holding the job's audio; temporary copies are deleted afterwards.

    A download that outlives `settings.fetch_deadline_s` fails with `audio_fetch_failed`; one whose `stop` is set
    raises `JobStopped` within about a second.
    """
    workdir = Path(tempfile.mkdtemp(prefix="scribepod-"))
    try:
        if audio_base64 is not None:
            yield _write_base64(audio_base64, workdir / "audio", settings)
        elif audio is not None:
            yield _fetch(audio, workdir / "audio", settings, s3_config, stop)
        else:
            raise WorkerError("invalid_input", "give exactly one of `audio` and `audio_base64`", "audio")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _write_base64(data: str, target: Path, settings: WorkerSettings) -> Path:
    if data.startswith("data:"):
        _, _, data = data.partition(",")
    data = "".join(data.split())
    if len(data) * 3 // 4 > settings.max_base64_bytes:
        raise WorkerError(
            "invalid_input",
            f"audio_base64 holds about {len(data) * 3 // 4} bytes; this worker accepts at most "
            f"{settings.max_base64_bytes} inline (send a URL or s3:// URI instead)",
            "audio_base64",
        )
    # Either alphabet (standard or URL-safe), padding optional; anything else is refused, not skipped over (a
    # lenient decoder turns "****" into zero bytes, which then reads as a decode failure rather than bad input).
    standard = data.translate(_URLSAFE_TO_STANDARD)
    if not standard.endswith("="):
        standard += "=" * (-len(standard) % 4)
    try:
        raw = base64.b64decode(standard, validate=True)
    except (binascii.Error, ValueError) as error:
        raise WorkerError("invalid_input", f"audio_base64 is not valid base64: {error}", "audio_base64") from None
    if not raw:
        raise WorkerError("invalid_input", "audio_base64 is empty", "audio_base64")
    target.write_bytes(raw)
    return target


def _fetch(
    source: str,
    target: Path,
    settings: WorkerSettings,
    s3_config: Mapping[str, Any] | None,
    stop: StopSignal | None,
) -> Path:
    scheme_match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*):", source)
    scheme = scheme_match.group(1).lower() if scheme_match else ""
    if scheme in ("http", "https"):
        url = _parse_http_url(source, "audio")
        with _Download(settings, stop) as download:
            refused = download.get(url, target, field="audio", allow_private=settings.allow_private_urls)
        if refused is not None:
            raise WorkerError("audio_fetch_failed", f"audio: GET returned HTTP {_status_text(refused.status)}", "audio")
        return target
    if scheme == "s3":
        _download_s3(source, target, settings, s3_config, stop)
        return target
    if len(scheme) > 1:  # "c:" is a Windows drive, not a scheme
        raise WorkerError("invalid_input", f"audio: unsupported URL scheme {scheme!r} (use https, http or s3)", "audio")
    if not settings.allow_local_files:
        raise WorkerError(
            "invalid_input",
            "audio must be an http(s) URL or an s3:// URI; local file paths are disabled on this worker",
            "audio",
        )
    return _local_file(source)


def _local_file(source: str) -> Path:
    """The path if it is a regular file this process can open; one answer for every other case (missing, unreadable,
    a directory, a device, a name too long), so that a job cannot probe which files exist."""
    try:
        path = Path(source).expanduser()
        if path.is_file():
            with path.open("rb"):
                return path
    except (OSError, ValueError, RuntimeError):  # RuntimeError: expanduser of an unknown ~user
        pass
    raise WorkerError("audio_fetch_failed", "audio: cannot read a regular file at the local path given", "audio")


def _parse_http_url(url: str, field: str) -> httpx.URL:
    """httpx's parser (IDNA, percent-encoding, IPv6 brackets); the message never repeats the URL."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise WorkerError("invalid_input", f"{field}: not a valid URL", field) from None
    if parsed.scheme not in ("http", "https") or not parsed.raw_host:
        raise WorkerError("invalid_input", f"{field}: must be an http(s) URL with a host", field)
    return parsed


def is_public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True only for an address on the public internet, in every spelling (see `_WELL_KNOWN_NAT64`)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped
        if embedded is None and address in _WELL_KNOWN_NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public_address(embedded)
        if any(address in network for network in _REFUSED_IPV6):
            return False
    elif any(address in network for network in _REFUSED_IPV4):
        return False
    return address.is_global and not (
        address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or address.is_loopback
        or address.is_link_local
        or address.is_private
    )


@dataclass(frozen=True)
class _Refused:
    """A final answer other than 200 OK (the body's first bytes, for S3's error document)."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class _Download:
    """One download's limits, across all its connections and redirects: the total deadline, the job's stop signal,
    and the sockets the watcher shuts down when either ends it."""

    def __init__(self, settings: WorkerSettings, stop: StopSignal | None) -> None:
        self.settings = settings
        self._stop = stop
        self._deadline = time.monotonic() + settings.fetch_deadline_s
        self._finished = threading.Event()
        self._lock = threading.Lock()
        self._watched: list[socket.socket] = []
        self._ended = False
        self._watcher = threading.Thread(target=self._watch, name="scribepod-download-watch", daemon=True)

    def __enter__(self) -> _Download:
        self.check()
        self._watcher.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._finished.set()
        self._watcher.join()
        with self._lock:
            for watched in self._watched:
                watched.close()
            self._watched.clear()

    def check(self) -> None:
        """Raise `JobStopped` if the job was stopped, or `audio_fetch_failed` once the deadline has passed."""
        if self._stop is not None:
            self._stop.check()
        if time.monotonic() >= self._deadline:
            raise WorkerError(
                "audio_fetch_failed",
                f"audio: download took longer than this worker's limit of {self.settings.fetch_deadline_s:g} s "
                "(SCRIBEPOD_FETCH_DEADLINE)",
                "audio",
            )

    def remaining_s(self) -> float:
        return max(0.0, self._deadline - time.monotonic())

    def watch(self, sock: socket.socket) -> socket.socket:
        """Keep a duplicate of `sock` to shut down: it survives TLS wrapping, and shutting it down ends the
        connection under whatever object reads from it."""
        duplicate = sock.dup()
        with self._lock:
            self._watched.append(duplicate)
            if self._ended:
                _shut_down(duplicate)
        return duplicate

    def release(self, duplicate: socket.socket) -> None:
        with self._lock:
            if duplicate in self._watched:
                self._watched.remove(duplicate)
                duplicate.close()

    def _watch(self) -> None:
        while not self._finished.wait(_WATCH_INTERVAL_S):
            if (self._stop is not None and self._stop.is_set) or time.monotonic() >= self._deadline:
                with self._lock:
                    self._ended = True
                    for watched in self._watched:
                        _shut_down(watched)
                return

    def resolve(self, host: str, port: int) -> list[tuple[Any, ...]]:
        """getaddrinfo on a helper thread, so that a resolver that hangs cannot hold a stopped or late job."""
        answer: list[list[tuple[Any, ...]] | BaseException] = []

        def lookup() -> None:
            try:
                answer.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
            except (OSError, ValueError) as error:  # ValueError: an IDNA label too long
                answer.append(error)

        resolver = threading.Thread(target=lookup, name="scribepod-resolve", daemon=True)
        resolver.start()
        while resolver.is_alive():
            resolver.join(_WATCH_INTERVAL_S)
            self.check()
        if isinstance(answer[0], BaseException):
            raise answer[0]
        return answer[0]

    def get(
        self, url: httpx.URL, target: Path, *, field: str, allow_private: bool, redirects: bool = True
    ) -> _Refused | None:
        """GET `url` into `target` (None), or return the final answer other than 200 OK. `field` names the URL's
        origin in address errors; transfer errors name `audio`."""
        origin = (url.scheme, url.raw_host, url.port)
        credentials = _basic_credentials(url)
        timeout = self.settings.fetch_timeout_s
        timeouts = {"connect": min(10.0, timeout), "read": timeout, "write": timeout, "pool": timeout}
        followed = 0
        try:
            while True:
                headers = [
                    (b"Host", url.netloc),
                    (b"Accept-Encoding", b"identity"),
                    (b"User-Agent", b"scribepod-worker"),
                ]
                if credentials and (url.scheme, url.raw_host, url.port) == origin:
                    headers.append((b"Authorization", credentials))
                request_url = httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path)
                backend = _PinnedBackend(self, field, allow_private)
                with (
                    httpcore.ConnectionPool(ssl_context=_tls_context(), network_backend=backend) as pool,
                    pool.stream("GET", request_url, headers=headers, extensions={"timeout": timeouts}) as response,
                ):
                    location = _header(response, "location")
                    if redirects and response.status in _REDIRECT_STATUSES and location:
                        if followed == _MAX_REDIRECTS:
                            raise WorkerError(
                                "audio_fetch_failed", f"audio: more than {_MAX_REDIRECTS} redirects", "audio"
                            )
                        followed += 1
                        url = _redirect_target(url, location)
                        continue
                    if response.status != 200:
                        return self._refusal(response)
                    self._save(response, target)
                    return None
        except httpcore.TimeoutException:
            self.check()
            raise WorkerError(
                "audio_fetch_failed",
                f"audio: download timed out (no data for {timeout:g} s; SCRIBEPOD_FETCH_TIMEOUT)",
                "audio",
            ) from None
        except httpcore.NetworkError as error:  # the operating system's or TLS's words, or this module's own
            self.check()
            raise WorkerError("audio_fetch_failed", f"audio: download failed: {error}", "audio") from None
        except httpcore.ProtocolError:  # h11 quotes what the server sent, which may echo our request line
            self.check()
            raise WorkerError("audio_fetch_failed", "audio: the server's answer is not valid HTTP", "audio") from None

    def _save(self, response: httpcore.Response, target: Path) -> None:
        cap = self.settings.max_download_bytes
        declared = _header(response, "content-length") or ""
        if declared.isdigit() and int(declared) > cap:
            raise WorkerError(
                "audio_fetch_failed", f"audio: {declared} bytes is over this worker's cap of {cap}", "audio"
            )
        received = 0
        with target.open("wb") as out:
            for chunk in response.iter_stream():
                self.check()
                received += len(chunk)
                if received > cap:
                    raise WorkerError(
                        "audio_fetch_failed", f"audio: download passed this worker's cap of {cap} bytes", "audio"
                    )
                out.write(chunk)
        # A body without a length ends at EOF, which a watcher's shutdown also produces: it is not the whole file.
        self.check()

    def _refusal(self, response: httpcore.Response) -> _Refused:
        body = b""
        for chunk in response.iter_stream():
            self.check()
            body += chunk
            if len(body) >= _ERROR_BODY_BYTES:
                break
        return _Refused(
            status=response.status,
            headers={name.decode("latin-1").lower(): value.decode("latin-1") for name, value in response.headers},
            body=body[:_ERROR_BODY_BYTES],
        )


def _status_text(status: int) -> str:
    """`404 Not Found`: the standard phrase, not the server's, which could say anything (our URL included)."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def _shut_down(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # not connected yet, or already gone
        sock.shutdown(socket.SHUT_RDWR)


def _header(response: httpcore.Response, name: str) -> str | None:
    for key, value in response.headers:
        if key.decode("latin-1").lower() == name:
            return value.decode("latin-1")
    return None


def _basic_credentials(url: httpx.URL) -> bytes | None:
    """The Authorization value for a URL's `user:password@`, sent only to that URL's own origin."""
    if not url.username and not url.password:
        return None
    return b"Basic " + base64.b64encode(f"{url.username}:{url.password}".encode())


def _redirect_target(url: httpx.URL, location: str) -> httpx.URL:
    try:
        target = url.join(location)
    except httpx.InvalidURL:
        raise WorkerError("audio_fetch_failed", "audio: the server redirected to an invalid URL", "audio") from None
    if target.scheme not in ("http", "https") or not target.raw_host:
        raise WorkerError("audio_fetch_failed", "audio: the server redirected to a non-http(s) URL; refused", "audio")
    return target


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """Certificate checks against the host name (httpcore passes it as server_hostname), built once per process."""
    return httpx.create_ssl_context()


class _PinnedBackend(httpcore.NetworkBackend):
    """Connects only to addresses it checked: one resolution per connection, every address checked, then a
    connection to one of those addresses (no second lookup that a rebinding name could answer differently)."""

    def __init__(self, download: _Download, field: str, allow_private: bool) -> None:
        self._download = download
        self._field = field
        self._allow_private = allow_private

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        field = self._field
        try:
            infos = self._download.resolve(host, port)
        except (OSError, ValueError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else "invalid host name"
            raise WorkerError("audio_fetch_failed", f"{field}: cannot resolve host {host!r}: {reason}", field) from None
        if not self._allow_private:
            for info in infos:
                address = ipaddress.ip_address(str(info[4][0]).partition("%")[0])
                if not is_public_address(address):
                    raise WorkerError(
                        "audio_fetch_failed",
                        f"{field}: host {host!r} resolves to a non-public address ({address}); refused "
                        "(set SCRIBEPOD_ALLOW_PRIVATE_URLS=1 to allow it)",
                        field,
                    )
        failure: OSError = ConnectionError("no address to connect to")
        for family, kind, proto, _, address in infos:
            try:
                sock = socket.socket(family, kind, proto)
            except OSError as error:  # an address family this host lacks
                failure = error
                continue
            watched = self._download.watch(sock)
            try:
                sock.settimeout(min(timeout, self._download.remaining_s()) if timeout else self._download.remaining_s())
                sock.connect(address)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError as error:
                sock.close()
                self._download.release(watched)
                self._download.check()
                failure = error
                continue
            return _PinnedStream(sock, watched, self._download)
        if isinstance(failure, TimeoutError):
            raise httpcore.ConnectTimeout(f"connecting to {host!r} timed out")
        raise httpcore.ConnectError(f"cannot connect to {host!r}: {failure.strerror or failure}")


class _PinnedStream(httpcore.NetworkStream):
    """A connected socket (plain or TLS) for httpcore, mapping socket errors to httpcore's, as its own backend does."""

    def __init__(self, sock: socket.socket, watched: socket.socket, download: _Download) -> None:
        self._sock = sock
        self._watched = watched
        self._download = download

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            self._sock.settimeout(timeout)
            return self._sock.recv(max_bytes)
        except TimeoutError as error:
            raise httpcore.ReadTimeout(str(error)) from error
        except OSError as error:
            raise httpcore.ReadError(str(error)) from error

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        try:
            self._sock.settimeout(timeout)
            self._sock.sendall(buffer)
        except TimeoutError as error:
            raise httpcore.WriteTimeout(str(error)) from error
        except OSError as error:
            raise httpcore.WriteError(str(error)) from error

    def close(self) -> None:
        self._sock.close()
        self._download.release(self._watched)

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        try:
            self._sock.settimeout(timeout)
            tls = ssl_context.wrap_socket(self._sock, server_hostname=server_hostname)
        except TimeoutError as error:
            self.close()
            raise httpcore.ConnectTimeout(str(error)) from error
        except OSError as error:
            self.close()
            raise httpcore.ConnectError(str(error)) from error
        return _PinnedStream(tls, self._watched, self._download)

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object" and isinstance(self._sock, ssl.SSLSocket):
            return self._sock  # httpcore asks it for selected_alpn_protocol(), which SSLSocket has
        if info == "socket":
            return self._sock
        return None


_S3_REASONS = {"NoSuchKey": "not found", "NoSuchBucket": "bucket not found", "AccessDenied": "access denied"}
_S3_STATUS_REASONS = {404: "not found", 403: "access denied"}


def _download_s3(
    uri: str,
    target: Path,
    settings: WorkerSettings,
    s3_config: Mapping[str, Any] | None,
    stop: StopSignal | None,
) -> None:
    """Presign a GET with boto3 (local, no network) and fetch it like any URL: pinned, capped, deadline-bound and
    stoppable. Credentials come from the job's `s3Config` (RunPod's accessId/accessSecret/endpointUrl) or boto3's
    defaults. A job's own endpointUrl must be public like any URL a job sends; the operator's may be private."""
    parts = urlsplit(uri)
    bucket, key = parts.netloc, parts.path.lstrip("/")
    if not bucket or not key:
        raise WorkerError("invalid_input", "audio: expected s3://bucket/key", "audio")
    config = dict(s3_config or {})
    for name in ("accessId", "accessSecret", "endpointUrl", "region"):
        if config.get(name) is not None and not isinstance(config[name], str):
            raise WorkerError("invalid_input", f"s3Config.{name} must be a string", f"s3Config.{name}")
    endpoint = settings.s3_endpoint_url  # the operator's, trusted (MinIO on the worker's network); None: AWS
    field, allow_private = "audio", settings.allow_private_urls or bool(endpoint)
    if config.get("endpointUrl"):
        endpoint = str(config["endpointUrl"])
        _parse_http_url(endpoint, "s3Config.endpointUrl")
        field, allow_private = "s3Config.endpointUrl", settings.allow_private_urls
    region = config.get("region") or None
    with _Download(settings, stop) as download:

        def get_signed_for(signing_region: str | None) -> _Refused | None:
            url = _presign(bucket, key, config, endpoint, signing_region)
            return download.get(url, target, field=field, allow_private=allow_private, redirects=False)

        refused = get_signed_for(region)
        if refused is not None and refused.status in (301, 400):
            # A bucket in another region than the one signed for: sign again for the region S3 names, as boto3 does.
            bucket_region = refused.headers.get("x-amz-bucket-region") or _xml_value(refused.body, "Region")
            if bucket_region and bucket_region != region:
                refused = get_signed_for(bucket_region)
    if refused is None:
        return
    code = _xml_value(refused.body, "Code")
    reason = _S3_REASONS.get(code or "") or _S3_STATUS_REASONS.get(refused.status)
    if reason is None:
        reason = f"could not be read (HTTP {refused.status}{f' {code}' if code else ''})"
    raise WorkerError("audio_fetch_failed", f"audio: s3 object s3://{bucket}/{key} {reason}", "audio")


def _presign(bucket: str, key: str, config: Mapping[str, Any], endpoint: str | None, region: str | None) -> httpx.URL:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client = boto3.client(
            "s3",
            aws_access_key_id=config.get("accessId") or None,
            aws_secret_access_key=config.get("accessSecret") or None,
            endpoint_url=endpoint,
            region_name=region,
            config=Config(signature_version="s3v4"),
        )
        url = client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=_PRESIGNED_URL_LIFETIME_S
        )
    except (BotoCoreError, ClientError) as error:  # no credentials, an invalid bucket name: botocore's words
        raise WorkerError("audio_fetch_failed", f"audio: cannot sign the s3 request: {error}", "audio") from None
    except ValueError:  # botocore's text quotes the endpoint, which may hold a password
        raise WorkerError(
            "audio_fetch_failed", "audio: cannot sign the s3 request for that endpoint", "audio"
        ) from None
    return httpx.URL(url)


def _xml_value(document: bytes, element: str) -> str | None:
    """One simple element of S3's error document (`Code`, `Region`): letters, digits and dashes only, so that
    nothing else it echoes (a string-to-sign, an access key id) reaches a message."""
    found = re.search(rb"<%s>([A-Za-z0-9-]{1,64})</%s>" % (element.encode(), element.encode()), document)
    return found.group(1).decode() if found else None
