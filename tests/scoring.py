"""Scoring helpers for tests and benchmarks: WER against an STM transcript, DER against RTTM turns."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import jiwer
from pyannote.core import Annotation, Segment, Timeline
from pyannote.metrics.diarization import DiarizationErrorRate

_PUNCTUATION = re.compile(r"[^\w\s']")


def normalize(text: str) -> str:
    return " ".join(_PUNCTUATION.sub(" ", text.lower()).split())


def read_stm_text(path: Path) -> str:
    """The reference words of an STM file (fields: file channel speaker start end words...)."""
    lines = [line.split(maxsplit=5) for line in path.read_text().splitlines() if line.strip()]
    return " ".join(parts[5] for parts in lines if len(parts) == 6)


def word_error_rate(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(normalize(reference), normalize(hypothesis)))


def read_rttm(path: Path) -> list[tuple[float, float, str]]:
    turns = []
    for line in path.read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == "SPEAKER":
            start, duration = float(fields[3]), float(fields[4])
            turns.append((start, start + duration, fields[7]))
    return turns


def annotation(turns: Iterable[tuple[float, float, str]]) -> Annotation:
    result = Annotation()
    for index, (start, end, speaker) in enumerate(turns):
        result[Segment(start, end), index] = speaker
    return result


def diarization_error_rate(
    reference: Iterable[tuple[float, float, str]], hypothesis: Iterable[tuple[float, float, str]], collar: float = 0.0
) -> float:
    """DER; `collar` is the total width removed around reference boundaries (0.5 = +-0.25 s)."""
    ref, hyp = annotation(reference), annotation(hypothesis)
    extent = ref.get_timeline().union(hyp.get_timeline()).extent() if hyp else ref.get_timeline().extent()
    metric = DiarizationErrorRate(collar=collar, skip_overlap=False)
    return float(metric(ref, hyp, uem=Timeline([extent])))  # scored over both annotations' whole extent


def read_uem(path: Path) -> Timeline:
    """The scored regions of a UEM file (fields: file channel start end)."""
    return Timeline(
        [
            Segment(float(f[2]), float(f[3]))
            for f in (line.split() for line in path.read_text().splitlines())
            if len(f) >= 4
        ]
    )


def der_components(
    reference: Iterable[tuple[float, float, str]], hypothesis: Iterable[tuple[float, float, str]], uem: Timeline
) -> dict[str, float]:
    """DER's parts in seconds (no collar, overlap scored) inside `uem`; sum several clips' parts for a pooled DER."""
    metric = DiarizationErrorRate(collar=0.0, skip_overlap=False)
    parts = metric.compute_components(annotation(reference), annotation(hypothesis), uem=uem)
    return {name: float(parts[name]) for name in ("confusion", "missed detection", "false alarm", "total")}


def pooled_der(components: Iterable[dict[str, float]]) -> float:
    """(confusion + missed + false alarm) / total speech, summed over clips."""
    parts = list(components)
    errors = sum(p["confusion"] + p["missed detection"] + p["false alarm"] for p in parts)
    return errors / max(sum(p["total"] for p in parts), 1e-9)
