"""The pipeline: source -> decode -> transcribe -> diarize -> attribute -> render.

One `Engine` per process holds the loaded models. The RunPod handler and the SDK's local fallback both call it, so
a transcript made locally is the one the endpoint would have returned.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

import numpy as np

from scribepod.models import (
    Channels,
    Enrollment,
    EnrollmentRequest,
    Segment,
    Speaker,
    SpeakerSample,
    Transcript,
    TranscriptionOptions,
    TranscriptionRequest,
    Voiceprint,
)
from scribepod_worker import transcribe as asr
from scribepod_worker.attribute import attribute_speakers, channel_attribution, provisional_segments, speaker_names
from scribepod_worker.channels import decode_channels, remove_crosstalk
from scribepod_worker.config import WorkerSettings
from scribepod_worker.decode import SAMPLE_RATE, decode_audio
from scribepod_worker.diarize import Diarization, Diarizer, SpeakerCountHint, default_diarizer_name, load_diarizer
from scribepod_worker.errors import WorkerError
from scribepod_worker.identify import (
    MAX_SAMPLE_S,
    EnrolledVoice,
    Recognition,
    enrolled_voice,
    no_embeddings,
    recognise,
    voiceprint,
)
from scribepod_worker.sources import materialize
from scribepod_worker.stop import StopSignal

log = logging.getLogger("scribepod_worker")

_Result = TypeVar("_Result")

ProgressCallback = Callable[[str, float], None]
"""Called with a stage name (decode, transcribe, diarize, render) and the job's overall progress in percent."""

SegmentsCallback = Callable[[list[Segment]], None]
"""Called with the segments decoded since the last call while a job runs: provisional (no speakers, no words;
see `attribute.provisional_segments`), numbered on from the previous call's, each segment once."""

# Share of the job's progress bar each stage takes (ASR dominates wall time): decode up to 5%, ASR to 85%, then
# whatever diarization has left (it runs beside ASR) to 95%, rendering the rest.
_ASR_SPAN = (5.0, 85.0)
_RENDER_AT = 95.0
# How often the job's thread reports the running stage's progress and checks for a stop (the RunPod adapter
# throttles updates to one per 2 s anyway).
_SUPERVISE_S = 0.2

Loader = Callable[[str], Any]


def gpu_model(load: Loader = ctypes.CDLL) -> str | None:
    """The first visible GPU's model as the driver names it (as nvidia-smi does, e.g. "NVIDIA H100 80GB HBM3"), or
    None where there is no driver or no GPU. Each job's output carries it, so a client can price the job's time."""
    try:
        cuda = load("libcuda.so.1")
    except OSError:
        return None
    device = ctypes.c_int(0)
    name = ctypes.create_string_buffer(256)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGet(ctypes.byref(device), 0) != 0:
        return None
    if cuda.cuDeviceGetName(name, 256, device) != 0:
        return None
    return name.value.decode(errors="replace").strip() or None


