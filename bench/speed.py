"""Side-by-side speed on one long recording: faster-whisper's plain sequential `transcribe` (what the official
RunPod faster-whisper worker runs: beam 5, VAD on, no diarization), faster-whisper's batched pipeline, and the
scribepod handler (batched ASR, word timestamps, the worker's default CPU diarizer), same file, same model, same
machine, one run; plus that diarizer alone. Prints the times and ratios, for real speech and for a real/synthetic
mix, and, per real clip in ../shared/realspeech, the words and seconds of sequential decoding, the bare batched
pipeline (the worker's ASR before it finished the chunks the pipeline ends early) and the worker's ASR.

    .venv/bin/python bench/speed.py --minutes 10
    .venv/bin/python bench/speed.py --recording clips
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
REALSPEECH = ROOT.parent / "shared" / "realspeech"
sys.path.insert(0, str(ROOT / "tests"))

from synth import VOICES, round_robin, synthesize_conversation  # noqa: E402

SAMPLE_RATE = 16_000


def build_recording(kind: str, minutes: float, path: Path) -> None:
    """`real`: pyannote's real two-speaker telephone sample, repeated. `mixed`: that sample alternating with a
    4-voice espeak-ng conversation (clean synthetic speech, which sequential decoding finds easy). `meeting`: the six
    far-field AMI excerpts of ../shared/realspeech, repeated (overlap and crosstalk: where the batched pipeline ends
    chunks early and the worker decodes their rest again)."""
    real, rate = sf.read(ROOT / ".cache" / "sample" / "sample.wav", dtype="float32")
    assert rate == SAMPLE_RATE
    sources = [real]
    if kind == "meeting":
        sources = [sf.read(clip, dtype="float32")[0] for clip in sorted(REALSPEECH.glob("ami_*.wav"))]
    if kind == "mixed":
        with tempfile.TemporaryDirectory() as tmp:
            synthesize_conversation(round_robin(VOICES[:4], 24), Path(tmp) / "conv.wav")
            sources.append(sf.read(Path(tmp) / "conv.wav", dtype="float32")[0])
    pieces, total, target = [], 0, int(minutes * 60 * SAMPLE_RATE)
    while total < target:
        for piece in sources:
            pieces.append(piece)
            total += piece.size
    sf.write(path, np.concatenate(pieces)[:target], SAMPLE_RATE, subtype="PCM_16")


def measure(kind: str, minutes: float, model_name: str) -> dict[str, float | str]:
    """Both pipelines on one recording; the models load before the clocks start."""
    from faster_whisper import BatchedInferencePipeline, WhisperModel
    from faster_whisper.audio import decode_audio

    from scribepod_worker import handler
    from scribepod_worker.config import WorkerSettings
    from scribepod_worker.diarize.base import SpeakerCountHint
    from scribepod_worker.engine import Engine
    from scribepod_worker.transcribe import resolve_model

    settings = WorkerSettings(model=model_name, device="cpu", allow_local_files=True)
    with tempfile.TemporaryDirectory() as tmp:
        recording = Path(tmp) / "recording.wav"
        build_recording(kind, minutes, recording)

        model = WhisperModel(str(resolve_model(model_name, settings).path), device="cpu", compute_type="int8")
        started = time.perf_counter()
        segments, _ = model.transcribe(str(recording), beam_size=5, vad_filter=True)
        sequential_words = sum(len(segment.text.split()) for segment in segments)  # the generator decodes lazily
        sequential = time.perf_counter() - started
        started = time.perf_counter()
        segments, _ = BatchedInferencePipeline(model).transcribe(str(recording), batch_size=8, beam_size=5)
        for _ in segments:
            pass
        batched = time.perf_counter() - started
        del model

        jobs: dict[bool, tuple[dict[str, Any], float]] = {}  # recover_speech -> (output, wall seconds)
        for recover_speech in (False, True):  # the default (True) last: its engine's diarizer is timed below
            engine = Engine(dataclasses.replace(settings, recover_speech=recover_speech))
            engine.warm_up()
            handler.set_engine(engine)
            started = time.perf_counter()
            job_output = handler.handle({"id": "bench", "input": {"audio": str(recording)}})
            jobs[recover_speech] = job_output, time.perf_counter() - started
            assert "error" not in job_output, job_output["error"]
        output, scribepod = jobs[True]
        fast_output, fast = jobs[False]
        audio = decode_audio(str(recording))
        started = time.perf_counter()
        engine.diarizer().diarize(audio, SpeakerCountHint())
        diarizer_alone = time.perf_counter() - started
    timings = output["timings"]
    return {
        "recording": kind,
        "minutes": minutes,
        "sequential_words": sequential_words,
        "scribepod_words": sum(len(segment["text"].split()) for segment in output["segments"]),
        "fast_words": sum(len(segment["text"].split()) for segment in fast_output["segments"]),
        "fast": fast,
        "fast_asr": fast_output["timings"]["asr"],
        "sequential": sequential,
        "batched": batched,
        "scribepod": scribepod,
        "diarizer_alone": diarizer_alone,
        "asr": timings["asr"],
        "diarize": timings["diarize"],
        "speakers": str(len(output["speakers"])),
    }


def table(rows: list[dict[str, float | str]]) -> str:
    """Markdown table of `measure` rows: the three pipelines side by side, ratios to sequential."""
    lines = [
        "| recording | fw sequential s | fw batched s | scribepod s | scribepod / sequential | scribepod / batched"
        " | scribepod ASR s | ASR / sequential | diarizer alone s | diarizer / scribepod ASR | speakers"
        " | words sequential / scribepod | recovery off: s, ASR s, / sequential, words |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        seq, bat, ours, asr = (float(row[key]) for key in ("sequential", "batched", "scribepod", "asr"))
        lines.append(
            f"| {row['recording']} ({float(row['minutes']):g} min) | {seq:.1f} | {bat:.1f} | {ours:.1f}"
            f" | {ours / seq:.2f} | {ours / bat:.2f} | {asr:.1f} | {asr / seq:.2f} | {float(row['diarizer_alone']):.1f}"
            f" | {float(row['diarizer_alone']) / asr:.2f} | {row['speakers']}"
            f" | {row['sequential_words']} / {row['scribepod_words']}"
            f" | {float(row['fast']):.1f}, {float(row['fast_asr']):.1f}, {float(row['fast']) / seq:.2f},"
            f" {row['fast_words']} |"
        )
    return "\n".join(lines)


def clip_words(model: Any, audio: np.ndarray) -> tuple[list[int], list[float]]:
    """Words found and wall seconds on one clip: sequential faster-whisper (beam 5, VAD, word timestamps), the bare
    batched pipeline as the worker called it before it finished the chunks the pipeline ends early (timestamps and
    word timestamps on, batch 8), and the worker's ASR with a job's default options."""
    from faster_whisper import BatchedInferencePipeline

    from scribepod.models import TranscriptionOptions
    from scribepod_worker.transcribe import DEFAULT_BATCH_SIZE, transcribe

    words, seconds = [], []
    for path in ("sequential", "batched", "scribepod"):
        started = time.perf_counter()
        if path == "sequential":
            segments: Any = model.transcribe(audio, beam_size=5, vad_filter=True, word_timestamps=True)[0]
        elif path == "batched":
            pipeline = BatchedInferencePipeline(model)
            segments = pipeline.transcribe(
                audio, batch_size=8, beam_size=5, word_timestamps=True, without_timestamps=False
            )[0]
        else:
            segments = transcribe(model, audio, TranscriptionOptions(), DEFAULT_BATCH_SIZE["cpu"]).segments
        words.append(sum(len(segment.words or ()) for segment in segments))  # generators decode lazily
        seconds.append(time.perf_counter() - started)
    return words, seconds


def clips(model_name: str) -> str:
    """Markdown table of `clip_words` per real clip (../shared/realspeech and pyannote's sample), the model loaded
    once before the clocks start."""
    from faster_whisper import WhisperModel

    from scribepod_worker.config import WorkerSettings
    from scribepod_worker.transcribe import resolve_model

    path = resolve_model(model_name, WorkerSettings(model=model_name, device="cpu")).path
    model = WhisperModel(str(path), device="cpu", compute_type="int8")
    lines = [
        "| clip | words sequential | words batched pipeline | words scribepod | s sequential | s batched pipeline"
        " | s scribepod |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    totals = np.zeros(3)
    for recording in [*sorted(REALSPEECH.glob("*.wav")), ROOT / ".cache" / "sample" / "sample.wav"]:
        words, seconds = clip_words(model, sf.read(recording, dtype="float32")[0])
        totals += seconds
        lines.append(
            f"| {recording.stem} | {' | '.join(map(str, words))} | {' | '.join(f'{x:.1f}' for x in seconds)} |"
        )
    lines.append(f"| all | | | | {' | '.join(f'{x:.1f}' for x in totals)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--recording", choices=["real", "mixed", "meeting", "both", "clips"], default="both")
    args = parser.parse_args()
    if args.recording == "clips":
        print(f"real clips, model {args.model}, CPU int8, {os.cpu_count()} cores; wall seconds")
        print(clips(args.model))
        return
    kinds = ["real", "mixed"] if args.recording == "both" else [args.recording]
    print(f"{args.minutes:g} min per recording, model {args.model}, CPU int8, {os.cpu_count()} cores; wall seconds")
    print(table([measure(kind, args.minutes, args.model) for kind in kinds]))
    print("fw sequential = faster-whisper transcribe(beam_size=5, vad_filter=True), as the official RunPod worker")
    print("fw batched    = faster-whisper BatchedInferencePipeline(batch_size=8), no word timestamps")
    print("scribepod     = the handler: batched ASR, word timestamps, the default CPU diarizer beside it")
    print("recovery off  = the same with SCRIBEPOD_RECOVER_SPEECH=0 (skipped speech is not decoded again)")


if __name__ == "__main__":
    main()
