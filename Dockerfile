# syntax=docker/dockerfile:1.7
# scribepod's RunPod serverless worker: CUDA 12.8 + cuDNN 9, Python 3.11, models baked in, nothing downloaded at
# job time. Build (docs/deploy.md):  docker build --secret id=hf_token,env=HF_TOKEN -t you/scribepod:1 .
# Without the secret the image is built with the `lite` diarizer.
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
# A C compiler for the lock's two sdists (webrtcvad, typing); only the build stages have it.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential ca-certificates \
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

# ---- models: faster-whisper models, and pyannote's pipeline when the hf_token secret is given ---------------------
FROM deps AS models
ARG SCRIBEPOD_MODELS=large-v3-turbo
ARG SCRIBEPOD_MODEL=large-v3-turbo
ENV HF_HOME=/tmp/hf-home
COPY builder/fetch_models.py /tmp/fetch_models.py
# The token is a file under /run/secrets for this one command: never in a layer, an ENV, an ARG or the history.
RUN --mount=type=secret,id=hf_token,required=false \
    /opt/venv/bin/python /tmp/fetch_models.py --models "${SCRIBEPOD_MODELS}" --default "${SCRIBEPOD_MODEL}" \
        --model-dir /models/whisper --pyannote-dir /models/pyannote --hf-token-file /run/secrets/hf_token

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
    SCRIBEPOD_MODEL=${SCRIBEPOD_MODEL} \
    SCRIBEPOD_MODEL_DIR=/models/whisper \
    SCRIBEPOD_PYANNOTE_DIR=/models/pyannote \
    SCRIBEPOD_DEVICE=cuda
WORKDIR /home/scribepod
USER 1000:1000
CMD ["python", "-u", "-m", "scribepod_worker"]