class Engine:
    """Loaded models plus the pipeline that uses them. Thread-safe: model loading is serialized."""

    def __init__(self, settings: WorkerSettings | None = None) -> None:
        self.settings = settings or WorkerSettings.from_env()
        self.device = asr.resolve_device(self.settings)
        self.compute_type = asr.default_compute_type(self.device, self.settings)
        self.gpu = gpu_model() if self.device == "cuda" else None
        self.diarizer_name = default_diarizer_name(self.settings)
        # Batch size when a job gives none: the operator's, else the device's (start-up sizes it to the GPU).
        self.batch_size = self.settings.batch_size or asr.DEFAULT_BATCH_SIZE.get(self.device, 8)
        self._models = asr.ModelCache(self.settings.cpu_threads, self.settings.max_loaded_models)
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
        stop: StopSignal | None = None,
        on_segments: SegmentsCallback | None = None,
    ) -> Transcript:
        """Fetch, decode and transcribe one job's audio; raise `JobStopped` soon after `stop` is set.

        Progress reports and `on_segments` calls all come from the calling thread."""
        started = time.perf_counter()
        options = request.options()
        model = self._load_model(options)  # a missing model fails before gigabytes are fetched
        enroll_started = time.perf_counter()
        voices = None
        if options.speakers is not None:  # before the audio: a bad sample fails the job before hours are decoded
            _report(progress, "enroll", 0.0)
            voices = self._enrolled_voices(options.speakers, s3_config, stop)
        enroll_seconds = time.perf_counter() - enroll_started  # model loading counts as decoding, as before
        _report(progress, "decode", 0.0)
        low, _ = _ASR_SPAN

        def report_decode(fraction: float) -> None:
            _report(progress, "decode", low * fraction)

        with materialize(
            audio=request.audio,
            audio_base64=request.audio_base64,
            settings=self.settings,
            s3_config=s3_config,
            stop=stop,
        ) as path:
            limit = self.settings.max_audio_seconds
            if options.multichannel is False:
                decoded = None
                audio = decode_audio(path, limit, report_decode, stop=stop)
            else:  # `multichannel` true or "auto": `decoded.multichannel` says which it became
                decoded = decode_channels(path, options, limit, report_decode, stop=stop)
                audio = decoded.audio[0]
        earlier = {"decode": round(time.perf_counter() - started - enroll_seconds, 3)}
        if voices is not None:
            earlier["enroll"] = round(enroll_seconds, 3)
        if decoded is not None and decoded.multichannel:
            return self._transcribe_channels(
                decoded.audio, decoded.info, options, model, progress, stop=stop, earlier=earlier
            )
        transcript = self._transcribe(
            audio, options, model, progress, stop=stop, on_segments=on_segments, earlier=earlier, voices=voices
        )
        if decoded is not None:
            transcript.channels = decoded.info
        return transcript

    def _transcribe_channels(
        self,
        channels: list[np.ndarray],
        info: Channels,
        options: TranscriptionOptions,
        named_model: tuple[str, Any],
        progress: ProgressCallback | None,
        *,
        stop: StopSignal | None,
        earlier: dict[str, float],
    ) -> Transcript:
        """ASR on each channel in turn (VAD per channel), cross-talk removed, segments merged into one timeline.

        Words are always timed here, since cross-talk is found word by word; `word_timestamps: false` only leaves
        them out of the output. Each channel is one speaker, unless `diarize_channels` asks the diarizer to tell the
        voices within each apart (beside its ASR, as in a mono job). No live segments are sent: the channels are
        transcribed one after another, so a live timeline would go back in time."""
        started = time.perf_counter() - sum(earlier.values())
        model_name, model = named_model
        timed = options.model_copy(update={"word_timestamps": True})
        timings = dict(earlier)
        low, high = _ASR_SPAN
        diarizer = self.diarizer() if options.diarize_channels else None
        hint = SpeakerCountHint(options.num_speakers, options.min_speakers, options.max_speakers)
        results: list[asr.AsrResult] = []
        diarizations: list[Diarization] = []
        asr_seconds = diarize_seconds = 0.0
        pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="stage")
        try:
            for number, audio in enumerate(channels):
                transcribed = _StageProgress(stop)
                diarized = _StageProgress(stop)
                done = number  # bound now: the report below runs while this channel is decoded

                def report_transcribe(stage: _StageProgress = transcribed, before: int = done) -> None:
                    share = (before + stage.fraction) / len(channels)
                    _report(progress, "transcribe", low + (high - low) * share)

                pending = pool.submit(_diarize, diarizer, audio, hint, timings, diarized) if diarizer else None
                work = pool.submit(
                    _transcribe_words,
                    model,
                    audio,
                    options=timed,
                    batch_size=self.batch_size,
                    recover_speech=self.settings.recover_speech,
                    timings=timings,
                    transcribed=transcribed,
                )
                results.append(_supervise(work, stop, report_transcribe))
                asr_seconds += timings["asr"]
                if pending is not None:
                    diarizations.append(_supervise(pending, stop, report_transcribe))
                    diarize_seconds += timings["diarize"]
        finally:
            pool.shutdown(wait=stop is None or not stop.is_set, cancel_futures=True)
        timings["asr"] = round(asr_seconds, 3)
        if diarizer is not None:
            timings["diarize"] = round(diarize_seconds, 3)

        _report(progress, "render", _RENDER_AT)
        kept, dropped = remove_crosstalk(channels, [result.segments for result in results])
        turns = [diarization.turns for diarization in diarizations] if diarizer is not None else None
        attributed = channel_attribution(kept, info.speakers, turns)
        if not options.word_timestamps:
            for segment in attributed.segments:
                segment.words = []
        # The language of the channel that said most (each channel detects its own where the job names none).
        spoken = max(results, key=lambda result: sum(len(segment.words) for segment in result.segments))
        transcript = Transcript(
            text=" ".join(segment.text for segment in attributed.segments if segment.text).strip(),
            language=spoken.language,
            language_probability=round(spoken.language_probability, 4) if spoken.language_probability else None,
            duration=round(max(audio.size for audio in channels) / SAMPLE_RATE, 3),
            segments=attributed.segments,
            speakers=attributed.speakers,
            turns=attributed.turns,
            model=model_name,
            device=self.device,
            gpu=self.gpu,
            diarizer=diarizer.name if diarizer is not None else None,
            timings=timings,
            channels=info.model_copy(update={"crosstalk_words_dropped": dropped}),
        )
        return _finished(transcript, options, started, progress)

    def transcribe_audio(
        self,
        audio: np.ndarray,
        options: TranscriptionOptions,
        *,
        progress: ProgressCallback | None = None,
        stop: StopSignal | None = None,
    ) -> Transcript:
        """Transcribe (and diarize) 16 kHz mono float32 audio that is already in memory."""
        voices = self._enrolled_voices(options.speakers, None, stop) if options.speakers is not None else None
        return self._transcribe(
            audio,
            options,
            self._load_model(options),
            progress,
            stop=stop,
            on_segments=None,
            earlier={"decode": 0.0},
            voices=voices,
        )

    def enroll(
        self, request: EnrollmentRequest, *, s3_config: Mapping[str, Any] | None = None, stop: StopSignal | None = None
    ) -> Enrollment:
        """Each sample's voiceprint (an `enroll` job), to send as `speakers` in later jobs instead of the audio."""
        started = time.perf_counter()
        enrolled = [
            SpeakerSample(name=sample.name, voiceprint=self._voiceprint(sample, f"enroll.{index}", s3_config, stop))
            for index, sample in enumerate(request.enroll)
        ]
        return Enrollment(
            speakers=enrolled,
            embedding_model=self.diarizer().embedding_model,
            timings={"enroll": round(time.perf_counter() - started, 3)},
        )

    def _enrolled_voices(
        self, samples: list[SpeakerSample], s3_config: Mapping[str, Any] | None, stop: StopSignal | None
    ) -> list[EnrolledVoice]:
        """The request's `speakers` as voiceprints: recordings are enrolled now, voiceprints checked."""
        diarizer = self.diarizer()
        voices = []
        for index, sample in enumerate(samples):
            print_ = sample.voiceprint or self._voiceprint(sample, f"speakers.{index}", s3_config, stop)
            voices.append(enrolled_voice(sample.name, index, print_, diarizer))
        return voices

    def _voiceprint(
        self, sample: SpeakerSample, field: str, s3_config: Mapping[str, Any] | None, stop: StopSignal | None
    ) -> Voiceprint:
        """Fetch and decode one voice sample and make its voiceprint; the audio is gone when this returns."""
        limit = min(MAX_SAMPLE_S, self.settings.max_audio_seconds)
        try:
            with materialize(
                audio=sample.audio,
                audio_base64=sample.audio_base64,
                settings=self.settings,
                s3_config=s3_config,
                stop=stop,
            ) as path:
                audio = decode_audio(path, limit, stop=stop)
        except WorkerError as error:  # name the sample, not the job's audio
            given = f"{field}.{'audio' if sample.audio is not None else 'audio_base64'}"
            if error.code == "audio_too_long":
                message = f"a voice sample may last {limit:.0f} s (a minute of the person speaking alone is plenty)"
                raise WorkerError(error.code, f"{given}: {message}", given) from None
            raise WorkerError(error.code, f"{given}: {error.message}", given) from None

        def check_stop(fraction: float) -> None:
            if stop is not None:
                stop.check()

        return voiceprint(self.diarizer(), audio, field, progress=check_stop)

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
        *,
        stop: StopSignal | None,
        on_segments: SegmentsCallback | None,
        earlier: dict[str, float],
        voices: list[EnrolledVoice] | None = None,
    ) -> Transcript:
        started = time.perf_counter() - sum(earlier.values())
        model_name, model = named_model
        diarizer = self.diarizer() if options.diarize else None
        hint = SpeakerCountHint(options.num_speakers, options.min_speakers, options.max_speakers)
        timings = dict(earlier)

        # ASR and diarization run on two threads: both spend their time in native code that releases the GIL. This
        # thread supervises them: it reports their progress (so every report comes from the job's thread), and on a
        # stop it leaves at once instead of waiting out a CTranslate2 call (seconds per batch on CPU), which cannot
        # be interrupted; the stage threads end at their next check of the signal.
        transcribed = _StageProgress(stop)
        diarized = _StageProgress(stop)
        live = _LiveSegments(on_segments, transcribed.found)
        low, high = _ASR_SPAN

        def report_transcribe() -> None:
            live.flush()  # before the percent, so an update that carries both has every segment it counts
            _report(progress, "transcribe", low + (high - low) * transcribed.fraction)

        pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="stage")
        try:
            pending = pool.submit(_diarize, diarizer, audio, hint, timings, diarized) if diarizer is not None else None
            asr_work = pool.submit(
                _transcribe_words,
                model,
                audio,
                options=options,
                batch_size=self.batch_size,
                recover_speech=self.settings.recover_speech,
                timings=timings,
                transcribed=transcribed,
            )
            result = _supervise(asr_work, stop, report_transcribe)
            live.flush()
            diarization: Diarization | None = None
            if pending is not None:
                diarization = _supervise(
                    pending, stop, lambda: _report(progress, "diarize", high + (_RENDER_AT - high) * diarized.fraction)
                )
        finally:
            # Stopped: the stage threads are left to notice and end by themselves; otherwise they are done already,
            # or one failed and the other is waited for, so a job never leaves work running behind it.
            pool.shutdown(wait=stop is None or not stop.is_set, cancel_futures=True)

        _report(progress, "render", _RENDER_AT)
        if not result.segments and diarization is not None:
            diarization = Diarization([])  # no speech: the contract promises empty turns, not diarized noise
        recognition = None
        if voices is not None and diarizer is not None and diarization is not None:
            spoken = {turn.speaker for turn in diarization.turns if turn.end > turn.start}
            if spoken and not diarization.centroids:  # pyannote 3.x: naming nobody would look like no match
                raise no_embeddings(diarizer)
            centroids = {label: vector for label, vector in diarization.centroids.items() if label in spoken}
            recognition = recognise(centroids, voices, diarizer.embedding_model, options.speaker_threshold)
        attributed = attribute_speakers(
            result.segments,
            diarization.turns if diarization is not None else None,
            diarization.centroids if diarization is not None and options.return_embeddings else None,
            recognition.names if recognition is not None else None,
        )
        if recognition is not None and diarization is not None:
            _describe_recognition(attributed.speakers, speaker_names(diarization.turns, recognition.names), recognition)
        embedded = any(speaker.embedding is not None for speaker in attributed.speakers)
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
            gpu=self.gpu,
            diarizer=diarizer.name if diarizer is not None else None,
            embedding_model=diarizer.embedding_model if diarizer is not None and embedded else None,
            identification=recognition.identification if recognition is not None else None,
            timings=timings,
        )
        return _finished(transcript, options, started, progress)


