"""Named speakers on real recordings: identification accuracy, false accepts, and what enrolment costs.

Each person is enrolled from their own reference speech (the RTTM's turns, only where nobody else talks), as a
caller would send a clip of someone alone. Jobs run through the real engine (tiny.en, the `builtin` diarizer, CPU).

- Tuning (chose `identify.MATCH_THRESHOLD`): pyannote's sample, ami_trn00 and ami_trn06, each person enrolled from
  the first half of their clip and looked for in the second half, plus the other tuning people as impostors.
- Held out (reported): MEE009 and MEE012 enrolled from ami_dev00 and identified in ami_dev01 (same meeting, other
  excerpt); false accepts of everyone enrolled (the held-out pair and the 8 tuning people) on ami_trn04 and
  ami_trn08, whose 7 speakers are enrolled nowhere.

Accuracy is the share of a person's reference speaking time (frames where they alone speak, 10 ms) that the job
labels with their name; a false accept is a frame of a speaker not enrolled that the job labels with any enrolled
name.

    .venv/bin/python -m bench.speakers [--threshold T]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from scribepod.models import EnrollmentRequest, Transcript, TranscriptionRequest
from scribepod_worker import identify
from scribepod_worker.config import WorkerSettings
from scribepod_worker.engine import Engine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from voices import RATE, Turn, naming, owner, speech_alone, wav_base64  # noqa: E402

from scoring import read_rttm  # noqa: E402

REALSPEECH = ROOT.parent / "shared" / "realspeech"
SAMPLE = ROOT / ".cache" / "sample"
TUNING = {"sample": SAMPLE / "sample", "ami_trn00": REALSPEECH / "ami_trn00", "ami_trn06": REALSPEECH / "ami_trn06"}
IMPOSTOR_CLIPS = ("ami_trn04", "ami_trn08")
# Least solo speech for a tuning person to be enrolled from half a clip.
MIN_ENROL_S = 1.5


def load(stem: Path) -> tuple[np.ndarray, list[Turn]]:
    audio, rate = sf.read(stem.with_suffix(".wav"), dtype="float32")
    if rate != RATE:
        raise SystemExit(f"{stem}.wav: expected {RATE} Hz")
    return np.asarray(audio), read_rttm(stem.with_suffix(".rttm"))


THRESHOLD = identify.MATCH_THRESHOLD


def run(engine: Engine, audio: np.ndarray, speakers: list[dict[str, str]], **options: object) -> Transcript:
    request = TranscriptionRequest.model_validate(
        {"audio_base64": wav_base64(audio), "speakers": speakers, "speaker_threshold": THRESHOLD, **options}
    )
    return engine.run(request)


def tuning(engine: Engine, threshold: float) -> None:
    """Genuine and impostor similarities on the tuning clips: everyone is enrolled from one half of their clip, and
    each clip's other half is run with all of them enrolled (then the halves swap)."""
    genuine: list[float] = []
    impostor: list[float] = []
    clips = {clip: load(stem) for clip, stem in TUNING.items()}
    for enrol_half, test_half in ((0, 1), (1, 0)):
        samples = []
        for audio, turns in clips.values():
            bounds = _half(audio, enrol_half)
            for who in sorted({speaker for _, _, speaker in turns}):
                voice = speech_alone(audio, turns, who, *bounds)
                if voice.size >= MIN_ENROL_S * RATE:
                    samples.append({"name": who, "audio_base64": wav_base64(voice)})
        for clip, (audio, turns) in clips.items():
            start, end = _half(audio, test_half)
            piece = audio[int(start * RATE) : int(end * RATE)]
            shifted = [(first - start, last - start, who) for first, last, who in turns if last > start and first < end]
            transcript = run(engine, piece, samples)
            for speaker in transcript.speakers:
                person = owner(transcript, shifted, piece.size / RATE, speaker.id)
                for name, similarity in (speaker.similarities or {}).items():
                    (genuine if name == person else impostor).append(similarity)
            print(f"  {clip}, half {test_half}: {_summary(transcript)}")
    print(f"\nTuning: {len(genuine)} genuine similarities: {sorted(genuine)}")
    print(f"Tuning: {len(impostor)} impostor similarities, highest 5: {sorted(impostor)[-5:]}")
    print(
        f"Threshold {threshold}: {sum(s < threshold for s in genuine)} genuine below it, "
        f"{sum(s >= threshold for s in impostor)} impostors at or above it"
    )


def _half(audio: np.ndarray, half: int) -> tuple[float, float]:
    middle = audio.size / RATE / 2
    return (0.0, middle) if half == 0 else (middle, audio.size / RATE)


def _share(part: float, whole: float) -> str:
    return f"{part:.1f} of {whole:.1f} s ({part / whole:.0%})"


