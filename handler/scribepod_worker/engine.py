"""The pipeline: source -> decode -> transcribe -> diarize -> attribute -> render.

One `Engine` per process holds the loaded models. The RunPod handler and the SDK's local fallback both call it, so
a transcript made locally is the one the endpoint would have returned.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import numpy as np

from scribepod.models import Transcript, TranscriptionOptions, TranscriptionRequest
from scribepod_worker import transcribe as asr
from scribepod_worker.attribute import attribute_speakers
from scribepod_worker.config import WorkerSettings
from scribepod_worker.decode import SAMPLE_RATE, decode_audio
from scribepod_worker.diarize import Diarizer, SpeakerCountHint, SpeakerTurn, default_diarizer_name, load_diarizer
from scribepod_worker.sources import materialize

log = logging.getLogger("scribepod_worker")

ProgressCallback = Callable[[str, float], None]
"""Called with a stage name (decode, transcribe, diarize, render) and the job's overall progress in percent."""

# Share of the job's progress bar each stage takes (ASR dominates wall time): decode up to 5%, ASR to 85%, then
# whatever diarization has left (it runs beside ASR) to 95%, rendering the rest.
_ASR_SPAN = (5.0, 85.0)
_RENDER_AT = 95.0
# How often a job waiting on diarization reports it (the RunPod adapter throttles to one update per 2 s anyway).
_DIARIZE_REPORT_S = 1.0


class Engine:
    """Loaded models plus the pipeline that uses them. Thread-safe: model loading is serialized."""

    def __init__(self, settings: WorkerSettings | None = None) -> None:
        self.settings = settings or WorkerSettings.from_env()
        self.device = asr.resolve_device(self.settings)
        self.compute_type = asr.default_compute_type(self.device, self.settings)
        self.diarizer_name = default_diarizer_name(self.settings)
        # Batch size when a job gives none: the operator's, else the device's (start-up sizes it to the GPU).
        self.batch_size = self.settings.batch_size or asr.DEFAULT_BATCH_SIZE.get(self.device, 8)
        self._models = asr.ModelCache(self.settings.cpu_threads)
        self._diarizer: Diarizer | None = None
        self._diarizer_lock = threading.Lock()

    def warm_up(self) -> None:
        """Load the diarizer and the default model now, so the first job does not pay for them."""
        self.diarizer()
        resolved = asr.resolve_model(self.settings.model, self.settings)
        self._models.get(resolved.path, self.device, self.compute_type)

    def diarizer(self) -> Diarizer:
        with self._diarizer_lock:
            if self._diarizer is None:
                self._diarizer = load_diarizer(self.diarizer_name, self.settings, self.device)
            return self._diarizer

    def run(
        self,
        request: TranscriptionRequest,
        *,
        s3_config: Mapping[str, Any] | None = None,
        progress: ProgressCallback | None = None,
    ) -> Transcript:
        """Fetch, decode and transcribe one job's audio."""
        started = time.perf_counter()
        options = request.options()
        model = self._load_model(options)  # a missing model fails before gigabytes are fetched
        _report(progress, "decode", 0.0)
        low, _ = _ASR_SPAN
        with materialize(
            audio=request.audio, audio_base64=request.audio_base64, settings=self.settings, s3_config=s3_config
        ) as path:
            audio = decode_audio(
                path, self.settings.max_audio_seconds, lambda fraction: _report(progress, "decode", low * fraction)
            )
        return self._transcribe(audio, options, model, progress, decode_seconds=time.perf_counter() - started)

    def transcribe_audio(
        self, audio: np.ndarray, options: TranscriptionOptions, *, progress: ProgressCallback | None = None
    ) -> Transcript:
        """Transcribe (and diarize) 16 kHz mono float32 audio that is already in memory."""
        return self._transcribe(audio, options, self._load_model(options), progress, decode_seconds=0.0)

    def _load_model(self, options: TranscriptionOptions) -> tuple[str, Any]:
        """Check the task against the model's name, load it (cached), check the task against what the loaded model
        is, then return the model's name and the model."""
        model_name = options.model or self.settings.model
        asr.check_task(model_name, options)
        resolved = asr.resolve_model(model_name, self.settings)
        model = self._models.get(resolved.path, self.device, self.compute_type)
        asr.check_model(model, resolved, options)
        return resolved.name, model

    def _transcribe(
        self,
        audio: np.ndarray,
        options: TranscriptionOptions,
        named_model: tuple[str, Any],
        progress: ProgressCallback | None,
        decode_seconds: float,
    ) -> Transcript:
        started = time.perf_counter() - decode_seconds
        model_name, model = named_model
        diarizer = self.diarizer() if options.diarize else None
        hint = SpeakerCountHint(options.num_speakers, options.min_speakers, options.max_speakers)
        timings: dict[str, float] = {"decode": round(decode_seconds, 3)}

        # Diarization runs beside ASR: both spend their time in native code that releases the GIL. Its progress is
        # only recorded there; this thread reports it once ASR is done, so every report comes from the job's thread.
        diarized = _DiarizeProgress()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="diarize") as pool:
            pending = pool.submit(_diarize, diarizer, audio, hint, timings, diarized) if diarizer is not None else None
            asr_started = time.perf_counter()
            low, high = _ASR_SPAN
            result = asr.transcribe(
                model,
                audio,
                options,
                self.batch_size,
                progress=(lambda fraction: _report(progress, "transcribe", low + (high - low) * fraction)),
                recover_speech=self.settings.recover_speech,
            )
            timings["asr"] = round(time.perf_counter() - asr_started, 3)
            turns: list[SpeakerTurn] | None = None
            if pending is not None:
                while True:
                    _report(progress, "diarize", high + (_RENDER_AT - high) * diarized.fraction)
                    try:
                        turns = pending.result(timeout=_DIARIZE_REPORT_S)
                        break
                    except FutureTimeout:
                        continue

        _report(progress, "render", _RENDER_AT)
        if not result.segments and turns is not None:
            turns = []  # no speech: the contract promises empty turns, not diarized noise
        attributed = attribute_speakers(result.segments, turns)
        transcript = Transcript(
            text=" ".join(segment.text for segment in attributed.segments if segment.text).strip(),
            language=result.language,
            language_probability=round(result.language_probability, 4) if result.language_probability else None,
            duration=round(audio.size / SAMPLE_RATE, 3),
            segments=attributed.segments,
            speakers=attributed.speakers,
            turns=attributed.turns,
            model=model_name,
            device=self.device,
            diarizer=diarizer.name if diarizer is not None else None,
            timings=timings,
        )
        transcript.formats = {fmt: transcript.render(fmt) for fmt in options.output_formats}
        transcript.timings["total"] = round(time.perf_counter() - started, 3)
        _report(progress, "done", 100.0)
        return transcript


class _DiarizeProgress:
    """The diarizer's latest fraction done, written by its thread and read by the job's."""

    fraction = 0.0

    def update(self, fraction: float) -> None:
        self.fraction = fraction


def _diarize(
    diarizer: Diarizer,
    audio: np.ndarray,
    hint: SpeakerCountHint,
    timings: dict[str, float],
    diarized: _DiarizeProgress,
) -> list[SpeakerTurn]:
    started = time.perf_counter()
    turns = diarizer.diarize(audio, hint, progress=diarized.update)
    timings["diarize"] = round(time.perf_counter() - started, 3)
    return turns


def _report(progress: ProgressCallback | None, stage: str, percent: float) -> None:
    if progress is not None:
        progress(stage, round(percent, 1))