class _StageProgress:
    """A stage's latest fraction done, written by its thread and read by the job's; each report is also where the
    stage's thread learns that the job was stopped. The ASR stage also lists the segments it has decoded."""

    def __init__(self, stop: StopSignal | None) -> None:
        self.fraction = 0.0
        self.stop = stop
        self.found: list[asr.AsrSegment] = []

    def add(self, segment: asr.AsrSegment) -> None:
        self.found.append(segment)  # one writer; the job's thread reads a prefix of it

    def update(self, fraction: float) -> None:
        if self.stop is not None:
            self.stop.check()
        self.fraction = fraction


class _LiveSegments:
    """Hands each segment the ASR stage has found to `on_segments` once, in order, from the job's thread."""

    def __init__(self, on_segments: SegmentsCallback | None, found: list[asr.AsrSegment]) -> None:
        self._on_segments = on_segments
        self._found = found
        self._sent = 0
        self._previous_end = 0.0

    def flush(self) -> None:
        if self._on_segments is None:
            return
        new = self._found[self._sent : len(self._found)]
        if not new:
            return
        segments = provisional_segments(new, self._sent, self._previous_end)
        self._sent += len(new)
        self._previous_end = segments[-1].end
        self._on_segments(segments)


def _supervise(work: Future[_Result], stop: StopSignal | None, report: Callable[[], None]) -> _Result:
    """Wait for a stage's result, reporting its progress and checking `stop` every `_SUPERVISE_S`."""
    while True:
        report()
        if stop is not None:
            stop.check()
        try:
            return work.result(timeout=_SUPERVISE_S)
        except FutureTimeout:
            continue


