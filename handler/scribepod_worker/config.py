"""Worker settings, read once from the environment (names and defaults: docs/contract.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

DeviceSetting = Literal["cuda", "cpu", "auto"]
DiarizerName = Literal["pyannote", "builtin"]


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def deployed_on_runpod() -> bool:
    """True inside a RunPod serverless worker (where local file paths must never be readable by a job)."""
    return bool(os.environ.get("RUNPOD_WEBHOOK_GET_JOB") or os.environ.get("RUNPOD_POD_ID"))


@dataclass(frozen=True)
class WorkerSettings:
    """Everything an operator can tune. Construct with `from_env()`; tests build it directly."""

    model: str = "large-v3-turbo"
    model_dir: Path | None = None
    device: DeviceSetting = "auto"
    compute_type: str | None = None
    diarizer: DiarizerName | None = None
    pyannote_dir: Path | None = None
    diarizer_weights: Path | None = None
    allow_local_files: bool = False
    allow_private_urls: bool = False
    max_audio_seconds: float = 4 * 3600
    max_download_bytes: int = 2 * 1024**3
    max_base64_bytes: int = 200 * 1024**2
    fetch_timeout_s: float = 60.0
    fetch_deadline_s: float = 900.0
    max_loaded_models: int = 2
    cpu_threads: int = 0
    batch_size: int | None = None
    recover_speech: bool = True
    # RunPod's streaming mode: the generator handler, so /stream carries segments (README, "Live transcripts").
    stream: bool = False
    s3_endpoint_url: str | None = None

    @classmethod
    def from_env(cls) -> WorkerSettings:
        model_dir = os.environ.get("SCRIBEPOD_MODEL_DIR")
        pyannote_dir = os.environ.get("SCRIBEPOD_PYANNOTE_DIR")
        device = os.environ.get("SCRIBEPOD_DEVICE", "auto").strip().lower()
        if device not in ("cuda", "cpu", "auto"):
            raise ValueError(f"SCRIBEPOD_DEVICE must be cuda, cpu or auto, not {device!r}")
        diarizer = os.environ.get("SCRIBEPOD_DIARIZER", "").strip().lower() or None
        if diarizer not in (None, "pyannote", "builtin"):
            raise ValueError(f"SCRIBEPOD_DIARIZER must be pyannote or builtin, not {diarizer!r}")
        diarizer_weights = os.environ.get("SCRIBEPOD_DIARIZER_WEIGHTS")
        return cls(
            model=os.environ.get("SCRIBEPOD_MODEL") or "large-v3-turbo",
            model_dir=Path(model_dir) if model_dir else None,
            device=device,  # type: ignore[arg-type]
            compute_type=os.environ.get("SCRIBEPOD_COMPUTE_TYPE") or None,
            diarizer=diarizer,  # type: ignore[arg-type]
            pyannote_dir=Path(pyannote_dir) if pyannote_dir else None,
            diarizer_weights=Path(diarizer_weights) if diarizer_weights else None,
            allow_local_files=_flag("SCRIBEPOD_ALLOW_LOCAL_FILES", False),
            allow_private_urls=_flag("SCRIBEPOD_ALLOW_PRIVATE_URLS", False),
            max_audio_seconds=float(os.environ.get("SCRIBEPOD_MAX_AUDIO_SECONDS") or 4 * 3600),
            max_download_bytes=_int("SCRIBEPOD_MAX_DOWNLOAD_BYTES", 2 * 1024**3),
            max_base64_bytes=_int("SCRIBEPOD_MAX_BASE64_BYTES", 200 * 1024**2),
            fetch_timeout_s=float(os.environ.get("SCRIBEPOD_FETCH_TIMEOUT") or 60.0),
            fetch_deadline_s=float(os.environ.get("SCRIBEPOD_FETCH_DEADLINE") or 900.0),
            max_loaded_models=max(1, _int("SCRIBEPOD_MAX_LOADED_MODELS", 2)),
            cpu_threads=_int("SCRIBEPOD_CPU_THREADS", 0),
            batch_size=_int("SCRIBEPOD_BATCH_SIZE", 0) or None,
            recover_speech=_flag("SCRIBEPOD_RECOVER_SPEECH", True),
            stream=_flag("SCRIBEPOD_STREAM", False),
            s3_endpoint_url=os.environ.get("SCRIBEPOD_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL") or None,
        )
