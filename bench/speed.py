"""Side-by-side speed on one long recording: faster-whisper's plain sequential `transcribe` (what the official
RunPod faster-whisper worker runs: beam 5, VAD on, no diarization), faster-whisper's batched pipeline, and the
scribepod handler (batched ASR, word timestamps, `lite` diarization), same file, same model, same machine, one run;
plus the `lite` diarizer alone. Prints the times and ratios, for real speech and for a real/synthetic mix.

    .venv/bin/python bench/speed.py --minutes 10
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from synth import VOICES, round_robin, synthesize_conversation  # noqa: E402

SAMPLE_RATE = 16_000


def build_recording(kind: str, minutes: float, path: Path) -> None:
    """`real`: pyannote's real two-speaker telephone sample, repeated. `mixed`: that sample alternating with a
    4-voice espeak-ng conversation (clean synthetic speech, which sequential decoding finds easy)."""
    real, rate = sf.read(ROOT / ".cache" / "sample" / "sample.wav", dtype="float32")
    assert rate == SAMPLE_RATE
    sources = [real]
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

    settings = WorkerSettings(model=model_name, device="cpu", diarizer="lite", allow_local_files=True)
    with tempfile.TemporaryDirectory() as tmp:
        recording = Path(tmp) / "recording.wav"
        build_recording(kind, minutes, recording)

        model = WhisperModel(str(resolve_model(model_name, settings).path), device="cpu", compute_type="int8")
        started = time.perf_counter()
        segments, _ = model.transcribe(str(recording), beam_size=5, vad_filter=True)
        for _ in segments:  # the generator decodes lazily
            pass
        sequential = time.perf_counter() - started
        started = time.perf_counter()
        segments, _ = BatchedInferencePipeline(model).transcribe(str(recording), batch_size=8, beam_size=5)
        for _ in segments:
            pass
        batched = time.perf_counter() - started
        del model

        engine = Engine(settings)
        engine.warm_up()
        handler.set_engine(engine)
        started = time.perf_counter()
        output = handler.handle({"id": "bench", "input": {"audio": str(recording)}})
        scribepod = time.perf_counter() - started
        assert "error" not in output, output["error"]
        audio = decode_audio(str(recording))
        started = time.perf_counter()
        engine.diarizer().diarize(audio, SpeakerCountHint())
        diarizer_alone = time.perf_counter() - started
    timings = output["timings"]
    return {
        "recording": kind,
        "minutes": minutes,
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
        " | lite alone s | lite / scribepod ASR | speakers |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        seq, bat, ours = float(row["sequential"]), float(row["batched"]), float(row["scribepod"])
        lines.append(
            f"| {row['recording']} ({float(row['minutes']):g} min) | {seq:.1f} | {bat:.1f} | {ours:.1f}"
            f" | {ours / seq:.2f} | {ours / bat:.2f} | {float(row['diarizer_alone']):.1f}"
            f" | {float(row['diarizer_alone']) / float(row['asr']):.2f} | {row['speakers']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--recording", choices=["real", "mixed", "both"], default="both")
    args = parser.parse_args()
    kinds = ["real", "mixed"] if args.recording == "both" else [args.recording]
    print(f"{args.minutes:g} min per recording, model {args.model}, CPU int8, {os.cpu_count()} cores; wall seconds")
    print(table([measure(kind, args.minutes, args.model) for kind in kinds]))
    print("fw sequential = faster-whisper transcribe(beam_size=5, vad_filter=True), as the official RunPod worker")
    print("fw batched    = faster-whisper BatchedInferencePipeline(batch_size=8), no word timestamps")
    print("scribepod     = the handler: batched ASR, word timestamps, lite diarization beside it")


if __name__ == "__main__":
    main()
