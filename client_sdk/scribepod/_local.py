"""Local inference: the worker's own engine, in this process (installed beside the SDK: see INSTALL_HINT)."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import threading
import time
from typing import Any

from scribepod._sources import Source, describe, is_remote, read_bytes
from scribepod.errors import JobFailed, LocalInferenceUnavailable
from scribepod.models import JobInfo, Transcript, TranscriptionRequest

INSTALL_HINT = (
    "local inference needs the worker engine beside the SDK (neither is on PyPI): from a checkout of the scribepod "
    "repository, pip install torch==2.13.0 ./client_sdk ."
)


def require_engine() -> None:
    """Fail at once (not at the first outage) when a fallback is configured but cannot run."""
    if importlib.util.find_spec("scribepod_worker") is None:
        raise LocalInferenceUnavailable(INSTALL_HINT)


class LocalEngine:
    """One engine per client, built on first use: loading models is the expensive part."""

    def __init__(self) -> None:
        require_engine()
        self._engine: Any = None
        self._lock = threading.Lock()

    def _get(self) -> Any:
        with self._lock:
            if self._engine is None:
                from scribepod_worker.config import WorkerSettings
                from scribepod_worker.engine import Engine

                settings = dataclasses.replace(WorkerSettings.from_env(), allow_local_files=True)
                self._engine = Engine(settings)
            return self._engine

    def transcribe(self, source: Source, options: dict[str, Any], s3_config: dict[str, Any] | None) -> Transcript:
        from scribepod_worker.errors import WorkerError

        if is_remote(source) or isinstance(source, str | os.PathLike):
            request = TranscriptionRequest(audio=os.fspath(source), **options)  # type: ignore[arg-type]
        else:
            import base64

            request = TranscriptionRequest(audio_base64=base64.b64encode(read_bytes(source)).decode(), **options)
        started = time.perf_counter()
        try:
            transcript: Transcript = self._get().run(request, s3_config=s3_config)
        except WorkerError as error:
            raise JobFailed(error.code, f"{describe(source)}: {error.message}", error.field) from None
        transcript.job = JobInfo(
            id=None, delay_time=0.0, execution_time=round(time.perf_counter() - started, 3), provider="local"
        )
        return transcript
