"""Benchmark recordings with exact references, built once and cached on disk.

A long recording is several known conversations joined end to end and tiled to the wanted length: pyannote's real
two-speaker telephone sample plus three espeak-ng conversations (tests/synth.py) that share voices, so the same
eight speakers recur all through the file and a diarizer that keeps its labels stable scores as well at two hours as
at one minute. Rendering two hours of espeak-ng speech is slow; tiling four short pieces is not.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from scoring import read_rttm  # noqa: E402
from synth import VOICES, Voice, sentences, synthesize_conversation  # noqa: E402

SAMPLE_RATE = 16_000
SAMPLE_DIR = ROOT / ".cache" / "sample"
CACHE = Path(os.environ.get("SCRIBEPOD_BENCH_CACHE", "/tmp/scribepod-bench"))

Turn = tuple[float, float, str]
Utterance = tuple[float, float, str, str]  # start, end, speaker, words

# Three conversations over six voices, two of them shared between conversations (label consistency across pieces).
_CONVERSATIONS: tuple[tuple[int, ...], ...] = ((0, 1), (2, 3, 4), (1, 5, 0))
_LINES_PER_CONVERSATION = 12


@dataclass(frozen=True)
class Recording:
    """A 16 kHz mono wav and its reference: speaker turns and the words of each utterance."""

    name: str
    path: Path
    seconds: float
    turns: list[Turn]
    utterances: list[Utterance]

    @property
    def speakers(self) -> int:
        return len({speaker for _, _, speaker in self.turns})

    @property
    def text(self) -> str:
        return " ".join(words for _, _, _, words in self.utterances)


def sample() -> Recording:
    """pyannote's real two-speaker sample: RTTM turns, STM words (its speaker names differ from the RTTM's)."""
    path = SAMPLE_DIR / "sample.wav"
    utterances = []
    for line in (SAMPLE_DIR / "sample.stm").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6:
            utterances.append((float(parts[3]), float(parts[4]), f"sample_{parts[2]}", parts[5]))
    return Recording("pyannote sample", path, sf.info(path).duration, read_rttm(SAMPLE_DIR / "sample.rttm"), utterances)


def conversation(voices: tuple[int, ...], lines: int, offset: int = 0) -> Recording:
    """An espeak-ng conversation of `VOICES[i] for i in voices` taking turns, rendered once into the cache."""
    name = "conv_" + "_".join(str(v) for v in voices) + f"_{lines}_{offset}"
    path, meta = CACHE / f"{name}.wav", CACHE / f"{name}.json"
    if not meta.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        chosen: list[Voice] = [VOICES[v] for v in voices]
        script = [(chosen[i % len(chosen)], text) for i, text in enumerate(sentences(lines, offset))]
        turns = synthesize_conversation(script, path)
        utterances = [(s, e, speaker, text) for (s, e, speaker), (_, text) in zip(turns, script, strict=True)]
        meta.write_text(json.dumps(utterances))
    utterances = [(float(s), float(e), str(k), str(w)) for s, e, k, w in json.loads(meta.read_text())]
    return Recording(
        f"synthetic {len(voices)} voices",
        path,
        sf.info(path).duration,
        [(s, e, k) for s, e, k, _ in utterances],
        utterances,
    )


def joined(minutes: float) -> Recording:
    """The sample and the three conversations joined, tiled and cut to `minutes` (turns and words clipped to fit)."""
    path = CACHE / f"joined_{minutes:g}min.wav"
    meta = path.with_suffix(".json")
    if not meta.is_file():
        pieces = [sample()] + [
            conversation(voices, _LINES_PER_CONVERSATION, offset=4 * i) for i, voices in enumerate(_CONVERSATIONS)
        ]
        audio = [sf.read(piece.path, dtype="float32")[0] for piece in pieces]
        target = round(minutes * 60 * SAMPLE_RATE)
        out = np.zeros(target, dtype=np.float32)
        utterances: list[Utterance] = []
        cursor = 0
        while cursor < target:
            for piece, signal in zip(pieces, audio, strict=True):
                take = min(signal.size, target - cursor)
                out[cursor : cursor + take] = signal[:take]
                offset, end = cursor / SAMPLE_RATE, (cursor + take) / SAMPLE_RATE
                utterances.extend(
                    (offset + s, min(offset + e, end), k, w) for s, e, k, w in piece.utterances if offset + s < end
                )
                cursor += take
                if cursor >= target:
                    break
        CACHE.mkdir(parents=True, exist_ok=True)
        sf.write(path, out, SAMPLE_RATE, subtype="PCM_16")
        # The sample's RTTM and STM name its speakers differently: its turns come from the RTTM, not the STM.
        turns = _joined_turns(pieces, target)
        meta.write_text(json.dumps({"turns": turns, "utterances": utterances}))
    data = json.loads(meta.read_text())
    return Recording(
        f"joined {minutes:g} min",
        path,
        sf.info(path).duration,
        [(float(s), float(e), str(k)) for s, e, k in data["turns"]],
        [(float(s), float(e), str(k), str(w)) for s, e, k, w in data["utterances"]],
    )


def _joined_turns(pieces: list[Recording], target: int) -> list[Turn]:
    turns: list[Turn] = []
    cursor = 0
    while cursor < target:
        for piece in pieces:
            size = round(piece.seconds * SAMPLE_RATE)
            offset, end = cursor / SAMPLE_RATE, min(cursor + size, target) / SAMPLE_RATE
            turns.extend((offset + s, min(offset + e, end), k) for s, e, k in piece.turns if offset + s < end)
            cursor += size
            if cursor >= target:
                break
    return turns


if __name__ == "__main__":
    for length in (float(arg) for arg in sys.argv[1:] or ["1"]):
        made = joined(length)
        print(f"{made.path}: {made.seconds / 60:.1f} min, {made.speakers} speakers, {len(made.turns)} turns")
