"""Issue 9, item 4 (the stages): a stopped job (cancelled, timed out, shutting down) ends inside decoding, ASR and
diarization, not at the next progress report after the stage. Before, a cancelled job kept its slot for 39.9 s.

Each stage runs for real (ffmpeg, tiny.en, the builtin diarizer on its real weights) while a timer thread sets the
job's StopSignal; `JobStopped` must come within STOP_WITHIN_S of the set. ASR can only stop between CTranslate2
calls (a batch of chunks, or one 30 s window), and one call cannot be interrupted: greedy tiny.en takes 1 to 2 s for
one on a 2-core CPU, up to 4 s while other tests load it, so ASR gets ASR_STOP_WITHIN_S (the whole 6-minute run takes
over 12 s, so a stage that ignored the signal would still fail).
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import psutil
import pytest

from scribepod.models import TranscriptionOptions
from scribepod_worker.config import WorkerSettings
from scribepod_worker.decode import SAMPLE_RATE, decode_audio
from scribepod_worker.diarize import SpeakerCountHint, load_diarizer
from scribepod_worker.diarize.pyannote import CPU_BATCH, limit_batches
from scribepod_worker.stop import JobStopped, StopSignal
from scribepod_worker.transcribe import ModelCache, install_sliced_vad, resolve_model, transcribe

from conftest import realspeech

STOP_WITHIN_S = 1.5
ASR_STOP_WITHIN_S = 4.0
CLIPS = ("ami_dev00", "ami_dev01", "ami_trn00", "ami_trn04", "ami_trn06", "ami_trn08")


@pytest.fixture(scope="module")
def meeting() -> np.ndarray:
    """Six minutes of real far-field meeting speech: the six AMI excerpts, one after another, twice."""
    return np.tile(np.concatenate([decode_audio(realspeech(f"{name}.wav"), 600.0) for name in CLIPS]), 2)


def stopped_after(run: Callable[[StopSignal], object], set_after_s: float) -> float:
    """Run `run` with a StopSignal that a timer sets `set_after_s` in; the seconds from the set to JobStopped."""
    stop = StopSignal()
    set_at: list[float] = []

    def set_it() -> None:
        set_at.append(time.monotonic())
        stop.set("cancelled")

    timer = threading.Timer(set_after_s, set_it)
    timer.start()
    try:
        with pytest.raises(JobStopped, match="cancelled"):
            run(stop)
    finally:
        timer.cancel()
    assert set_at, "the stage ended before the stop was set: give it more work"
    return time.monotonic() - set_at[0]


def ffmpeg_children() -> list[psutil.Process]:
    return [child for child in psutil.Process().children(recursive=True) if "ffmpeg" in child.name()]


@pytest.fixture
def no_ffmpeg_left() -> Iterator[None]:
    assert not ffmpeg_children()
    yield
    assert not ffmpeg_children(), "a stopped decode left ffmpeg running"


def test_decoding_stops_and_ffmpeg_is_gone(tmp_path: Path, no_ffmpeg_left: None) -> None:
    """Hours of FLAC that states no length (written to a pipe): ffmpeg decodes for seconds, until the 4-hour limit
    or the stop."""
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "anullsrc=r=1000:cl=mono"]
    command += ["-t", "23400", "-c:a", "flac", "-frame_size", "65535", "-f", "flac", "pipe:"]
    bomb = tmp_path / "long.flac"
    bomb.write_bytes(subprocess.run(command, check=True, capture_output=True).stdout)
    assert stopped_after(lambda stop: decode_audio(bomb, 4 * 3600.0, stop=stop), 0.5) < STOP_WITHIN_S


@pytest.fixture(scope="module")
def tiny_en() -> object:
    settings = WorkerSettings(model="tiny.en", device="cpu")
    return ModelCache().get(resolve_model("tiny.en", settings).path, "cpu", "int8")


@pytest.mark.parametrize("batch_size", [1, 2], ids=["sequential", "batched"])
def test_asr_stops_between_decodes(meeting: np.ndarray, tiny_en: object, batch_size: int) -> None:
    """Sequential decoding stops between 30 s windows, the batched pipeline between batches (and before each
    recovery decode)."""
    options = TranscriptionOptions(beam_size=1, word_timestamps=False, batch_size=batch_size)

    def run(stop: StopSignal) -> object:
        return transcribe(tiny_en, meeting, options, 8, stop=stop, recover_speech=True)

    assert stopped_after(run, 1.0) < ASR_STOP_WITHIN_S


def test_vad_stops_and_gives_faster_whispers_own_probabilities(meeting: np.ndarray, tiny_en: object) -> None:
    """The VAD pass over a block (2 s for 15 minutes on a CPU) is sliced so that it can stop, and so that it does
    not hold +280 MB of scratch; its probabilities are those of faster-whisper's own model, bit for bit."""
    from faster_whisper import vad
    from faster_whisper.utils import get_assets_path

    install_sliced_vad()
    own = vad.SileroVADModel(str(Path(get_assets_path()) / "silero_vad_v6.onnx"))
    padded = np.pad(meeting, (0, 512 - meeting.size % 512))
    assert np.array_equal(np.asarray(own(padded)).reshape(-1), vad.get_vad_model()(padded))

    silence = np.zeros(20 * 60 * SAMPLE_RATE, np.float32)  # one block, all VAD and no speech to decode
    options = TranscriptionOptions()
    assert stopped_after(lambda stop: transcribe(tiny_en, silence, options, 8, stop=stop), 0.3) < STOP_WITHIN_S


def test_builtin_diarization_stops(meeting: np.ndarray) -> None:
    """The engine hands the diarizer a progress callback that checks the StopSignal; the builtin diarizer reports
    after every model pass, so the check comes often enough."""
    diarizer = load_diarizer("builtin", WorkerSettings(diarizer="builtin"), "cpu")

    def run(stop: StopSignal) -> object:
        return diarizer.diarize(meeting, SpeakerCountHint(), progress=lambda fraction: stop.check())

    assert stopped_after(run, 1.0) < STOP_WITHIN_S


def test_a_job_stopped_before_its_decode_decodes_nothing(no_ffmpeg_left: None) -> None:
    """A stop already set when the decode begins: nothing is decoded."""
    stop = StopSignal()
    stop.set("shutting down")
    clip = realspeech("jfk.wav")
    with pytest.raises(JobStopped, match="shutting down"):
        decode_audio(clip, 600.0, stop=stop)
    assert decode_audio(clip, 600.0).size > 10 * SAMPLE_RATE  # the same file decodes without a stop


def test_pyannote_runs_small_batches_on_cpu() -> None:
    """pyannote reports progress once per batch; on CPU its batches are capped so that reports (and stops) come
    often. pyannote.audio does not import here, so this checks the cap on a stand-in pipeline."""
    pipeline = SimpleNamespace(segmentation_batch_size=32, embedding_batch_size=2)
    limit_batches(pipeline, CPU_BATCH)
    assert (pipeline.segmentation_batch_size, pipeline.embedding_batch_size) == (CPU_BATCH, 2)
