"""`scribepod-worker serve`: RunPod's serverless REST API on a local port, running the real handler.

What the SDK's tests talk to and what a backend developer runs to work offline: the routes, bodies and job states
of api.runpod.ai/v2/{endpoint_id}/..., served at `/` and at `/v2/{endpoint_id}/`. One process, a fixed number of
worker threads, no webhooks; how cancelled and timed-out jobs stop is in `endpoint/jobs.py`.
"""

from __future__ import annotations

import argparse
import logging
import os

import uvicorn

from scribepod_worker import handler
from scribepod_worker.endpoint.app import create_app
from scribepod_worker.endpoint.jobs import JobStore
from scribepod_worker.engine import Engine
from scribepod_worker.errors import WorkerError

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
        "--result-ttl", type=float, default=1800.0, help="seconds a finished job's result is kept (default: 30 min)"
    )
    parser.add_argument(
        "--execution-timeout",
        type=float,
        default=600.0,
        help="seconds a job may run when its policy sets no executionTimeout; 0 for none (default: RunPod's 600)",
    )
    parser.add_argument("--endpoint-id", default=None, help="accept only this id under /v2/{id}/ (default: any)")
    return parser.parse_args(argv)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def build_engine() -> Engine:
    """Load the models once, before the first request; a missing default model is a warning, not a crash."""
    engine = Engine()
    try:
        engine.warm_up()
    except WorkerError as error:
        # Jobs that name another model can still run; a missing default is the operator's to fix (see README).
        log.warning("warm-up incomplete: %s", error.message)
    return engine


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    log_level = os.environ.get("SCRIBEPOD_LOG_LEVEL", "INFO")
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
    try:
        serve(args)
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown; Ctrl-C during warm-up too
        print("scribepod endpoint stopped", flush=True)


def serve(args: argparse.Namespace) -> None:
    """Warm the engine up, then serve until Ctrl-C or SIGTERM (SIGTERM ends the process with that signal's status)."""
    handler.set_engine(build_engine())
    store = JobStore(
        handler.handle,
        concurrency=args.concurrency,
        result_ttl_s=args.result_ttl,
        execution_timeout_s=args.execution_timeout or None,
    )
    app = create_app(
        store,
        api_key=args.api_key,
        endpoint_id=args.endpoint_id,
        on_ready=lambda: print(f"scribepod endpoint listening on {where}", flush=True),  # `where` is set below
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
