"""Stage 1: any container ffmpeg reads (audio or video) to 16 kHz mono float32, the input every later stage expects."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import cast

import ffmpeg
import numpy as np

from scribepod_worker.errors import WorkerError

SAMPLE_RATE = 16_000
# ffmpeg's output is read this many bytes at a time (16 s of audio): the unit of decode progress.
_READ_BYTES = 1 << 20
# A decode that ends sooner than this reports no progress of its own (the job already shows "decode 0%").
_QUIET_S = 2.0

ProgressCallback = Callable[[float], None]


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


def decode_audio(path: Path, max_seconds: float, progress: ProgressCallback | None = None) -> np.ndarray:
    """Decode the first audio stream of `path`; raise `audio_too_long` past `max_seconds` without decoding it all.

    ffmpeg's output is read straight into one float32 array sized from the container's duration, so a two-hour
    file costs its 460 MB once (collecting the bytes and then converting them held two copies). `progress` gets the
    decoded fraction every 16 s of audio when the duration is known and decoding takes over 2 s.
    """
    args = (
        ffmpeg.input(str(path), nostdin=None)
        .output("pipe:", map="0:a:0", format="f32le", acodec="pcm_f32le", ac=1, ar=SAMPLE_RATE, t=max_seconds + 1.0)
        .global_args("-hide_banner", "-loglevel", "error")
        .compile(cmd=ffmpeg_binary())
    )
    expected = _duration(path)
    capacity = min(max_seconds + 1.0, expected + 1.0) if expected else 60.0
    audio = np.empty(int(capacity * SAMPLE_RATE), np.float32)
    filled = 0  # bytes
    started = time.monotonic()
    with subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stdout is not None and process.stderr is not None
        stderr = process.stderr
        stdout = cast(io.BufferedReader, process.stdout)  # Popen's default buffering
        errors: list[bytes] = []
        drain = threading.Thread(target=lambda: errors.append(stderr.read()), daemon=True)
        drain.start()
        while True:
            if filled == audio.nbytes:
                audio.resize(2 * audio.size, refcheck=False)  # realloc: in place for large arrays on Linux
            with audio.data.cast("B") as whole, whole[filled : filled + _READ_BYTES] as window:
                got = stdout.readinto(window)
            if not got:
                break
            filled += got
            if progress is not None and expected and time.monotonic() - started > _QUIET_S:
                progress(min(1.0, filled / 4 / (expected * SAMPLE_RATE)))
        drain.join()
        code = process.wait()
    if code != 0:
        message = b"".join(errors).decode("utf-8", "replace").replace(str(path), "input")
        raise WorkerError("audio_decode_failed", _explain(message))
    audio.resize(filled // 4, refcheck=False)  # gives back what the duration over-estimated, in place
    if audio.size / SAMPLE_RATE > max_seconds:
        raise WorkerError(
            "audio_too_long",
            f"audio is longer than this worker's limit of {max_seconds:g} s (SCRIBEPOD_MAX_AUDIO_SECONDS)",
        )
    return audio


def _duration(path: Path) -> float | None:
    """The container's duration in seconds from ffprobe (next to ffmpeg), None where it cannot tell."""
    probe = shutil.which("ffprobe") or str(Path(ffmpeg_binary()).with_name("ffprobe"))
    try:
        found = subprocess.run(
            [probe, "-v", "error", "-show_entries", "format=duration", "-of", "json", str(path)],
            capture_output=True,
            timeout=30,
            check=True,
        )
        seconds = float(json.loads(found.stdout)["format"]["duration"])
    except (OSError, subprocess.SubprocessError, ValueError, KeyError, TypeError):
        return None
    return seconds if 0 < seconds < 1e7 else None


def _explain(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if any("matches no streams" in line for line in lines):
        return "the file contains no audio stream"
    detail = lines[-1] if lines else "ffmpeg failed without a message"
    if detail.startswith("pipe:") or "Error opening output" in detail:
        detail = next((line for line in lines if "Invalid data" in line or "moov atom" in line), detail)
    return f"could not decode the audio: {detail}"
