"""The `pyannote` diarizer: pyannote.audio's pipeline from a local directory, imported only when chosen.

pyannote.audio needs torchaudio/torchcodec builds that match the GPU stack, so it is optional: the worker starts and
serves with `lite` where it cannot import. Works with the 4.x layout (community-1: a directory with config.yaml and
subfolders) and the 3.1 layout (config.yaml pointing at local checkpoints).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from scribepod_worker.diarize.base import SAMPLE_RATE, SpeakerCountHint, SpeakerTurn
from scribepod_worker.errors import WorkerError


def pipeline_config(pipeline_dir: Path | None) -> Path:
    """The pipeline's config.yaml, or `model_unavailable` saying what is missing."""
    if pipeline_dir is None:
        raise WorkerError(
            "model_unavailable", "the pyannote diarizer needs SCRIBEPOD_PYANNOTE_DIR (a local pipeline directory)"
        )
    config = pipeline_dir / "config.yaml"
    if not config.is_file():
        raise WorkerError(
            "model_unavailable",
            f"no pyannote pipeline at {pipeline_dir}: config.yaml is missing (see the README's Deploy section)",
        )
    return config


def hint_arguments(hint: SpeakerCountHint) -> dict[str, int]:
    """pyannote's keyword arguments for the count hints that were given (and only those)."""
    given = {"num_speakers": hint.num_speakers, "min_speakers": hint.min_speakers, "max_speakers": hint.max_speakers}
    return {name: value for name, value in given.items() if value is not None}


def progress_hook(progress: Callable[[float], None]) -> Callable[..., None]:
    """pyannote's pipeline `hook`, called per step with `completed`/`total` batches, as a fraction done."""

    def hook(
        step_name: str, step_artifact: Any, file: Any = None, total: int | None = None, completed: int | None = None
    ) -> None:
        if total and completed is not None:
            progress(min(1.0, completed / total))

    return hook


def turns_from_output(output: Any) -> list[SpeakerTurn]:
    """Turns from a pipeline result: pyannote 4's exclusive diarization (no overlaps, built to align with
    transcripts) where present, else the plain Annotation that pyannote 3.x returns."""
    annotation = getattr(output, "exclusive_speaker_diarization", None) or getattr(
        output, "speaker_diarization", output
    )
    turns = [
        SpeakerTurn(start=float(segment.start), end=float(segment.end), speaker=str(label))
        for segment, _, label in annotation.itertracks(yield_label=True)
        if segment.end > segment.start
    ]
    return sorted(turns, key=lambda t: (t.start, t.end))


class PyannoteDiarizer:
    name = "pyannote"

    def __init__(self, pipeline_dir: Path | None, device: str) -> None:
        config = pipeline_config(pipeline_dir)
        try:
            import torch
            from pyannote.audio import Pipeline
        except Exception as error:  # torchaudio/torchcodec mismatches raise more than ImportError
            raise WorkerError(
                "model_unavailable",
                f"pyannote.audio cannot be imported here ({type(error).__name__}: {error}); "
                "install scribepod-worker[gpu] on a matching CUDA stack, or set SCRIBEPOD_DIARIZER=lite",
            ) from None
        pipeline = Pipeline.from_pretrained(config)
        if pipeline is None:
            raise WorkerError("model_unavailable", f"pyannote could not load the pipeline at {config}")
        if device == "cuda":
            pipeline.to(torch.device("cuda"))
        self._pipeline = pipeline
        self._torch = torch

    def diarize(
        self, audio: np.ndarray, hint: SpeakerCountHint, progress: Callable[[float], None] | None = None
    ) -> list[SpeakerTurn]:
        if audio.size == 0:
            return []
        waveform = self._torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).unsqueeze(0)
        extra: dict[str, Any] = {} if progress is None else {"hook": progress_hook(progress)}
        output = self._pipeline({"waveform": waveform, "sample_rate": SAMPLE_RATE}, **hint_arguments(hint), **extra)
        return turns_from_output(output)
