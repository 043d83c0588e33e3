"""One recording in shards against one job: `python -m bench.shards [--minutes 60] [--shards 4]`.

The 60-minute bench recording (bench/recordings.py: real and synthetic conversations tiled, exact turns) goes once as
a single job and once in N shards through the SDK, both against `serve --concurrency N` on this machine. Both get the
same audio: 16 kHz mono Opus, which the SDK sends for a shard over the inline limit anyway. Printed:
- words that differ between the two (all, and within 5 s of a seam); as a control, between two single jobs whose
  audio is offset by 1 s, which packs the speech into other 30 s chunks just as cutting does;
- DER of each against the reference, and the speakers found;
- the critical path (the longest shard plus cutting and merging) against the single job;
- a projection for N GPU workers, and the merge's own cost per hour of audio.
"""

from __future__ import annotations

import argparse
import bisect
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

from bench.recordings import joined
from scribepod import Client
from scribepod._sources import compress_for_upload
from scribepod.models import Transcript
from scribepod.shards import SpeakerHint, cut_recording, merge

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from scoring import diarization_error_rate
from servers import local_endpoint

# Projection assumptions (stated in the output): a warm worker per shard, the shard's audio uploaded at this rate, and
# a GPU that transcribes this many seconds of audio per second (large-v3-turbo batched on an L4-class GPU).
UPLOAD_BYTES_PER_S = 10e6
GPU_AUDIO_S_PER_S = 100.0
COLD_START_S = 0.0
CONTROL_DELAY_S = 1.0  # the control job's audio starts this much later (silence first)
MATCH_S = 1.0  # a word counts as the same when the other transcript has it within this many seconds


def words_of(transcript: Transcript) -> list[tuple[float, str]]:
    return [(w.start, w.word.strip().lower()) for s in transcript.segments for w in s.words]


