"""The FastAPI routes: RunPod's queue-based endpoint operations, at `/` and under `/v2/{endpoint_id}/`.

Shapes follow docs.runpod.io serverless/endpoints/send-requests and operation-reference, and what runpod-python's
`runpod.endpoint` client reads from them. Where those docs leave a behaviour open, the stricter one is served (see
`endpoint/jobs.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from scribepod_worker.endpoint.jobs import JobStore, NotRetryableError, QueueFullError, UnknownJobError
from scribepod_worker.endpoint.models import (
    MAX_POLICY_MS,
    ErrorBody,
    Health,
    JobState,
    PurgeResult,
    RunRequest,
    StreamState,
)

log = logging.getLogger("scribepod_worker.endpoint")
MB = 1024 * 1024
RUN_BODY_LIMIT = 10 * MB  # RunPod's /run payload limit
RUNSYNC_BODY_LIMIT = 20 * MB  # RunPod's /runsync payload limit
RUNSYNC_WAIT_MS = (1000, 90_000, 300_000)  # RunPod's ?wait= bounds and default (min, default, max)


def create_app(
    store: JobStore,
    *,
    api_key: str | None = None,
    endpoint_id: str | None = None,
    on_ready: Callable[[], None] | None = None,
    on_closed: Callable[[], None] | None = None,
) -> FastAPI:
    """Build the app around a `JobStore`, which it starts and closes with the server's lifespan; `on_ready` runs
    once it has started, `on_closed` once it has closed.

    With an API key, the OpenAPI schema needs the key too, and the /docs and /redoc pages are off: a browser cannot
    send the key with the schema request those pages make.
    """

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        store.start()
        if on_ready is not None:
            on_ready()
        try:
            yield
        finally:
            store.close()
            if on_closed is not None:
                on_closed()

    async def authorize(request: Request) -> None:
        """RunPod takes `Authorization: Bearer <key>` or the bare key in `Authorization`."""
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        given = given[7:] if given[:7].lower() == "bearer " else given
        if not hmac.compare_digest(given.strip().encode(), api_key.encode()):
            raise HTTPException(401, "Unauthorized: missing or wrong API key")

    async def known_endpoint(request: Request) -> None:
        if endpoint_id is not None and request.path_params.get("endpoint_id") != endpoint_id:
            raise HTTPException(404, f"no endpoint {request.path_params.get('endpoint_id')!r} here")

    app = FastAPI(
        title="scribepod local endpoint",
        description="RunPod's serverless REST API, served locally over the real scribepod handler.",
        lifespan=lifespan,
        responses={401: {"model": ErrorBody}, 404: {"model": ErrorBody}},
        openapi_url=None if api_key is not None else "/openapi.json",
    )
    router = APIRouter()

    @router.post("/run", response_model_exclude_none=True)
    async def run(request: Request) -> JobState:
        return store.submit(await _run_request(request, RUN_BODY_LIMIT), sync=False)

    @router.post("/runsync", response_model_exclude_none=True)
    async def runsync(request: Request, wait: Annotated[int | None, Query()] = None) -> JobState:
        """Answers when the job ends or after `?wait=` ms (clamped like RunPod's); then the caller polls /status."""
        low, default, high = RUNSYNC_WAIT_MS
        wait_ms = min(max(wait if wait is not None else default, low), high)
        job = store.submit(await _run_request(request, RUNSYNC_BODY_LIMIT), sync=True)
        await _until_final(store, job.id, wait_ms / 1000)
        return store.status(job.id)

    @router.api_route("/status/{job_id}", methods=["GET", "POST"], response_model_exclude_none=True)
    async def status(job_id: str, ttl: Annotated[int | None, Query(gt=0, le=MAX_POLICY_MS)] = None) -> JobState:
        """`?ttl=<ms>` (RunPod's per-job TTL): the job, queued, running or done, is gone that long from now."""
        return store.status(job_id, ttl_ms=ttl)

    @router.api_route("/stream/{job_id}", methods=["GET", "POST"], response_model_exclude_none=True)
    async def stream(job_id: str) -> StreamState:
        return store.stream(job_id)

    @router.post("/cancel/{job_id}", response_model_exclude_none=True)
    async def cancel(job_id: str) -> JobState:
        return store.cancel(job_id)

    @router.post("/retry/{job_id}", response_model_exclude_none=True)
    async def retry(job_id: str) -> JobState:
        return store.retry(job_id)

    @router.post("/purge-queue")
    async def purge_queue() -> PurgeResult:
        return store.purge()

    @router.get("/health")
    async def health() -> Health:
        return store.health()

    if api_key is not None:

        @router.get("/openapi.json", include_in_schema=False)
        async def openapi() -> JSONResponse:
            return JSONResponse(app.openapi())

    app.include_router(router, dependencies=[Depends(authorize)])
    app.include_router(router, prefix="/v2/{endpoint_id}", dependencies=[Depends(authorize), Depends(known_endpoint)])
    _install_error_handlers(app)
    return app


async def _until_final(store: JobStore, job_id: str, timeout_s: float) -> None:
    """Wait on the event loop, not in a thread: hundreds of /runsync callers wait at once, as on RunPod."""
    loop = asyncio.get_running_loop()
    ended = asyncio.Event()

    def wake() -> None:  # called from a job's thread
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting any more
            loop.call_soon_threadsafe(ended.set)

    forget = store.on_final(job_id, wake)
    try:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(ended.wait(), timeout_s)
    finally:
        forget()


async def _run_request(request: Request, limit: int) -> RunRequest:
    """Read at most `limit` bytes (413 beyond, as RunPod answers) and parse them (400 for bad JSON or no `input`)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"payload of {int(declared)} bytes is over the {limit // MB} MB limit")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"payload is over the {limit // MB} MB limit")
    try:
        return RunRequest.model_validate_json(bytes(body))
    except ValidationError as error:
        raise HTTPException(400, _every_error(error.errors())) from None


def _every_error(errors: Sequence[Any]) -> str:
    """Every invalid field in one message, `where: what`, so one answer names them all. The values sent are left
    out: a webhook URL may carry a token."""
    parts = []
    for error in errors:
        where = ".".join(str(part) for part in error["loc"])
        parts.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
    return "; ".join(parts)


def _install_error_handlers(app: FastAPI) -> None:
    """Every error is `{"error": "..."}` JSON."""

    def reply(status: int, message: str) -> JSONResponse:
        return JSONResponse(ErrorBody(error=message).model_dump(), status_code=status)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> JSONResponse:
        return reply(error.status_code, str(error.detail))

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, error: RequestValidationError) -> JSONResponse:
        return reply(400, _every_error(error.errors()))

    @app.exception_handler(UnknownJobError)
    async def unknown_job(_: Request, error: UnknownJobError) -> JSONResponse:
        return reply(404, "request does not exist")

    @app.exception_handler(QueueFullError)
    async def queue_full(_: Request, error: QueueFullError) -> JSONResponse:
        return reply(429, str(error))

    @app.exception_handler(NotRetryableError)
    async def not_retryable(_: Request, error: NotRetryableError) -> JSONResponse:
        return reply(400, str(error))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> JSONResponse:
        """A bug still answers in the API's shape; the traceback goes to the (redacted) log, not to the caller."""
        log.exception("unexpected error answering a request")
        return reply(500, f"internal error ({type(error).__name__})")
