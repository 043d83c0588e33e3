"""The `builtin` diarizer (segmentation-3.0 + CAM++) with its real weights on real and synthetic recordings.

The weights come from `python -m scribepod_worker.diarize.weights` (scripts/setup.sh runs it). Quality is compared
with baselines computed here, never with the figure measured on one CPU: on a held-out AMI clip (not used to tune)
the DER must sit well below labelling the same detected speech as one speaker.
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from scribepod_worker.config import WorkerSettings
from scribepod_worker.diarize import load_diarizer
from scribepod_worker.diarize.base import SAMPLE_RATE, SpeakerCountHint, SpeakerTurn
from scribepod_worker.diarize.builtin import BuiltinDiarizer
from scribepod_worker.diarize.weights import FILES, fetch_command, problems, weights_dir
from scribepod_worker.errors import WorkerError

from conftest import realspeech
from scoring import der_components, pooled_der, read_rttm, read_uem
from synth import VOICES, accent_script, round_robin, synthesize_conversation

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = ROOT / ".cache" / "sample"
# Held out from tuning (see bench/realspeech.py): 3 speakers, quiet far-field audio.
HELD_OUT_CLIP = "ami_trn04"

Reference = list[tuple[float, float, str]]


@pytest.fixture(scope="module")
def diarizer() -> BuiltinDiarizer:
    settings = WorkerSettings(diarizer="builtin", device="cpu")
    loaded = load_diarizer("builtin", settings, "cpu")
    assert isinstance(loaded, BuiltinDiarizer)
    return loaded


def _load(path: Path) -> np.ndarray:
    audio, rate = sf.read(path, dtype="float32")
    assert rate == SAMPLE_RATE
    return np.asarray(audio)


def _tuples(turns: list[SpeakerTurn]) -> Reference:
    return [(t.start, t.end, t.speaker) for t in turns]


def _speakers(turns: list[SpeakerTurn]) -> int:
    return len({turn.speaker for turn in turns})


def _well_formed(turns: list[SpeakerTurn], audio: np.ndarray) -> None:
    assert all(a.start <= b.start for a, b in itertools.pairwise(turns))
    assert all(0 <= t.start < t.end <= audio.size / SAMPLE_RATE for t in turns)


@pytest.fixture(scope="module")
def conversations(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[np.ndarray, Reference]]:
    folder = tmp_path_factory.mktemp("builtin")
    result = {}
    for voices in (2, 3, 4):
        path = folder / f"conv{voices}.wav"
        reference = synthesize_conversation(round_robin(VOICES[:voices], max(8, 3 * voices)), path)
        result[f"{voices} voices"] = (_load(path), reference)
    path = folder / "accents.wav"
    reference = synthesize_conversation(accent_script(), path)
    result["en-us vs en-gb"] = (_load(path), reference)
    return result


def test_counts_the_two_speakers_of_the_real_sample(diarizer: BuiltinDiarizer) -> None:
    audio = _load(SAMPLE_DIR / "sample.wav")
    progress: list[float] = []
    turns = diarizer.diarize(audio, SpeakerCountHint(), progress.append).turns
    assert _speakers(turns) == 2
    _well_formed(turns, audio)
    assert progress[0] == 0.0 and progress[-1] == 1.0
    assert progress == sorted(progress)


ACCENTS_MERGE = pytest.mark.xfail(
    strict=True,
    reason="CAM++ scores espeak-ng's default en-us and en-gb voices as one speaker (line-to-line cosine 0.85-0.91 "
    "across voices vs 0.88-0.91 within), and segmentation-3.0 gives both one local speaker",
)


@pytest.mark.parametrize(
    "name", ["2 voices", "3 voices", "4 voices", pytest.param("en-us vs en-gb", marks=ACCENTS_MERGE)]
)
def test_counts_clean_synthetic_voices(
    diarizer: BuiltinDiarizer, conversations: dict[str, tuple[np.ndarray, Reference]], name: str
) -> None:
    audio, reference = conversations[name]
    turns = diarizer.diarize(audio, SpeakerCountHint()).turns
    assert _speakers(turns) == len({speaker for _, _, speaker in reference})
    _well_formed(turns, audio)


def test_held_out_meeting_clip_beats_one_label_by_far(diarizer: BuiltinDiarizer) -> None:
    audio = _load(realspeech(f"{HELD_OUT_CLIP}.wav"))
    reference = read_rttm(realspeech(f"{HELD_OUT_CLIP}.rttm"))
    uem = read_uem(realspeech(f"{HELD_OUT_CLIP}.uem"))
    turns = diarizer.diarize(audio, SpeakerCountHint()).turns
    der = pooled_der([der_components(reference, _tuples(turns), uem)])
    one_label = pooled_der([der_components(reference, [(t.start, t.end, "one") for t in turns], uem)])
    # Same speech detection, one speaker: the margin is what speaker information buys (measured ~17 points).
    assert der <= one_label - 0.08
    _well_formed(turns, audio)


def test_overlapped_speech_gets_overlapping_turns(diarizer: BuiltinDiarizer) -> None:
    audio = _load(realspeech("ami_trn08.wav"))  # 61% of its speech is overlapped
    turns = diarizer.diarize(audio, SpeakerCountHint()).turns
    overlapped = sum(
        max(0.0, min(a.end, b.end) - max(a.start, b.start))
        for a, b in itertools.combinations(turns, 2)
        if a.speaker != b.speaker
    )
    assert overlapped >= 1.0
    _well_formed(turns, audio)


@pytest.mark.parametrize(
    ("hint", "expected"),
    [
        (SpeakerCountHint(num_speakers=3), {3}),
        (SpeakerCountHint(num_speakers=1), {1}),
        (SpeakerCountHint(max_speakers=1), {1}),
        (SpeakerCountHint(min_speakers=3, max_speakers=4), {3, 4}),
    ],
)
def test_speaker_count_hints_are_respected(
    diarizer: BuiltinDiarizer, hint: SpeakerCountHint, expected: set[int]
) -> None:
    audio = _load(SAMPLE_DIR / "sample.wav")
    turns = diarizer.diarize(audio, hint).turns
    assert _speakers(turns) in expected
    _well_formed(turns, audio)


@pytest.mark.parametrize("seconds", [0.0, 0.02, 0.5, 12.0])
def test_silence_and_tiny_inputs_give_no_turns(diarizer: BuiltinDiarizer, seconds: float) -> None:
    assert diarizer.diarize(np.zeros(round(seconds * SAMPLE_RATE), dtype=np.float32), SpeakerCountHint()).turns == []


def test_short_speech_is_one_speaker_clipped_to_the_audio(diarizer: BuiltinDiarizer) -> None:
    audio = _load(SAMPLE_DIR / "sample.wav")[round(10.8 * SAMPLE_RATE) : round(12.8 * SAMPLE_RATE)]
    turns = diarizer.diarize(audio, SpeakerCountHint()).turns
    assert _speakers(turns) == 1
    _well_formed(turns, audio)
    assert turns[-1].end > 1.5


def test_long_audio_progress_rises_and_turns_stay_inside(diarizer: BuiltinDiarizer) -> None:
    sample = _load(SAMPLE_DIR / "sample.wav")
    audio = np.concatenate([sample] * 4)[: -round(3.3 * SAMPLE_RATE)]  # an end that is not on the window grid
    progress: list[float] = []
    turns = diarizer.diarize(audio, SpeakerCountHint(), progress.append).turns
    assert progress == sorted(progress) and len(progress) >= 3 and progress[-1] == 1.0
    assert _speakers(turns) == 2
    _well_formed(turns, audio)
    assert turns[-1].end > audio.size / SAMPLE_RATE - 2


def test_missing_or_corrupt_weights_name_the_fetch_command(tmp_path: Path) -> None:
    with pytest.raises(WorkerError) as missing:
        BuiltinDiarizer(tmp_path / "nowhere")
    assert missing.value.code == "model_unavailable"
    assert fetch_command(tmp_path / "nowhere") in missing.value.message

    source = weights_dir(WorkerSettings())
    for name in FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, tmp_path / name)
    assert problems(tmp_path) == []
    with (tmp_path / "campplus" / "campplus_cn_en_common.pt").open("r+b") as handle:
        handle.seek(1000)
        handle.write(b"\0" * 16)
    with pytest.raises(WorkerError) as corrupt:
        load_diarizer("builtin", WorkerSettings(diarizer_weights=tmp_path), "cpu")
    assert corrupt.value.code == "model_unavailable"
    assert "campplus/campplus_cn_en_common.pt" in corrupt.value.message
    assert f"python -m scribepod_worker.diarize.weights {tmp_path}" in corrupt.value.message


def test_settings_read_the_weights_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SCRIBEPOD_DIARIZER", "builtin")
    monkeypatch.setenv("SCRIBEPOD_DIARIZER_WEIGHTS", str(tmp_path))
    settings = WorkerSettings.from_env()
    assert settings.diarizer == "builtin"
    assert weights_dir(settings) == tmp_path
