"""The Dockerfile and the RunPod Hub files keep their promises, checked without a Docker engine."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
from dockerfile_parse import DockerfileParser

from scribepod.models import TranscriptionRequest

from conftest import ROOT

DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "builder" / "requirements.txt"
DEPLOY_DOC = ROOT / "README.md"
SECRET_WORDS = re.compile(r"token|secret|password|passwd|api_?key|credential", re.IGNORECASE)
SECRET_VALUES = re.compile(r"hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16}")
BUILD_TOOLS = re.compile(r"\b(build-essential|gcc|g\+\+|clang|make|cmake|git|[\w.+-]+-dev)\b")


def lock() -> dict[str, str]:
    return dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", LOCK.read_text(), re.MULTILINE))


class Stage:
    def __init__(self, base: str, name: str | None) -> None:
        self.base, self.name = base, name
        self.instructions: list[dict[str, Any]] = []

    def values(self, instruction: str) -> list[str]:
        return [i["value"] for i in self.instructions if i["instruction"] == instruction]


@pytest.fixture(scope="module")
def parsed() -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, in order, with `${ARG}` in FROM lines resolved."""
    parser = DockerfileParser(str(DOCKERFILE))
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in parser.structure:
        kind, value = instruction["instruction"], instruction["value"]
        if kind == "FROM":
            words = value.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], words[0])
            stages.append(Stage(image, words[2] if len(words) == 3 and words[1].upper() == "AS" else None))
        elif not stages and kind == "ARG":
            name, _, default = value.partition("=")
            global_args[name] = default
        elif stages:
            stages[-1].instructions.append(instruction)
    return global_args, stages


def env_pairs(value: str) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\"[^\"]*\"|\S+)", value))


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_image_and_lock_give_cuda_12_and_cudnn_9(parsed: tuple[dict[str, str], list[Stage]]) -> None:
    _, stages = parsed
    final = stages[-1]
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-(?:base|runtime|cudnn-runtime)-ubuntu\d+\.\d+", final.base)
    assert match, final.base
    assert (int(match.group(1)), int(match.group(2))) >= (12, 8)
    assert int(match.group(1)) == 12  # ctranslate2 4.5+ opens libcublas.so.12
    pins = lock()
    assert pins["nvidia-cudnn-cu12"].startswith("9.") and pins["nvidia-cublas-cu12"].startswith("12.")
    assert pins["ctranslate2"].split(".")[:2] >= ["4", "5"] and pins["torch"] == "2.10.0"
    # ctranslate2 loads the same cuDNN and cuBLAS as torch, from the wheels the lock installs
    library_path = env_pairs(" ".join(final.values("ENV")))["LD_LIBRARY_PATH"].split(":")
    assert {Path(p).relative_to("/opt/venv/lib/python3.11/site-packages").as_posix() for p in library_path} == {
        "nvidia/cudnn/lib",
        "nvidia/cublas/lib",
    }
    assert all(stage.base == final.base for stage in stages if stage.name == "deps")  # same glibc for the venv


def test_every_pinned_package_has_a_hash_and_the_lock_is_installed_with_them(
    parsed: tuple[dict[str, str], list[Stage]],
) -> None:
    text = LOCK.read_text()
    assert text.count("==") == text.count("--hash=sha256:") > 100
    runs = " ".join(value for stage in parsed[1] for value in stage.values("RUN"))
    assert "--require-hashes" in runs and "requirements.txt" in runs


def test_every_copy_source_exists_and_is_in_the_build_context(parsed: tuple[dict[str, str], list[Stage]]) -> None:
    patterns = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    for stage in parsed[1]:
        for value in stage.values("COPY"):
            words = value.split()
            if any(word.startswith("--from=") for word in words):
                continue
            for source in words[:-1]:
                assert (ROOT / source).exists(), f"COPY source {source} does not exist"
                included = False
                for pattern in patterns:  # .dockerignore: the last matching line wins
                    negated = pattern.startswith("!")
                    if fnmatch(source.rstrip("/"), pattern.lstrip("!").rstrip("/")):
                        included = negated
                assert included, f"COPY source {source} is excluded by .dockerignore"


def test_cmd_runs_the_worker_module(parsed: tuple[dict[str, str], list[Stage]]) -> None:
    final = parsed[1][-1]
    assert [json.loads(value) for value in final.values("CMD")] == [["python", "-u", "-m", "scribepod_worker"]]
    assert importlib.util.find_spec("scribepod_worker.__main__") is not None


def test_no_secret_in_env_or_arg_defaults_and_the_token_is_a_secret_mount(
    parsed: tuple[dict[str, str], list[Stage]],
) -> None:
    global_args, stages = parsed
    pairs = dict(global_args)
    for stage in stages:
        for value in stage.values("ENV"):
            pairs.update(env_pairs(value))
        for value in stage.values("ARG"):
            name, _, default = value.partition("=")
            pairs[name] = default
    for name, value in pairs.items():
        assert not SECRET_WORDS.search(name), f"{name} looks like a secret in ENV/ARG"
        assert not SECRET_VALUES.search(value), f"{name} holds what looks like a credential"
    fetch = [value for stage in stages for value in stage.values("RUN") if "fetch_models.py" in value]
    assert len(fetch) == 2 and sum("--mount=type=secret,id=hf_token" in value for value in fetch) == 1