def _summary(transcript: Transcript) -> str:
    return ", ".join(
        f"{speaker.id} {speaker.duration:.1f}s"
        + (f" ({speaker.match.similarity:.2f})" if speaker.match is not None else "")
        for speaker in transcript.speakers
    )


def enrolled_everyone() -> list[dict[str, str]]:
    """The held-out pair from ami_dev00 and every tuning person from their whole clip."""
    samples = []
    audio, turns = load(REALSPEECH / "ami_dev00")
    for who in ("MEE009", "MEE012"):
        samples.append({"name": who, "audio_base64": wav_base64(speech_alone(audio, turns, who))})
    for stem in TUNING.values():
        audio, turns = load(stem)
        for who in sorted({speaker for _, _, speaker in turns}):
            voice = speech_alone(audio, turns, who)
            if voice.size >= MIN_ENROL_S * RATE:
                samples.append({"name": who, "audio_base64": wav_base64(voice)})
    return samples


def held_out(engine: Engine) -> None:
    pair = enrolled_everyone()[:2]
    audio, turns = load(REALSPEECH / "ami_dev01")
    print("\n| ami_dev01 (MEE009, MEE012 enrolled from ami_dev00) | hint | MEE009 right | MEE012 right | all right |")
    print("| --- | --- | --- | --- | --- |")
    for hint in ({}, {"num_speakers": 2}):
        transcript = run(engine, audio, pair, **hint)
        rows = naming(transcript, turns, audio.size / RATE, {"MEE009", "MEE012"})
        right = sum(row["right"] for row in rows.values())
        total = sum(row["seconds"] for row in rows.values())
        cells = " | ".join(_share(rows[who]["right"], rows[who]["seconds"]) for who in ("MEE009", "MEE012"))
        print(f"| {_summary(transcript)} | {hint or 'none'} | {cells} | {right / total:.0%} |")

    everyone = enrolled_everyone()
    names = {sample["name"] for sample in everyone}
    print(f"\nFalse accepts: {len(everyone)} people enrolled; speakers of {', '.join(IMPOSTOR_CLIPS)} enrolled nowhere")
    print("\n| clip | speakers found | named (wrongly) | reference speech alone | labelled with an enrolled name |")
    print("| --- | --- | --- | --- | --- |")
    named_time = total_time = 0.0
    named_speakers = found = 0
    top = 0.0
    for clip in IMPOSTOR_CLIPS:
        audio, turns = load(REALSPEECH / clip)
        transcript = run(engine, audio, everyone)
        rows = naming(transcript, turns, audio.size / RATE, names)
        wrong = sum(row["named_wrongly"] for row in rows.values())
        seconds = sum(row["seconds"] for row in rows.values())
        named = sum(speaker.match is not None for speaker in transcript.speakers)
        named_time, total_time = named_time + wrong, total_time + seconds
        named_speakers, found = named_speakers + named, found + len(transcript.speakers)
        top = max([top, *(max((s.similarities or {}).values(), default=0.0) for s in transcript.speakers)])
        print(f"| {clip} | {len(transcript.speakers)} | {named} | {seconds:.1f} s | {wrong:.1f} s |")
    print(f"| all | {found} | {named_speakers} | {total_time:.1f} s | {_share(named_time, total_time)} |")
    print(f"Highest similarity of a non-enrolled speaker to an enrolled name: {top:.2f}")


def enrolment_cost(engine: Engine) -> None:
    """Seconds to enrol one sample, by its length (median of 3), from the pyannote sample's first speaker."""
    audio, turns = load(SAMPLE / "sample")
    voice = speech_alone(audio, turns, sorted({who for _, _, who in turns})[0])
    print("\n| sample | enrolment (median of 3) | per second of sample |")
    print("| --- | --- | --- |")
    for seconds in (5, 15, 30, 60):
        piece = np.resize(voice, seconds * RATE)  # repeats the voice where it is shorter
        request = {"enroll": [{"name": "A", "audio_base64": wav_base64(piece)}]}
        times = []
        for _ in range(3):
            started = time.perf_counter()
            engine.enroll(EnrollmentRequest.model_validate(request))
            times.append(time.perf_counter() - started)
        median = statistics.median(times)
        print(f"| {seconds} s | {median:.2f} s | {median / seconds * 1000:.0f} ms |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threshold", type=float, default=identify.MATCH_THRESHOLD)
    args = parser.parse_args()
    global THRESHOLD
    THRESHOLD = args.threshold
    engine = Engine(WorkerSettings(model="tiny.en", device="cpu", diarizer="builtin"))
    engine.warm_up()
    print(f"Named speakers, threshold {args.threshold} (tiny.en, builtin diarizer, CPU)\n")
    tuning(engine, args.threshold)
    held_out(engine)
    enrolment_cost(engine)


if __name__ == "__main__":
    main()
