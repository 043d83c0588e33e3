"""Local inference: the worker's own engine, in this process (installed beside the SDK: see INSTALL_HINT)."""

from __future__ import annotations

import base64
import dataclasses
import importlib.util
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from scribepod._core import LiveSegments, ProgressCallback, SegmentCallback
from scribepod._sources import Source, describe, is_remote, read_bytes
from scribepod.errors import JobFailed, LocalInferenceUnavailable
from scribepod.models import (
    Enrollment,
    EnrollmentRequest,
    JobInfo,
    Segment,
    SpeakerSample,
    Transcript,
    TranscriptionRequest,
)
from scribepod.voices import Recording

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
        self._check_default_model()
        self._engine: Any = None
        self._lock = threading.Lock()

    @staticmethod
    def _check_default_model() -> None:
        """Fail when the client is made, listing the models present, rather than with every job."""
        from scribepod_worker.config import WorkerSettings
        from scribepod_worker.errors import WorkerError
        from scribepod_worker.transcribe import MISSING_MODEL_FIX, resolve_model

        settings = WorkerSettings.from_env()
        try:
            resolve_model(settings.model, settings)
        except WorkerError as error:
            raise LocalInferenceUnavailable(
                f"local inference cannot run: {error.message}; {MISSING_MODEL_FIX}"
            ) from None

    def _get(self) -> Any:
        with self._lock:
            if self._engine is None:
                from scribepod_worker.config import WorkerSettings
                from scribepod_worker.engine import Engine

                settings = dataclasses.replace(WorkerSettings.from_env(), allow_local_files=True)
                self._engine = Engine(settings)
            return self._engine

    def transcribe(
        self,
        source: Source,
        options: dict[str, Any],
        s3_config: dict[str, Any] | None,
        on_progress: ProgressCallback | None = None,
        on_segment: SegmentCallback | None = None,
    ) -> Transcript:
        """As a job on the endpoint would, with its progress and live segments (`Client.transcribe`'s callbacks)."""
        from scribepod_worker.errors import WorkerError

        request = TranscriptionRequest(**_audio_fields(source), **options)
        live = LiveSegments()

        def progress(stage: str, percent: float) -> None:
            if on_progress is not None:
                on_progress({"stage": stage, "percent": percent})

        def segments(found: list[Segment]) -> None:
            if on_segment is not None:
                for segment in live.provisional([{"segments": [item.model_dump() for item in found]}]):
                    on_segment(segment)

        started = time.perf_counter()
        try:
            transcript: Transcript = self._get().run(
                request, s3_config=s3_config, progress=progress, on_segments=segments
            )
        except WorkerError as error:
            raise JobFailed(error.code, f"{describe(source)}: {error.message}", error.field) from None
        if on_segment is not None:
            for segment in live.rest(transcript):
                on_segment(segment)
        transcript.job = JobInfo(
            id=None, delay_time=0.0, execution_time=round(time.perf_counter() - started, 3), provider="local"
        )
        return transcript

    def enroll(self, recordings: Sequence[Recording]) -> list[SpeakerSample]:
        """As an `enroll` job on the endpoint would: each recording's voiceprint, in order."""
        from scribepod_worker.errors import WorkerError

        request = EnrollmentRequest(
            enroll=[SpeakerSample(name=recording.name, **_audio_fields(recording.source)) for recording in recordings]
        )
        try:
            enrollment: Enrollment = self._get().enroll(request)
        except WorkerError as error:
            raise JobFailed(error.code, error.message, error.field) from None
        return enrollment.speakers


def _audio_fields(source: Source) -> dict[str, Any]:
    """`audio` for a path or URL (the engine reads it where it is), else `audio_base64`."""
    if is_remote(source) or isinstance(source, str | os.PathLike):
        return {"audio": os.fspath(source)}  # type: ignore[arg-type]
    return {"audio_base64": base64.b64encode(read_bytes(source)).decode()}