def test_builds_with_and_without_pyannote_never_share_the_models_cache(
    parsed: tuple[dict[str, str], list[Stage]],
) -> None:
    """A secret is not part of a step's cache key, a build argument used in the step is: the step that reads the
    token must also read SCRIBEPOD_PYANNOTE, whose default bakes no pipeline (fetch_models fails on a mismatch)."""
    _, stages = parsed
    (models,) = [stage for stage in stages if stage.name == "models"]
    (step,) = [value for value in models.values("RUN") if "hf_token" in value]
    assert "SCRIBEPOD_PYANNOTE=none" in models.values("ARG")
    assert '--pyannote "${SCRIBEPOD_PYANNOTE}"' in step


def test_every_model_is_run_at_build_time_and_telemetry_is_off(parsed: tuple[dict[str, str], list[Stage]]) -> None:
    _, stages = parsed
    (diarizer,) = [stage for stage in stages if stage.name == "diarizer"]
    (step,) = [value for value in diarizer.values("RUN") if "fetch_models.py" in value]
    assert "--diarizer-weights /models/diarizer" in step
    final = stages[-1]
    assert any(value.startswith("--from=diarizer /models/diarizer") for value in final.values("COPY"))
    env = env_pairs(" ".join(final.values("ENV")))
    assert env["SCRIBEPOD_DIARIZER_WEIGHTS"] == "/models/diarizer"
    for stage in (final, diarizer, *[s for s in stages if s.name == "models"]):  # pyannote runs in all three
        assert env_pairs(" ".join(stage.values("ENV")))["PYANNOTE_METRICS_ENABLED"] == "0"


def test_final_stage_is_lean_non_root_and_offline(parsed: tuple[dict[str, str], list[Stage]]) -> None:
    final = parsed[1][-1]
    for value in final.values("RUN"):
        installs = " ".join(re.findall(r"apt-get install ([^&]*)", value))
        assert not BUILD_TOOLS.search(installs), f"build tools in the final stage: {installs}"
        if "apt-get install" in value:
            assert "rm -rf /var/lib/apt/lists/*" in value
    for value in final.values("COPY"):
        assert "--from=" in value, f"the final stage copies from the build context: {value}"
        assert not re.search(r"\b(tests?|\.cache|bench)\b", value)
    assert final.instructions[-2]["instruction"] == "USER" and not final.values("USER")[-1].startswith(("0", "root"))
    env = env_pairs(" ".join(final.values("ENV")))
    assert env["HF_HUB_OFFLINE"] == "1" and env["SCRIBEPOD_DEVICE"] == "cuda"
    assert env["SCRIBEPOD_MODEL_DIR"] == "/models/whisper" and env["SCRIBEPOD_PYANNOTE_DIR"] == "/models/pyannote"


def test_deploy_doc_documents_every_build_argument_and_variable(parsed: tuple[dict[str, str], list[Stage]]) -> None:
    global_args, stages = parsed
    doc = DEPLOY_DOC.read_text()
    args = set(global_args) | {v.partition("=")[0] for stage in stages for v in stage.values("ARG")}
    env = {name for value in stages[-1].values("ENV") for name in env_pairs(value)} - {"PATH"}
    missing = sorted(name for name in args | env if f"`{name}`" not in doc)
    assert not missing, f"the README's Deploy section does not document {missing}"


def test_runpod_hub_files_follow_the_hub_schema() -> None:
    hub = json.loads((ROOT / ".runpod" / "hub.json").read_text())
    assert {"title", "description", "type", "category", "config"} <= set(hub)
    assert hub["type"] == "serverless" and hub["category"] == "audio"
    config = hub["config"]
    assert config["runsOn"] == "GPU" and config["gpuCount"] == 1 and config["containerDiskInGb"] >= 20
    assert all(tuple(map(int, v.split("."))) >= (12, 8) for v in config["allowedCudaVersions"])
    worker_source = " ".join(p.read_text() for p in (ROOT / "handler" / "scribepod_worker").rglob("*.py"))
    for variable in config["env"]:
        assert variable["key"] in worker_source, f"{variable['key']} is not read by the worker"
        assert {"name", "type", "description"} <= set(variable["input"])
        assert variable["input"]["type"] in {"string", "number", "boolean"}
    tests = json.loads((ROOT / ".runpod" / "tests.json").read_text())
    assert tests["config"]["gpuCount"] == 1 and tests["config"]["gpuTypeId"]
    for test in tests["tests"]:
        assert test["name"] and test["timeout"] > 0
        TranscriptionRequest.model_validate(test["input"])  # a valid job for this worker's contract
        assert "model" not in test["input"]  # the image's default model, whatever was baked
