"""`scribepod-worker serve`: RunPod's serverless REST API on a local port, running the real handler.

What the SDK's tests talk to and what a backend developer runs to work offline: the routes, bodies and job states
of api.runpod.ai/v2/{endpoint_id}/..., served at `/` and at `/v2/{endpoint_id}/`. One process, a fixed number of
worker threads. Webhooks are sent, and results are kept and policies bounded as on RunPod. Jobs are kept in a SQLite
file in `--state-dir` and survive a crash; how, how cancelled and timed-out jobs stop, and which reading of RunPod's
docs is served where they leave room, is in `endpoint/jobs.py`; what the state directory holds is in
`endpoint/state.py`.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import uvicorn

from scribepod_worker import handler
from scribepod_worker.config import WorkerSettings
from scribepod_worker.endpoint.app import create_app
from scribepod_worker.endpoint.jobs import RUN_RESULT_TTL_S, RUNSYNC_RESULT_TTL_S, WEBHOOK_RETRY_DELAY_S, JobStore
from scribepod_worker.endpoint.state import StateDir, StateDirInUse, default_state_dir
from scribepod_worker.engine import Engine
from scribepod_worker.errors import WorkerError
from scribepod_worker.handler import UpdateCallback
from scribepod_worker.logs import configure_logging
from scribepod_worker.stop import StopSignal
from scribepod_worker.transcribe import MISSING_MODEL_FIX

log = logging.getLogger("scribepod_worker")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scribepod-worker serve", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on; 0 picks a free one")
    parser.add_argument(
        "--concurrency", type=_positive_int, default=1, help="jobs run at once (default 1: one engine holds the models)"
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("SCRIBEPOD_API_KEY") or None,
        help="require this key in `Authorization` (Bearer or bare), as RunPod does; default: $SCRIBEPOD_API_KEY",
    )
    parser.add_argument(
        "--result-ttl",
        type=_positive_float,
        default=RUN_RESULT_TTL_S,
        help="seconds a finished /run job's result is kept (default: RunPod's 30 min)",
    )
    parser.add_argument(
        "--sync-result-ttl",
        type=_positive_float,
        default=RUNSYNC_RESULT_TTL_S,
        help="seconds a finished /runsync job's result is kept (default: RunPod's 60)",
    )
    parser.add_argument(
        "--webhook-retry-delay",
        type=_positive_float,
        default=WEBHOOK_RETRY_DELAY_S,
        help="seconds between the 3 attempts to deliver a webhook (default: RunPod's 10)",
    )
    parser.add_argument(
        "--execution-timeout",
        type=float,
        default=600.0,
        help="seconds a job may run when its policy sets no executionTimeout; 0 for none (default: RunPod's 600)",
    )
    parser.add_argument("--endpoint-id", default=None, help="accept only this id under /v2/{id}/ (default: any)")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=default_state_dir(),
        help="where the job database lives; one serve process per directory (default: %(default)s)",
    )
    parser.add_argument(
        "--max-queue", type=_positive_int, default=1000, help="jobs that may wait; beyond, 429 (default: %(default)s)"
    )
    parser.add_argument(
        "--max-attempts",
        type=_positive_int,
        default=3,
        help="runs of a job the endpoint may die during before the job fails instead (default: %(default)s)",
    )
    parser.add_argument(
        "--allow-local-files",
        action="store_true",
        help="let jobs name files on this machine as `audio` (off by default: a caller could read any file)",
    )
    return parser.parse_args(argv)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def build_engine(*, allow_local_files: bool) -> Engine:
    """Load the models once, before the first request. A model or diarizer that cannot load ends the start here,
    saying what is present and how to fix it: an endpoint that says "listening" and then fails every job is worse."""
    settings = WorkerSettings.from_env()
    engine = Engine(dataclasses.replace(settings, allow_local_files=True) if allow_local_files else settings)
    try:
        engine.warm_up()
    except WorkerError as error:
        fix = MISSING_MODEL_FIX if error.field == "model" else "see the README, 'Diarizers'"
        raise SystemExit(f"scribepod-worker serve: cannot start: {error.message}; {fix}") from None
    return engine


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    configure_logging(args.api_key)
    try:
        serve(args)
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown; Ctrl-C during warm-up too
        print("scribepod endpoint stopped", flush=True)


def serve(args: argparse.Namespace) -> None:
    """Take the state directory, warm the engine up, then serve until Ctrl-C or SIGTERM (SIGTERM ends the process
    with that signal's status)."""
    if not args.api_key and not is_loopback(args.host):
        log.warning(
            "serving on %s without an API key: anyone who can reach this address can run jobs and read results;"
            " set --api-key or $SCRIBEPOD_API_KEY",
            args.host,
        )
    state = StateDir(args.state_dir)
    try:
        state.acquire()
    except StateDirInUse as error:
        sys.exit(f"scribepod-worker serve: {error}")
    swept = state.sweep_workdir()
    if swept:
        log.info("removed %d temporary folders left by a previous run", swept)
    tempfile.tempdir = str(state.workdir)  # jobs' temporary files go where the next start can sweep them
    handler.set_engine(build_engine(allow_local_files=args.allow_local_files))

    def handle(job: dict[str, Any], updates: UpdateCallback, stop: StopSignal) -> dict[str, Any]:
        state.ensure_workdir()
        return handler.handle(job, updates, stop)

    store = JobStore(
        handle,
        database=state.database,
        concurrency=args.concurrency,
        result_ttl_s=args.result_ttl,
        sync_result_ttl_s=args.sync_result_ttl,
        execution_timeout_s=args.execution_timeout or None,
        max_queue=args.max_queue,
        max_attempts=args.max_attempts,
        webhook_retry_delay_s=args.webhook_retry_delay,
    )
    app = create_app(
        store,
        api_key=args.api_key,
        endpoint_id=args.endpoint_id,
        on_ready=lambda: print(f"scribepod endpoint listening on {where}", flush=True),  # `where` is set below
        on_closed=state.release,  # here: uvicorn ends a SIGTERM by raising it again, before any `finally` of ours
    )
    # Graceful shutdown waits at most 5 s for open requests (a /runsync may be waiting for minutes).
    config = uvicorn.Config(
        app, host=args.host, port=args.port, access_log=False, log_level="warning", timeout_graceful_shutdown=5
    )
    sock = config.bind_socket()  # bound here so the announcement can name the real port, even for --port 0
    host, port = sock.getsockname()[:2]
    auth = "API key required" if args.api_key else "no API key"
    where = f"http://{host}:{port} (and /v2/{args.endpoint_id or '<any id>'}/...; {auth})"
    uvicorn.Server(config).run(sockets=[sock])


def is_loopback(host: str) -> bool:
    """Whether `host` only listens on this machine: `localhost` or a loopback address (0.0.0.0 and :: are not)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name that could resolve to anything
