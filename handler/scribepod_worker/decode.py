"""Stage 1: any container ffmpeg reads (audio or video) to 16 kHz mono float32, the input every later stage expects.

Memory is the samples kept plus one growth step: a few kilobytes of FLAC can expand to hours of audio, so the buffer
never grows past the worker's limit, and a file whose stated duration is over the limit is refused before decoding.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import cast

import ffmpeg
import numpy as np

from scribepod_worker.errors import WorkerError
from scribepod_worker.stop import StopSignal

SAMPLE_RATE = 16_000
_SAMPLE_BYTES = 4  # float32
# ffmpeg's output is read this many bytes at a time (16 s of audio): the unit of decode progress and stop checks.
_READ_BYTES = 1 << 20
# How much the buffer grows when the audio outlasts it (64 s, 4 MB): the most it ever holds beyond the samples kept.
GROW_BYTES = 64 * SAMPLE_RATE * _SAMPLE_BYTES
# A decode that ends sooner than this reports no progress of its own (the job already shows "decode 0%").
_QUIET_S = 2.0
# How often the stop watcher and ffprobe's wait look at the stop signal.
_STOP_POLL_S = 0.1
# ffprobe reads headers (and, for some containers, the last packets' timestamps): seconds, not minutes.
_PROBE_TIMEOUT_S = 30.0
# ffmpeg's warning when a duration is a guess from the bitrate (ADTS AAC, MP3 without a Xing header): not trusted.
_BITRATE_GUESS = b"Estimating duration from bitrate"

ProgressCallback = Callable[[float], None]


@dataclass(frozen=True)
class StatedDuration:
    """What the file says about its audio's length before decoding. `trusted`: read from the container or stream
    header (a sample count, an index, the last timestamp), not guessed from the bitrate, so a file that states more
    than the limit is refused without decoding it. A short statement is never relied on: the decode counts anyway."""

    seconds: float | None
    trusted: bool
    channels: int | None = None


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


def decode_audio(
    path: Path,
    max_seconds: float,
    progress: ProgressCallback | None = None,
    *,
    stop: StopSignal | None = None,
    channel: int | None = None,
) -> np.ndarray:
    """Decode the first audio stream of `path`; raise `audio_too_long` past `max_seconds` without decoding it all.

    ffmpeg's output is read straight into one float32 array, sized from the stated duration and grown by
    GROW_BYTES where the audio outlasts it (in place: numpy reallocates, and Linux moves large blocks without
    copying), never past `max_seconds` and one sample: the moment the audio is longer, ffmpeg is killed and the job
    refused. `progress` gets the decoded fraction every 16 s of audio when the duration is known and decoding takes
    over 2 s. `stop`, when set, kills ffmpeg within about 0.1 s and raises `JobStopped`.

    `channel` (0-based) decodes that channel alone instead of the mix of all (a multichannel job decodes each in
    turn, so it holds one buffer per channel, each under the same limit).
    """
    stated = stated_duration(path, stop)
    if stated.trusted and stated.seconds is not None and stated.seconds > max_seconds:
        raise _too_long(max_seconds, f"the file states {stated.seconds:.0f} s")
    limit_bytes = int(max_seconds * SAMPLE_RATE) * _SAMPLE_BYTES
    ceiling = limit_bytes + _SAMPLE_BYTES  # one sample past the limit is how a too-long decode is recognised
    expected = stated.seconds
    first = int((expected + 1.0) * SAMPLE_RATE) * _SAMPLE_BYTES if expected else GROW_BYTES
    audio = np.empty(min(first, ceiling) // _SAMPLE_BYTES, np.float32)
    picked = {} if channel is None else {"af": f"pan=mono|c0=c{channel}"}
    args = (
        ffmpeg.input(str(path), nostdin=None)
        .output(
            "pipe:",
            map="0:a:0",
            format="f32le",
            acodec="pcm_f32le",
            ac=1,
            ar=SAMPLE_RATE,
            t=max_seconds + 1.0,
            **picked,
        )
        .global_args("-hide_banner", "-loglevel", "error")
        .compile(cmd=ffmpeg_binary())
    )
    filled = 0  # bytes
    started = time.monotonic()
    finished = threading.Event()
    with subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stdout is not None and process.stderr is not None
        stderr = process.stderr
        stdout = cast(io.BufferedReader, process.stdout)  # Popen's default buffering
        errors: list[bytes] = []
        drain = threading.Thread(target=lambda: errors.append(stderr.read()), daemon=True)
        drain.start()
        if stop is not None:
            threading.Thread(target=_kill_on_stop, args=(process, stop, finished), daemon=True).start()
        try:
            while True:
                if filled == audio.nbytes:
                    grown = min(audio.nbytes + GROW_BYTES, ceiling)
                    audio.resize(grown // _SAMPLE_BYTES, refcheck=False)  # realloc; zero-fills only the new step
                with audio.data.cast("B") as whole, whole[filled : filled + _READ_BYTES] as window:
                    got = stdout.readinto(window)
                if stop is not None:
                    stop.check()
                if not got:
                    break
                filled += got
                if filled > limit_bytes:
                    raise _too_long(max_seconds, "decoding went past it")
                if progress is not None and expected and time.monotonic() - started > _QUIET_S:
                    progress(min(1.0, filled / _SAMPLE_BYTES / (expected * SAMPLE_RATE)))
        finally:
            finished.set()
            if process.poll() is None:
                process.kill()  # refused, stopped or failed mid-stream: ffmpeg is not left writing to nobody
            process.wait()
            drain.join()
        code = process.returncode
    if code != 0:
        message = b"".join(errors).decode("utf-8", "replace").replace(str(path), "input")
        raise WorkerError("audio_decode_failed", _explain(message))
    audio.resize(filled // _SAMPLE_BYTES, refcheck=False)  # gives back what the duration over-estimated, in place
    return audio


def _too_long(max_seconds: float, why: str) -> WorkerError:
    return WorkerError(
        "audio_too_long",
        f"audio is longer than this worker's limit of {max_seconds:g} s (SCRIBEPOD_MAX_AUDIO_SECONDS): {why}",
    )


def _kill_on_stop(process: subprocess.Popen[bytes], stop: StopSignal, finished: threading.Event) -> None:
    """Kill ffmpeg when the job is stopped, so a read blocked on its pipe returns at once."""
    while not finished.is_set():
        if stop.wait(_STOP_POLL_S):
            if not finished.is_set():
                process.kill()
            return


def stated_duration(path: Path, stop: StopSignal | None = None) -> StatedDuration:
    """The first audio stream's duration (and channel count) as ffprobe (next to ffmpeg) reads it from the file's
    headers.

    The stream's own duration where the container gives one; else the container's, which counts for the audio
    only when it is the file's one stream (a video's length says nothing about its soundtrack's). A guess from the
    bitrate is returned untrusted.
    """
    probe = shutil.which("ffprobe") or str(Path(ffmpeg_binary()).with_name("ffprobe"))
    entries = "stream=duration,channels:format=duration,nb_streams"
    command = [probe, "-v", "warning", "-select_streams", "a:0", "-show_entries", entries, "-of", "json", str(path)]
    try:
        with subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        ) as process:
            deadline = time.monotonic() + _PROBE_TIMEOUT_S
            while True:
                try:
                    out, err = process.communicate(timeout=_STOP_POLL_S)
                    break
                except subprocess.TimeoutExpired:
                    if (stop is not None and stop.is_set) or time.monotonic() > deadline:
                        process.kill()
                        process.communicate()
                        if stop is not None:
                            stop.check()
                        return StatedDuration(None, False)
        found = json.loads(out)
    except (OSError, ValueError):
        return StatedDuration(None, False)
    stream = (found.get("streams") or [{}])[0]
    container = found.get("format") or {}
    seconds = _seconds(stream.get("duration"))
    if seconds is None and container.get("nb_streams") == 1:
        seconds = _seconds(container.get("duration"))
    channels = stream.get("channels")
    return StatedDuration(
        seconds,
        seconds is not None and _BITRATE_GUESS not in err,
        channels if isinstance(channels, int) and channels > 0 else None,
    )


def _seconds(value: object) -> float | None:
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
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
