"""Stage 1: any container ffmpeg reads (audio or video) to 16 kHz mono float32, the input every later stage expects."""

from __future__ import annotations

import shutil
from functools import cache
from pathlib import Path

import ffmpeg
import numpy as np

from scribepod_worker.errors import WorkerError

SAMPLE_RATE = 16_000


@cache
def ffmpeg_binary() -> str:
    """The system ffmpeg, else the one shipped in the `imageio-ffmpeg` wheel."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError:
        raise WorkerError(
            "internal", "ffmpeg is not installed: apt-get install ffmpeg, or pip install imageio-ffmpeg"
        ) from None
    return str(imageio_ffmpeg.get_ffmpeg_exe())


def decode_audio(path: Path, max_seconds: float) -> np.ndarray:
    """Decode the first audio stream of `path`; raise `audio_too_long` past `max_seconds` without decoding it all."""
    stream = ffmpeg.input(str(path), nostdin=None).output(
        "pipe:",
        map="0:a:0",
        format="f32le",
        acodec="pcm_f32le",
        ac=1,
        ar=SAMPLE_RATE,
        t=max_seconds + 1.0,
    )
    try:
        raw, _ = stream.global_args("-hide_banner", "-loglevel", "error").run(
            cmd=ffmpeg_binary(), capture_stdout=True, capture_stderr=True
        )
    except ffmpeg.Error as error:
        stderr = error.stderr.decode("utf-8", "replace").replace(str(path), "input")
        raise WorkerError("audio_decode_failed", _explain(stderr)) from None
    audio = np.frombuffer(raw, dtype=np.float32)
    if audio.size / SAMPLE_RATE > max_seconds:
        raise WorkerError(
            "audio_too_long",
            f"audio is longer than this worker's limit of {max_seconds:g} s (SCRIBEPOD_MAX_AUDIO_SECONDS)",
        )
    return audio


def _explain(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if any("matches no streams" in line for line in lines):
        return "the file contains no audio stream"
    detail = lines[-1] if lines else "ffmpeg failed without a message"
    if detail.startswith("pipe:") or "Error opening output" in detail:
        detail = next((line for line in lines if "Invalid data" in line or "moov atom" in line), detail)
    return f"could not decode the audio: {detail}"