def _transcribe_words(
    model: Any,
    audio: np.ndarray,
    *,
    options: TranscriptionOptions,
    batch_size: int,
    recover_speech: bool,
    timings: dict[str, float],
    transcribed: _StageProgress,
) -> asr.AsrResult:
    started = time.perf_counter()
    result = asr.transcribe(
        model,
        audio,
        options,
        batch_size,
        progress=transcribed.update,
        recover_speech=recover_speech,
        stop=transcribed.stop,
        on_segment=transcribed.add,
    )
    timings["asr"] = round(time.perf_counter() - started, 3)
    return result


def _diarize(
    diarizer: Diarizer,
    audio: np.ndarray,
    hint: SpeakerCountHint,
    timings: dict[str, float],
    diarized: _StageProgress,
) -> Diarization:
    started = time.perf_counter()
    diarization = diarizer.diarize(audio, hint, progress=diarized.update)
    timings["diarize"] = round(time.perf_counter() - started, 3)
    return diarization


def _describe_recognition(speakers: list[Speaker], names: Mapping[str, str], recognition: Recognition) -> None:
    """Each speaker's match and similarities, found by the diarizer's label behind its final name."""
    label_of = {name: label for label, name in names.items()}
    for speaker in speakers:
        label = label_of[speaker.id]
        speaker.match = recognition.matches.get(label)
        speaker.similarities = recognition.similarities.get(label)


def _finished(
    transcript: Transcript, options: TranscriptionOptions, started: float, progress: ProgressCallback | None
) -> Transcript:
    """The formats asked for, the total time, and the last progress report: how every transcript ends."""
    transcript.formats = {fmt: transcript.render(fmt) for fmt in options.output_formats}
    transcript.timings["total"] = round(time.perf_counter() - started, 3)
    _report(progress, "done", 100.0)
    return transcript


def _report(progress: ProgressCallback | None, stage: str, percent: float) -> None:
    if progress is not None:
        progress(stage, round(float(percent), 1))
