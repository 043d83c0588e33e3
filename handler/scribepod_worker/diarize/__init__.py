"""Stage 3: who spoke when. `load_diarizer` picks the backend; each backend loads its models once."""

from __future__ import annotations

from scribepod_worker.config import WorkerSettings
from scribepod_worker.diarize.base import Diarization, Diarizer, SpeakerCountHint, SpeakerTurn

__all__ = ["Diarization", "Diarizer", "SpeakerCountHint", "SpeakerTurn", "default_diarizer_name", "load_diarizer"]


def default_diarizer_name(settings: WorkerSettings) -> str:
    """`pyannote` when a pipeline directory is configured and present, else `builtin` (weights installed with us)."""
    if settings.diarizer is not None:
        return settings.diarizer
    present = settings.pyannote_dir is not None and (settings.pyannote_dir / "config.yaml").is_file()
    return "pyannote" if present else "builtin"


def load_diarizer(name: str, settings: WorkerSettings, device: str) -> Diarizer:
    if name == "pyannote":
        from scribepod_worker.diarize.pyannote import PyannoteDiarizer

        return PyannoteDiarizer(settings.pyannote_dir, device)
    if name == "builtin":
        from scribepod_worker.diarize.builtin import BuiltinDiarizer
        from scribepod_worker.diarize.weights import weights_dir

        return BuiltinDiarizer(weights_dir(settings), device)
    raise ValueError(f"unknown diarizer {name!r}")
