"""Start-up checks: fatal with cause and fix where the worker is deployed or told to use CUDA, a warning locally."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from scribepod_worker import handler, startup
from scribepod_worker.config import DiarizerName, WorkerSettings
from scribepod_worker.engine import Engine

from conftest import ROOT, b64
from servers import LOCAL_WORKER_ENV

GIB = 1024**3


def start_worker(env: dict[str, str], *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scribepod_worker", *args],
        cwd=cwd,
        env={**os.environ, **LOCAL_WORKER_ENV, **env},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_cuda_requested_on_a_machine_without_a_gpu_exits_at_start_naming_the_driver() -> None:
    result = start_worker({"SCRIBEPOD_DEVICE": "cuda"})
    assert result.returncode == 1
    assert "start-up check failed: no NVIDIA driver in this container: libcuda.so.1" in result.stderr
    assert "fix: " in result.stderr and "SCRIBEPOD_DEVICE=cpu" in result.stderr
    assert "Traceback" not in result.stderr and "--- transcript" not in result.stdout


def test_deployed_worker_without_its_default_model_exits_naming_what_the_image_has(tmp_path: Path) -> None:
    (tmp_path / startup.MANIFEST).write_text(json.dumps({"models": {"tiny.en": {}}, "fetched_at": "2025-01-01"}))
    env = {"RUNPOD_POD_ID": "pod-1", "SCRIBEPOD_MODEL": "large-v3", "SCRIBEPOD_MODEL_DIR": str(tmp_path)}
    result = start_worker(env)
    assert result.returncode == 1
    assert "model 'large-v3' is not present on this worker" in result.stderr
    assert "the image has tiny.en" in result.stderr and "--build-arg SCRIBEPOD_MODELS=large-v3" in result.stderr


def test_local_run_without_the_default_model_only_warns_and_serves(tmp_path: Path, sample_dir: Path) -> None:
    job = {"input": {"audio_base64": b64(sample_dir / "sample.wav"), "model": "tiny.en", "diarize": False}}
    (tmp_path / "test_input.json").write_text(json.dumps(job))  # too long for --test_input on the command line
    result = start_worker({"SCRIBEPOD_MODEL": "large-v3"}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "warm-up incomplete: model 'large-v3' is not present" in result.stderr
    assert "start-up check failed" not in result.stderr and "--- transcript" in result.stdout


def test_cpu_engine_passes_the_checks_warms_up_and_serves(sample_dir: Path) -> None:
    engine = Engine(WorkerSettings(model="tiny.en", device="cpu", diarizer="builtin", allow_local_files=True))
    report = startup.prepare(engine)
    assert (report.device, report.compute_type, report.diarizer, report.gpu) == ("cpu", "int8", "builtin", None)
    assert "ready in" in startup.describe(report) and "model tiny.en" in startup.describe(report)
    handler.set_engine(engine)
    output = handler.handle({"id": "j1", "input": {"audio": str(sample_dir / "sample.wav"), "diarize": False}})
    assert "error" not in output and output["text"]


def test_each_job_releases_memory_afterwards(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = handler.release_memory
    monkeypatch.setattr(handler, "release_memory", lambda: calls.append("released"))
    assert "error" in handler.handle({"id": "j2", "input": {"audio": "s3://only-bucket"}})
    assert calls == ["released"]
    real()  # with torch imported and no GPU, it collects garbage and skips the CUDA cache


class FakeLib:
    """A stand-in for a CUDA library loaded with ctypes: answers the calls the checks make."""

    def __init__(self, driver: int = 12080, devices: int = 1, cudnn: int = 91002) -> None:
        self.driver, self.devices, self.cudnn = driver, devices, cudnn

    def cuDriverGetVersion(self, out: Any) -> int:  # noqa: N802 (the C API's names)
        out._obj.value = self.driver
        return 0

    def cuInit(self, flags: int) -> int:  # noqa: N802
        return 0

    def cuDeviceGetCount(self, out: Any) -> int:  # noqa: N802
        out._obj.value = self.devices
        return 0

    def cuDeviceGet(self, out: Any, ordinal: int) -> int:  # noqa: N802
        return 0

    def cuDeviceGetName(self, buffer: Any, size: int, device: Any) -> int:  # noqa: N802
        buffer.value = b"NVIDIA L4"
        return 0

    def cuDeviceTotalMem_v2(self, out: Any, device: Any) -> int:  # noqa: N802
        out._obj.value = 24 * GIB
        return 0

    def cudnnGetVersion(self) -> int:  # noqa: N802
        return self.cudnn


class FakeCt2:
    __version__ = "4.8.5"

    def __init__(self, types: tuple[str, ...] = ("float32", "float16", "int8_float16")) -> None:
        self.types = types

    def get_cuda_device_count(self) -> int:
        return 1

    def get_supported_compute_types(self, device: str) -> set[str]:
        return set(self.types)


def loader(present: set[str], lib: FakeLib | None = None) -> Any:
    def load(name: str) -> FakeLib:
        if name not in present:
            raise OSError(f"{name}: cannot open shared object file: No such file or directory")
        return lib or FakeLib()

    return load


FULL_STACK = {"libcuda.so.1", "libcublas.so.12", *startup.CUDNN_LIBRARIES}


def test_a_complete_gpu_stack_passes() -> None:
    info = startup.check_gpu("float16", loader(FULL_STACK), FakeCt2())
    assert (info.name, info.driver_cuda, info.cudnn, info.total_bytes) == ("NVIDIA L4", (12, 8), "9.10.2", 24 * GIB)


@pytest.mark.parametrize(
    ("present", "lib", "ct2", "cause"),
    [
        (
            FULL_STACK - {"libcudnn.so.9"} | {"libcudnn.so.8"},
            None,
            FakeCt2(),
            "needs cuDNN 9 for CUDA 12; the image has cuDNN 8",
        ),
        (FULL_STACK - {"libcudnn_cnn.so.9"}, None, FakeCt2(), "libcudnn_cnn.so.9 cannot be loaded"),
        (FULL_STACK - {"libcublas.so.12"}, None, FakeCt2(), "cuBLAS for CUDA 12 (libcublas.so.12) cannot be loaded"),
        (
            FULL_STACK,
            FakeLib(driver=11080),
            FakeCt2(),
            "the NVIDIA driver supports CUDA 11.8, this image needs CUDA 12",
        ),
        (FULL_STACK, FakeLib(devices=0), FakeCt2(), "sees no usable GPU"),
        (FULL_STACK, FakeLib(cudnn=8907), FakeCt2(), "reports cuDNN 8.9.7"),
        (FULL_STACK, None, FakeCt2(("float32", "int8")), "does not support compute type 'float16'"),
    ],
)
def test_a_broken_gpu_stack_names_the_missing_piece(
    present: set[str], lib: FakeLib | None, ct2: FakeCt2, cause: str
) -> None:
    with pytest.raises(startup.StartupError) as raised:
        startup.check_gpu("float16", loader(present, lib), ct2)
    assert cause in raised.value.cause and raised.value.fix


def test_batch_size_follows_gpu_memory() -> None:
    assert [startup.batch_size_for(gib * GIB) for gib in (8, 12, 16, 24, 80)] == [4, 12, 20, 32, 32]


def test_strict_only_when_deployed_or_cuda_is_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNPOD_POD_ID", raising=False)
    monkeypatch.delenv("RUNPOD_WEBHOOK_GET_JOB", raising=False)
    assert not startup.strict_startup(WorkerSettings(device="auto"))
    assert startup.strict_startup(WorkerSettings(device="cuda"))
    monkeypatch.setenv("RUNPOD_POD_ID", "pod-1")
    assert startup.strict_startup(WorkerSettings(device="cpu"))


@pytest.mark.parametrize(
    ("diarizer", "fix"),
    [("builtin", "python -m scribepod_worker.diarize.weights"), ("pyannote", "SCRIBEPOD_PYANNOTE=hub")],
)
def test_a_diarizer_without_its_weights_fails_start_up_saying_how_to_get_them(
    tmp_path: Path, diarizer: DiarizerName, fix: str
) -> None:
    settings = WorkerSettings(
        model="tiny.en", device="cpu", diarizer=diarizer, diarizer_weights=tmp_path, pyannote_dir=tmp_path
    )
    with pytest.raises(startup.StartupError) as raised:
        startup.prepare(Engine(settings))
    assert f"the {diarizer} diarizer cannot load" in raised.value.cause and fix in raised.value.fix