def differing(single: Transcript, sharded: Transcript, seams: list[float]) -> tuple[int, int, int]:
    """Words of either transcript with no equal word in the other within `MATCH_S` of it (the recording repeats its
    pieces, so a sequence alignment would pair words with another repetition), how many of those lie within 5 s of
    a seam, and the single job's word count."""
    left, right = words_of(single), words_of(sharded)
    unmatched = near = 0
    for ours, theirs in ((left, right), (right, left)):
        starts = [start for start, _ in theirs]
        for start, word in ours:
            low, high = bisect.bisect_left(starts, start - MATCH_S), bisect.bisect_right(starts, start + MATCH_S)
            if all(theirs[k][1] != word for k in range(low, high)):
                unmatched += 1
                near += any(abs(start - seam) <= 5.0 for seam in seams)
    return unmatched, near, len(left)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--shards", type=int, default=4)
    args = parser.parse_args()
    recording = joined(args.minutes)
    with tempfile.TemporaryDirectory(prefix="bench-shards-") as folder:
        opus = Path(folder) / "recording.ogg"
        encoded = compress_for_upload(recording.path.read_bytes(), "recording.wav")
        assert encoded is not None, "ffmpeg is needed"
        opus.write_bytes(encoded)
        with local_endpoint("--concurrency", str(args.shards)) as base:
            with Client(base_url=base, timeout=None, request_timeout=120) as client:
                started = time.perf_counter()
                single = client.transcribe(opus)
                single_wall = time.perf_counter() - started
                started = time.perf_counter()
                sharded = client.transcribe(opus, shards=args.shards)
                sharded_wall = time.perf_counter() - started
                control = _shifted(client.transcribe(_delayed(recording.path, Path(folder))), CONTROL_DELAY_S)
            started = time.perf_counter()
            pieces = cut_recording(opus, args.shards, args.shards, Path(folder))
            cut_s = time.perf_counter() - started
    assert pieces is not None and sharded.job is not None and sharded.job.shards
    shard_times = [info.execution_time or 0.0 for info in sharded.job.shards]
    seams = [info.offset or 0.0 for info in sharded.job.shards[1:]]
    parts = [
        (piece, _stub(info.offset or 0.0, sharded, piece.end))
        for piece, info in zip(pieces, sharded.job.shards, strict=True)
    ]
    merge_s = min(_timed(lambda: merge(parts, SpeakerHint())) for _ in range(5))
    reference = recording.turns
    der_single = diarization_error_rate(reference, [(t.start, t.end, t.speaker) for t in single.turns])
    der_sharded = diarization_error_rate(reference, [(t.start, t.end, t.speaker) for t in sharded.turns])
    unmatched, near, total = differing(single, sharded, seams)
    control_unmatched, _, _ = differing(single, control, [])
    single_exec = (single.job.execution_time if single.job else None) or single_wall
    # The shards ran N at once on 2 cores, so their own times are inflated by sharing the CPU: the critical path
    # takes the longest shard at the single job's rate (a shard alone on its own worker), plus cutting and merging.
    longest = max(piece.end - piece.start for piece in pieces)
    critical = single_exec * longest / recording.seconds + cut_s + merge_s
    print(f"recording: {recording.name}, {recording.seconds / 60:.0f} min, {recording.speakers} speakers (reference)")
    print(f"cuts at {[round(s, 1) for s in seams]} s; shard lengths {[round(p.end - p.start) for p in pieces]} s")
    print(f"| | single job | {args.shards} shards |")
    print("| --- | --- | --- |")
    print(f"| words | {total} | {len(words_of(sharded))} |")
    print(f"| words differing from the single job (of which within 5 s of a seam) | | {unmatched} ({near}) |")
    print(
        f"| control: one job on the same audio {CONTROL_DELAY_S:.0f} s later, words differing | {control_unmatched} | |"
    )
    print(f"| DER | {der_single:.1%} | {der_sharded:.1%} |")
    print(f"| speakers found | {len(single.speakers)} | {len(sharded.speakers)} |")
    print(f"| execution s (single) / per shard | {single_exec:.1f} | {', '.join(f'{t:.1f}' for t in shard_times)} |")
    path = f"longest shard {longest:.0f} s at the single job's rate + cut {cut_s:.1f} + merge"
    print(f"| critical path s ({path}) | {single_exec:.1f} | {critical:.1f} |")
    print(f"| wall s on this 2-core machine | {single_wall:.1f} | {sharded_wall:.1f} |")
    print(
        f"merge: {merge_s * 1000:.2f} ms for {recording.seconds / 60:.0f} min "
        f"({merge_s * 1000 * 3600 / recording.seconds:.2f} ms per audio hour)"
    )
    print(
        f"projection (assumed: warm workers, cold start {COLD_START_S:.0f} s, upload "
        f"{UPLOAD_BYTES_PER_S / 1e6:.0f} MB/s, a GPU at {GPU_AUDIO_S_PER_S:.0f} s of audio per s, "
        "cut and merge as here):"
    )
    for workers in (1, 2, 4, 8, 16):
        upload = len(encoded) / workers / UPLOAD_BYTES_PER_S
        extra = cut_s + merge_s if workers > 1 else 0.0
        total_s = COLD_START_S + upload + recording.seconds / workers / GPU_AUDIO_S_PER_S + extra
        print(f"  {workers:2d} workers: {total_s:6.1f} s ({(recording.seconds / GPU_AUDIO_S_PER_S) / total_s:.1f}x)")


def _delayed(wav: Path, folder: Path) -> Path:
    """The recording after `CONTROL_DELAY_S` of silence, encoded as the others: the same speech, other 30 s chunks."""
    audio, rate = sf.read(wav, dtype="float32")
    delayed = folder / "delayed.wav"
    sf.write(delayed, np.concatenate([np.zeros(round(CONTROL_DELAY_S * rate), np.float32), audio]), rate)
    encoded = compress_for_upload(delayed.read_bytes(), "delayed.wav")
    assert encoded is not None
    target = folder / "delayed.ogg"
    target.write_bytes(encoded)
    return target


def _shifted(transcript: Transcript, seconds: float) -> Transcript:
    segments = [
        s.model_copy(update={"words": [w.model_copy(update={"start": w.start - seconds}) for w in s.words]})
        for s in transcript.segments
    ]
    return transcript.model_copy(update={"segments": segments})


def _stub(offset: float, sharded: Transcript, end: float) -> Transcript:
    """The merged transcript's part between `offset` and `end`, on the shard's clock: what the shard returned, for
    timing `merge` without the endpoint."""
    segments = [
        s.model_copy(
            update={
                "start": s.start - offset,
                "end": s.end - offset,
                "words": [w.model_copy(update={"start": w.start - offset, "end": w.end - offset}) for w in s.words],
            }
        )
        for s in sharded.segments
        if offset <= s.start < end
    ]
    turns = [
        t.model_copy(update={"start": t.start - offset, "end": t.end - offset})
        for t in sharded.turns
        if offset <= t.start < end
    ]
    return sharded.model_copy(update={"segments": segments, "turns": turns, "formats": {}, "timings": {"total": 0.0}})


def _timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
