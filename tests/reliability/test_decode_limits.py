"""Issue 9, item 5: decompression bombs. A 13.5 KB FLAC of 6.5 hours of silence once cost +1.76 GB to refuse (the
buffer doubled before end of file). A file that states a length over the limit is refused before decoding; one that
states less than it holds, or nothing, is refused as the decode passes the limit, and the buffer never holds more
than the limit plus one growth step.

Memory is what numpy allocates, traced by tracemalloc (the decode's buffer is its only large allocation), so the
figures do not depend on what else the process holds. bench/bombs.py measures peak RSS at the default 4-hour limit.
"""

from __future__ import annotations

import subprocess
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from scribepod_worker.decode import GROW_BYTES, SAMPLE_RATE, decode_audio
from scribepod_worker.errors import WorkerError

BOMB_SECONDS = 23_400  # 6.5 hours
LIMIT_S = 600.0  # a 10-minute limit keeps the decodes short; the bombs are 6.5 hours as reported
LIMIT_BYTES = int(LIMIT_S * SAMPLE_RATE) * 4
MB = 1024 * 1024


def silent_flac(path: Path, seconds: int, *, piped: bool = False) -> Path:
    """`seconds` of silence as FLAC; `piped`: written to a pipe, so the encoder cannot go back to record a length."""
    command = ["ffmpeg", "-y", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "anullsrc=r=1000:cl=mono"]
    command += ["-t", str(seconds), "-c:a", "flac", "-frame_size", "65535"]
    if piped:
        path.write_bytes(subprocess.run([*command, "-f", "flac", "pipe:"], check=True, capture_output=True).stdout)
    else:
        subprocess.run([*command, str(path)], check=True)
    return path


def claim_seconds(flac: Path, seconds: int, out: Path) -> Path:
    """A copy of `flac` whose STREAMINFO states `seconds` (36-bit total sample count after the 20-bit sample
    rate, 3-bit channels and 5-bit depth); every frame is still there, and ffmpeg decodes them all."""
    data = bytearray(flac.read_bytes())
    info = 8  # "fLaC", then the STREAMINFO block's 4-byte header
    rate = (data[info + 10] << 12) | (data[info + 11] << 4) | (data[info + 12] >> 4)
    total = seconds * rate
    data[info + 13] = (data[info + 13] & 0xF0) | (total >> 32)
    data[info + 14 : info + 18] = (total & 0xFFFFFFFF).to_bytes(4, "big")
    out.write_bytes(data)
    return out


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bombs")
    bomb = silent_flac(folder / "bomb.flac", BOMB_SECONDS)
    return {
        "states its length": bomb,
        "claims 8 s": claim_seconds(bomb, 8, folder / "liar.flac"),
        "states nothing": silent_flac(folder / "piped.flac", BOMB_SECONDS, piped=True),
        "5 minutes, piped": silent_flac(folder / "short.flac", 300, piped=True),
    }


def traced_peak(decode: Callable[[], object]) -> tuple[int, object]:
    """Peak bytes allocated (numpy's arrays included) while `decode` runs, and what it returned or raised."""
    tracemalloc.start()
    try:
        outcome: object = decode()
    except WorkerError as error:
        outcome = error
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak, outcome


def test_a_bomb_that_states_its_length_is_refused_before_decoding(bombs: dict[str, Path], job_tmp: Path) -> None:
    started = time.monotonic()
    peak, outcome = traced_peak(lambda: decode_audio(bombs["states its length"], 4 * 3600.0))
    assert isinstance(outcome, WorkerError) and outcome.code == "audio_too_long", outcome
    assert "14400 s" in outcome.message and "the file states 23400 s" in outcome.message
    assert peak < 1 * MB, f"{peak / MB:.0f} MB allocated to refuse a file that says it is too long"
    assert time.monotonic() - started < 5.0


@pytest.mark.parametrize("kind", ["claims 8 s", "states nothing"])
def test_a_bomb_that_hides_its_length_is_refused_within_the_limit(
    bombs: dict[str, Path], job_tmp: Path, kind: str
) -> None:
    """Refused while decoding, holding no more than the limit and one growth step (the committed decoder doubled
    its buffer past the limit: 1.6 to 1.9 times it here)."""
    peak, outcome = traced_peak(lambda: decode_audio(bombs[kind], LIMIT_S))
    assert isinstance(outcome, WorkerError) and outcome.code == "audio_too_long", outcome
    assert "decoding went past it" in outcome.message
    assert peak <= LIMIT_BYTES + GROW_BYTES + MB, f"{peak / MB:.0f} MB to refuse at a {LIMIT_BYTES / MB:.0f} MB limit"


def test_audio_of_unknown_length_costs_its_samples_and_one_step(bombs: dict[str, Path], job_tmp: Path) -> None:
    peak, audio = traced_peak(lambda: decode_audio(bombs["5 minutes, piped"], LIMIT_S))
    assert isinstance(audio, np.ndarray) and audio.size == 300 * SAMPLE_RATE and not audio.any()
    assert audio.nbytes == audio.size * 4  # given back what the last step over-allocated
    assert peak <= audio.nbytes + GROW_BYTES + MB, f"{peak / MB:.0f} MB for {audio.nbytes / MB:.0f} MB of samples"


def test_a_bitrate_guess_is_not_trusted_to_refuse(tmp_path: Path) -> None:
    """ADTS AAC states a length guessed from the bitrate; only the decode may refuse it, and here it must not."""
    from conftest import ffmpeg

    aac = tmp_path / "guess.aac"
    ffmpeg("-f", "lavfi", "-i", "anoisesrc=r=16000:a=0.1", "-t", "30", "-b:a", "8k", str(aac))
    audio = decode_audio(aac, 30.5)
    assert abs(audio.size / SAMPLE_RATE - 30.0) < 0.2
