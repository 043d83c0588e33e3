"""Side-by-side speed on one long recording: faster-whisper's plain sequential `transcribe` (what the official
RunPod faster-whisper worker runs: beam 5, VAD on, no diarization) against the scribepod handler (batched ASR, word
timestamps, `lite` diarization), same file, same model, same machine, one run. Prints both times and the ratio.

    .venv/bin/python bench/speed.py --minutes 10
"""

from __future__ import annotations

import argparse
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


def build_recording(minutes: float, path: Path) -> None:
    """Real speech (pyannote's two-speaker sample) alternating with 4-voice synthetic conversation, to `minutes`."""
    real, rate = sf.read(ROOT / ".cache" / "sample" / "sample.wav", dtype="float32")
    assert rate == SAMPLE_RATE
    with tempfile.TemporaryDirectory() as tmp:
        synthesize_conversation(round_robin(VOICES[:4], 24), Path(tmp) / "conv.wav")
        synthetic, _ = sf.read(Path(tmp) / "conv.wav", dtype="float32")
    pieces, total, target = [], 0, int(minutes * 60 * SAMPLE_RATE)
    while total < target:
        for piece in (real, synthetic):
            pieces.append(piece)
            total += piece.size
    sf.write(path, np.concatenate(pieces)[:target], SAMPLE_RATE, subtype="PCM_16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--model", default="tiny.en")
    args = parser.parse_args()

    from faster_whisper import WhisperModel

    from scribepod_worker import handler
    from scribepod_worker.config import WorkerSettings
    from scribepod_worker.engine import Engine
    from scribepod_worker.transcribe import resolve_model

    settings = WorkerSettings(model=args.model, device="cpu", diarizer="lite", allow_local_files=True)
    with tempfile.TemporaryDirectory() as tmp:
        recording = Path(tmp) / "recording.wav"
        build_recording(args.minutes, recording)
        print(f"recording: {args.minutes:g} min, model {args.model}, cpu int8")

        model = WhisperModel(str(resolve_model(args.model, settings).path), device="cpu", compute_type="int8")
        started = time.perf_counter()
        segments, _ = model.transcribe(str(recording), beam_size=5, vad_filter=True)
        words = sum(len(segment.text.split()) for segment in segments)
        sequential = time.perf_counter() - started
        del model

        engine = Engine(settings)
        engine.warm_up()
        handler.set_engine(engine)
        started = time.perf_counter()
        output = handler.handle({"id": "bench", "input": {"audio": str(recording)}})
        scribepod = time.perf_counter() - started
        assert "error" not in output, output["error"]

    print(f"{'pipeline':<58}{'wall s':>8}{'x realtime':>12}")
    audio_s = args.minutes * 60
    for name, seconds in (
        ("faster-whisper sequential (beam 5, VAD, no diarization)", sequential),
        ("scribepod handler (batched, words, lite diarization)", scribepod),
    ):
        print(f"{name:<58}{seconds:>8.1f}{audio_s / seconds:>12.1f}")
    print(f"ratio scribepod / sequential: {scribepod / sequential:.2f}  (target <= 0.60)")
    print(
        f"stages: {output['timings']}; words: sequential {words}, scribepod {len(output['text'].split())}; "
        f"speakers found: {len(output['speakers'])}"
    )


if __name__ == "__main__":
    main()
