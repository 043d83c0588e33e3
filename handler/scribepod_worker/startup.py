"""Start-up, before the first job: check the GPU stack, load the default model and the diarizer, warm them up.

A broken image should fail here, once, with the cause and the fix in the log, and not in the middle of a customer's
job. `python -m scribepod_worker` treats a failure as fatal (exit 1, so RunPod marks the worker unhealthy) where the
worker is deployed on RunPod or told to use CUDA, and as a warning in a local developer run.
"""

from __future__ import annotations

import ctypes
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from scribepod.models import TranscriptionOptions
from scribepod_worker import transcribe as asr
from scribepod_worker.config import WorkerSettings, deployed_on_runpod
from scribepod_worker.decode import SAMPLE_RATE
from scribepod_worker.engine import Engine
from scribepod_worker.errors import WorkerError

log = logging.getLogger("scribepod_worker")

# ctranslate2 4.5+ is built against CUDA 12 (it opens libcublas.so.12) and cuDNN 9; the image pins it so.
CUDA_MAJOR = 12
CUDNN_MAJOR = 9
CUBLAS_LIBRARY = f"libcublas.so.{CUDA_MAJOR}"
CUDNN_LIBRARIES = (f"libcudnn.so.{CUDNN_MAJOR}", f"libcudnn_ops.so.{CUDNN_MAJOR}", f"libcudnn_cnn.so.{CUDNN_MAJOR}")
# GPU memory kept for the weights (large-v3 in float16 is 3 GB), the diarizer and two CUDA contexts; the rest is
# shared out to the batch at this much per batched 30 s window (beam search, word alignment).
_RESERVED_GIB = 6.0
_GIB_PER_BATCH_ITEM = 0.5
_BATCH_LIMITS = (4, 32)
MANIFEST = "scribepod-models.json"  # written by builder/fetch_models.py

Loader = Callable[[str], Any]


class StartupError(Exception):
    """The worker cannot serve: `cause` says what is wrong, `fix` what the operator should change."""

    def __init__(self, cause: str, fix: str) -> None:
        super().__init__(f"{cause}\n  fix: {fix}")
        self.cause = cause
        self.fix = fix


@dataclass(frozen=True)
class GpuInfo:
    name: str
    total_bytes: int
    driver_cuda: tuple[int, int]
    cudnn: str


@dataclass(frozen=True)
class StartupReport:
    device: str
    compute_type: str
    model: str
    diarizer: str
    batch_size: int
    gpu: GpuInfo | None
    seconds: float


def strict_startup(settings: WorkerSettings) -> bool:
    """Fail fast where a half-working worker would fail customers' jobs: on RunPod, or when CUDA was asked for."""
    return deployed_on_runpod() or settings.device == "cuda"


def _load(name: str) -> Any:
    return ctypes.CDLL(name)


def check_gpu(compute_type: str, load: Loader = _load, ct2: Any = None) -> GpuInfo:
    """Check, in the order they depend on each other: driver, device, cuBLAS, cuDNN, compute type."""
    try:
        cuda = load("libcuda.so.1")
    except OSError:
        raise StartupError(
            "no NVIDIA driver in this container: libcuda.so.1 cannot be loaded, so there is no GPU to run on",
            "run on a GPU worker (RunPod: a GPU endpoint; docker: --gpus all with the NVIDIA Container Toolkit), "
            "or set SCRIBEPOD_DEVICE=cpu",
        ) from None
    version = ctypes.c_int(0)
    cuda.cuDriverGetVersion(ctypes.byref(version))
    driver = (version.value // 1000, version.value % 1000 // 10)
    if driver[0] < CUDA_MAJOR:
        raise StartupError(
            f"the NVIDIA driver supports CUDA {driver[0]}.{driver[1]}, this image needs CUDA {CUDA_MAJOR}",
            "deploy on hosts with a newer driver (RunPod endpoint: Advanced > CUDA versions 12.8 and newer)",
        )
    count = ctypes.c_int(0)
    status = cuda.cuInit(0)
    if status != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
        raise StartupError(
            f"the NVIDIA driver sees no usable GPU (cuInit returned {status}, {count.value} devices)",
            "check NVIDIA_VISIBLE_DEVICES / CUDA_VISIBLE_DEVICES and that the GPU is not in an error state "
            "(nvidia-smi); on RunPod, terminate the worker so another host is used",
        )
    device = ctypes.c_int(0)
    cuda.cuDeviceGet(ctypes.byref(device), 0)
    name = ctypes.create_string_buffer(256)
    cuda.cuDeviceGetName(name, 256, device)
    total = ctypes.c_size_t(0)
    cuda.cuDeviceTotalMem_v2(ctypes.byref(total), device)
    gpu_name = name.value.decode(errors="replace")

    if ct2 is None:
        import ctranslate2

        ct2 = ctranslate2
    try:
        ct2_devices = ct2.get_cuda_device_count()
    except RuntimeError as error:
        ct2_devices, ct2_error = 0, f": {error}"
    else:
        ct2_error = ""
    if ct2_devices < 1:
        raise StartupError(
            f"ctranslate2 {ct2.__version__} sees no CUDA device although the driver sees {gpu_name}{ct2_error}",
            f"ctranslate2 needs a driver for CUDA {CUDA_MAJOR}.x; deploy on hosts with CUDA 12.8 or newer",
        )
    try:
        load(CUBLAS_LIBRARY)
    except OSError as error:
        raise StartupError(
            f"cuBLAS for CUDA {CUDA_MAJOR} ({CUBLAS_LIBRARY}) cannot be loaded: {error}",
            f"install nvidia-cublas-cu{CUDA_MAJOR} (builder/requirements.txt) and put its lib directory on "
            "LD_LIBRARY_PATH, as the Dockerfile does",
        ) from None
    cudnn = _check_cudnn(load, ct2.__version__)
    supported = frozenset(ct2.get_supported_compute_types("cuda"))
    if compute_type not in supported:
        raise StartupError(
            f"{gpu_name} does not support compute type {compute_type!r} in ctranslate2 (it supports "
            f"{', '.join(sorted(supported))})",
            "set SCRIBEPOD_COMPUTE_TYPE to one of those (float16 needs compute capability 5.3+, "
            "bfloat16 8.0+), or pick another GPU type",
        )
    return GpuInfo(gpu_name, total.value, driver, cudnn)


def _check_cudnn(load: Loader, ct2_version: str) -> str:
    """cuDNN 9 with the sub-libraries ctranslate2 opens lazily (a missing one would abort the first job instead)."""
    for library in CUDNN_LIBRARIES:
        try:
            handle = load(library)
        except OSError as error:
            found = [f"cuDNN {major}" for major in (8, 7) if _loads(load, f"libcudnn.so.{major}")]
            has = f"the image has {found[0]}" if found else "the image has no cuDNN on the library path"
            raise StartupError(
                f"{library} cannot be loaded ({error}): ctranslate2 {ct2_version} needs cuDNN {CUDNN_MAJOR} "
                f"for CUDA {CUDA_MAJOR}; {has}",
                f"build from this repository's Dockerfile (nvidia-cudnn-cu12 9.x on LD_LIBRARY_PATH), or install "
                f"cuDNN {CUDNN_MAJOR} for CUDA {CUDA_MAJOR}; with cuDNN 8 only, ctranslate2==4.4.0 is the last "
                "release that works",
            ) from None
        if library == CUDNN_LIBRARIES[0]:
            version = int(handle.cudnnGetVersion())
    # cuDNN 9 encodes its version as major*10000 + minor*100 + patch, cuDNN 8 and older as major*1000 + ...
    scale = 10000 if version >= 90000 else 1000
    major, minor, patch = version // scale, version % scale // 100, version % 100
    if major != CUDNN_MAJOR:
        raise StartupError(
            f"{CUDNN_LIBRARIES[0]} reports cuDNN {major}.{minor}.{patch}, ctranslate2 needs cuDNN {CUDNN_MAJOR}",
            "make the cuDNN 9 libraries the first on LD_LIBRARY_PATH",
        )
    return f"{major}.{minor}.{patch}"


def _loads(load: Loader, library: str) -> bool:
    try:
        load(library)
    except OSError:
        return False
    return True


def batch_size_for(total_bytes: int) -> int:
    """A default batch size that fits the GPU's memory next to the models (a job's `batch_size` still wins)."""
    spare = total_bytes / 1024**3 - _RESERVED_GIB
    low, high = _BATCH_LIMITS
    return max(low, min(high, int(spare / _GIB_PER_BATCH_ITEM)))


def baked_models(settings: WorkerSettings) -> str:
    """What the image holds, for messages about a model it lacks (a stale image, or a typo in SCRIBEPOD_MODEL)."""
    if settings.model_dir is None:
        return "no SCRIBEPOD_MODEL_DIR is set"
    manifest = settings.model_dir / MANIFEST
    if manifest.is_file():
        recorded = json.loads(manifest.read_text(encoding="utf-8"))
        names = sorted(recorded.get("models", {}))
        return f"the image has {', '.join(names) or 'no models'} (fetched {recorded.get('fetched_at', '?')})"
    names = sorted(p.name for p in settings.model_dir.iterdir() if (p / "model.bin").is_file())
    return f"{settings.model_dir} holds {', '.join(names) or 'no models'}"


def _model_fix(settings: WorkerSettings) -> str:
    return (
        f"{baked_models(settings)}; set SCRIBEPOD_MODEL to one of those, or rebuild the image with "
        f"--build-arg SCRIBEPOD_MODELS={settings.model} (README, Deploy on RunPod)"
    )


def _diarizer_fix(engine: Engine) -> str:
    if engine.diarizer_name == "pyannote":
        return (
            "build the image with --build-arg SCRIBEPOD_PYANNOTE=hub and the Hugging Face token (--secret "
            "id=hf_token, README, Deploy), or point SCRIBEPOD_PYANNOTE_DIR at a pipeline written offline by "
            "`python -m scribepod_worker.diarize.pyannote DIR`, or set SCRIBEPOD_DIARIZER=builtin"
        )
    return (
        "fetch the builtin diarizer's weights with `python -m scribepod_worker.diarize.weights DIR` and set "
        "SCRIBEPOD_DIARIZER_WEIGHTS=DIR (the image bakes them into /models/diarizer)"
    )


def warm_up_audio() -> np.ndarray:
    """One second of faint noise: with VAD off it still runs the encoder (cuDNN) and the decoder (cuBLAS)."""
    return np.random.default_rng(0).normal(0.0, 0.01, SAMPLE_RATE).astype(np.float32)


def prepare(engine: Engine, load: Loader = _load) -> StartupReport:
    """Run every start-up check on `engine` and warm it up; raises StartupError naming the cause and the fix."""
    started = time.perf_counter()
    settings = engine.settings
    gpu: GpuInfo | None = None
    if engine.device == "cuda":
        gpu = check_gpu(engine.compute_type, load)
        if settings.batch_size is None:  # an operator's SCRIBEPOD_BATCH_SIZE wins over the estimate
            engine.batch_size = batch_size_for(gpu.total_bytes)
    try:
        engine.diarizer()
    except Exception as error:  # pyannote and torch raise more than WorkerError when the stack is wrong
        message = error.message if isinstance(error, WorkerError) else f"{type(error).__name__}: {error}"
        cause = f"the {engine.diarizer_name} diarizer cannot load: {message}"
        raise StartupError(cause, _diarizer_fix(engine)) from None
    try:
        resolved = asr.resolve_model(settings.model, settings)
    except WorkerError as error:
        raise StartupError(error.message, _model_fix(settings)) from None
    options = TranscriptionOptions(vad_filter=False, batch_size=1, word_timestamps=True, diarize=True)
    try:
        engine.transcribe_audio(warm_up_audio(), options)
    except WorkerError as error:
        raise StartupError(error.message, _model_fix(settings)) from None
    except Exception as error:  # a CUDA, cuDNN or memory failure in native code, seen here before any job
        raise StartupError(
            f"the warm-up transcription failed on {engine.device}/{engine.compute_type}: "
            f"{type(error).__name__}: {error}",
            _runtime_fix(str(error)),
        ) from None
    return StartupReport(
        device=engine.device,
        compute_type=engine.compute_type,
        model=f"{settings.model} ({resolved.path})",
        diarizer=engine.diarizer_name,
        batch_size=engine.batch_size,
        gpu=gpu,
        seconds=time.perf_counter() - started,
    )


def _runtime_fix(message: str) -> str:
    lowered = message.lower()
    if "out of memory" in lowered:
        return "pick a GPU with more memory, a smaller SCRIBEPOD_MODEL, or SCRIBEPOD_COMPUTE_TYPE=int8_float16"
    if "cudnn" in lowered or "cublas" in lowered:
        return f"the image's CUDA libraries do not match: ctranslate2 needs CUDA {CUDA_MAJOR} and cuDNN {CUDNN_MAJOR}"
    return "see the error above; SCRIBEPOD_DEVICE=cpu tells a GPU problem from a model problem"


def describe(report: StartupReport) -> str:
    """One log line an operator can read in RunPod's worker logs."""
    where = report.device
    if report.gpu is not None:
        gpu = report.gpu
        where = (
            f"cuda ({gpu.name}, {gpu.total_bytes / 1024**3:.0f} GiB, driver CUDA {gpu.driver_cuda[0]}."
            f"{gpu.driver_cuda[1]}, cuDNN {gpu.cudnn})"
        )
    return (
        f"ready in {report.seconds:.1f}s: {where}, {report.compute_type}, model {report.model}, "
        f"diarizer {report.diarizer}, batch size {report.batch_size}"
    )


def build_engine() -> Engine:
    """The engine, or a StartupError: bad settings, or a driver ctranslate2 cannot even ask about devices."""
    try:
        return Engine()
    except ValueError as error:
        raise StartupError(
            str(error), "correct that environment variable (the README's Deploy section lists them)"
        ) from None
    except RuntimeError as error:
        raise StartupError(
            f"ctranslate2 cannot query the GPU: {error}",
            f"deploy on hosts whose driver supports CUDA {CUDA_MAJOR}.8 or newer, or set SCRIBEPOD_DEVICE=cpu",
        ) from None
