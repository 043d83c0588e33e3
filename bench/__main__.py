"""The benchmark suite in one command: speed side by side, scaling with length, quality, and load.

    .venv/bin/python -m bench --quick    # a few minutes: 2-minute speed files, 1 and 10 minutes of scaling, 8 jobs
    .venv/bin/python -m bench            # the full run: 10-minute speed files, 1 to 120 minutes, 32 jobs

Raw numbers go to bench/results/<UTC time>.json (git-ignored), the tables to stdout and bench/RESULTS.md, the
scaling plot to bench/scaling.png. Model tiny.en (int8, CPU) and the `builtin` diarizer throughout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from scipy.optimize import linear_sum_assignment

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import jiwer  # noqa: E402

import recordings  # noqa: E402
import speed  # noqa: E402

from scoring import diarization_error_rate, normalize, word_error_rate  # noqa: E402
from servers import local_endpoint  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SAMPLE_RATE = 16_000


def scaling(minutes: list[float], model: str) -> list[dict[str, Any]]:
    """Each length in a fresh process (bench/profile_job.py), so one run's peak memory does not hide the next."""
    rows = []
    for length in minutes:
        recording = recordings.joined(length)
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            subprocess.run(
                [
                    sys.executable,
                    str(ROOT / "bench" / "profile_job.py"),
                    str(recording.path),
                    "--model",
                    model,
                    "--out",
                    out.name,
                ],
                check=True,
            )
            row = json.loads(Path(out.name).read_text())
        quality = _scores(recording, row["turns"], row["segments"])
        rows.append({"minutes": length, **{k: v for k, v in row.items() if k not in ("turns", "segments")}, **quality})
        print(f"  scaling {length:g} min: {row['wall']:.1f} s, peak RSS {row['rss_peak'] / 2**30:.2f} GiB", flush=True)
    return rows


def _scores(
    recording: recordings.Recording, turns: list[dict[str, Any]], words: list[dict[str, Any]]
) -> dict[str, Any]:
    hypothesis = [(t["start"], t["end"], t["speaker"]) for t in turns]
    return {
        "wer": word_error_rate(recording.text, " ".join(w["word"] for w in words)),
        "der": diarization_error_rate(recording.turns, hypothesis, 0.0),
        "der_collar": diarization_error_rate(recording.turns, hypothesis, 0.5),
        "cpwer": cp_wer(recording.utterances, words),
        "speakers_found": len({t["speaker"] for t in turns}),
        "speakers_true": recording.speakers,
    }


def cp_wer(utterances: list[recordings.Utterance], words: list[dict[str, Any]]) -> float:
    """Concatenated minimum-permutation WER: each speaker's words scored against the hypothesis speaker they map
    to, under the mapping with the fewest errors (speakers without a partner are scored against nothing)."""
    reference: dict[str, list[str]] = {}
    for _, _, speaker, text in utterances:
        reference.setdefault(speaker, []).append(normalize(text))
    hypothesis: dict[str, list[str]] = {}
    for word in words:
        hypothesis.setdefault(word["speaker"] or "none", []).append(normalize(word["word"]))
    refs = [" ".join(t for t in texts if t) for texts in reference.values()]
    hyps = [" ".join(t for t in texts if t) for texts in hypothesis.values()]
    size = max(len(refs), len(hyps))
    refs += [""] * (size - len(refs))
    hyps += [""] * (size - len(hyps))
    cost = np.array([[_errors(r, h) for h in hyps] for r in refs])
    rows, cols = linear_sum_assignment(cost)
    total = sum(len(r.split()) for r in refs)
    return float(cost[rows, cols].sum() / max(total, 1))


def _errors(reference: str, hypothesis: str) -> int:
    if not reference:
        return len(hypothesis.split())
    if not hypothesis:
        return len(reference.split())
    out = jiwer.process_words(reference, hypothesis)
    return int(out.substitutions + out.deletions + out.insertions)


def quality(long_minutes: float, model: str) -> dict[str, Any]:
    """WER, DER, cpWER and the speaker count through the engine on real and synthetic conversations, and words on
    recordings with no speech (must be none)."""
    from scribepod.models import TranscriptionOptions
    from scribepod_worker.config import WorkerSettings
    from scribepod_worker.engine import Engine

    engine = Engine(WorkerSettings(model=model, device="cpu", diarizer="builtin"))
    engine.warm_up()
    clips = [recordings.sample()] + [recordings.conversation(v, 12) for v in ((0, 1), (2, 3, 4), (0, 1, 2, 3))]
    clips.append(recordings.joined(long_minutes))
    rows = []
    for clip in clips:
        audio = sf.read(clip.path, dtype="float32")[0]
        transcript = engine.transcribe_audio(audio, TranscriptionOptions())
        words = [w.model_dump() for s in transcript.segments for w in s.words]
        turns = [t.model_dump() for t in transcript.turns]
        rows.append({"clip": clip.name, "minutes": clip.seconds / 60, **_scores(clip, turns, words)})
        print(f"  quality {clip.name}: done", flush=True)
    silence = []
    rng = np.random.default_rng(0)
    t = np.arange(60 * SAMPLE_RATE) / SAMPLE_RATE
    notes = 220.0 * 2 ** (np.floor(t * 2) % 12 / 12)  # a new note every 0.5 s, with a fifth above
    for name, audio in (
        ("silence", np.zeros(60 * SAMPLE_RATE)),
        ("white noise", 0.05 * rng.standard_normal(60 * SAMPLE_RATE)),
        ("tones (music-like)", 0.2 * np.sin(2 * np.pi * notes * t) + 0.1 * np.sin(2 * np.pi * 1.5 * notes * t)),
    ):
        transcript = engine.transcribe_audio(audio.astype(np.float32), TranscriptionOptions())
        silence.append(
            {"clip": name, "words": sum(len(s.words) for s in transcript.segments), "turns": len(transcript.turns)}
        )
    return {"clips": rows, "no_speech": silence}


def load(jobs: int, concurrency: int) -> dict[str, Any]:
    """`jobs` copies of the sample through the local endpoint (`scribepod-worker serve --concurrency 2`) with
    `Client.transcribe_many`: completed, failed, lost (no answer at all) and throughput."""
    from scribepod import Client

    with local_endpoint("--concurrency", "2") as endpoint:
        audio = recordings.sample().path.read_bytes()
        started = time.perf_counter()
        with Client(base_url=f"{endpoint}/v2/local", api_key="local", timeout=1800) as client:
            results = client.transcribe_many([audio] * jobs, concurrency=concurrency)
        wall = time.perf_counter() - started
    completed = sum(1 for r in results if not isinstance(r, Exception) and r.segments)
    failed = sum(1 for r in results if isinstance(r, Exception))
    return {
        "jobs": jobs,
        "client_concurrency": concurrency,
        "worker_concurrency": 2,
        "completed": completed,
        "failed": failed,
        "lost": jobs - completed - failed,
        "wall": wall,
        "jobs_per_min": 60 * jobs / wall,
        "audio_min_per_min": jobs * 0.5 / (wall / 60),
        "errors": [str(r) for r in results if isinstance(r, Exception)],
    }


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [r["minutes"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key, style, label in (
        ("wall", "o-", "worker (wall)"),
        ("asr", "s--", "ASR"),
        ("diarize", "^--", "diarize (beside ASR)"),
        ("decode", "v--", "decode"),
    ):
        seconds = [(r["wall"] if key == "wall" else r["timings"][key]) / r["minutes"] for r in rows]
        left.plot(minutes, seconds, style, label=label)
    left.set(xlabel="recording length (min)", ylabel="seconds per audio minute", title="time per audio minute")
    left.set_ylim(bottom=0)
    left.legend()
    right.plot(minutes, [r["rss_peak"] / 2**30 for r in rows], "o-", label="peak RSS")
    right.plot(minutes, [r["rss_baseline"] / 2**30 for r in rows], "--", label="models loaded")
    signal_bytes = 16_000 * 4 * 60  # one minute of the decoded float32 signal, which every stage reads
    right.plot(
        minutes, [(r["rss_baseline"] + r["minutes"] * signal_bytes) / 2**30 for r in rows], ":", label="models + signal"
    )
    right.set(xlabel="recording length (min)", ylabel="GiB", title="peak memory")
    right.set_ylim(bottom=0)
    right.legend()
    fig.suptitle("scribepod worker, tiny.en int8 + builtin, 2-core CPU")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def report(results: dict[str, Any]) -> str:
    """The tables in Markdown (bench/RESULTS.md and docs/performance.md)."""
    out = [f"Measured {results['when']} on {results['machine']}; `{results['command']}`.", "", "### Speed", ""]
    out += [speed.table(results["speed"]), "", "### Scaling", ""]
    out += [
        "| minutes | wall s | s per audio min | decode s | ASR s | diarize s | peak RSS GiB | above models GiB"
        " | longest progress gap s | DER | DER c.5 | speakers |",
        "| --- " * 12 + "|",
    ]
    for r in results["scaling"]:
        out.append(
            f"| {r['minutes']:g} | {r['wall']:.1f} | {r['wall'] / r['minutes']:.2f} | {r['timings']['decode']:.1f}"
            f" | {r['timings']['asr']:.1f} | {r['timings']['diarize']:.1f} | {r['rss_peak'] / 2**30:.2f}"
            f" | {(r['rss_peak'] - r['rss_baseline']) / 2**30:.2f} | {r['progress_max_gap']:.1f} | {r['der']:.1%}"
            f" | {r['der_collar']:.1%} | {r['speakers_found']} / {r['speakers_true']} |"
        )
    out += [
        "",
        "Plot: `bench/scaling.png`.",
        "",
        "### Quality",
        "",
        "| clip | min | WER | DER | DER c.5 | cpWER | speakers found / true |",
        "| --- " * 7 + "|",
    ]
    for r in results["quality"]["clips"]:
        out.append(
            f"| {r['clip']} | {r['minutes']:.1f} | {r['wer']:.1%} | {r['der']:.1%} | {r['der_collar']:.1%}"
            f" | {r['cpwer']:.1%} | {r['speakers_found']} / {r['speakers_true']} |"
        )
    out += ["", "| no-speech input (60 s) | words | turns |", "| --- | --- | --- |"]
    out += [f"| {r['clip']} | {r['words']} | {r['turns']} |" for r in results["quality"]["no_speech"]]
    ld = results["load"]
    out += [
        "",
        "### Load",
        "",
        "| jobs | client concurrency | worker concurrency | completed | failed | lost | wall s"
        " | jobs / min | audio min / min |",
        "| --- " * 9 + "|",
        f"| {ld['jobs']} | {ld['client_concurrency']} | {ld['worker_concurrency']} | {ld['completed']}"
        f" | {ld['failed']} | {ld['lost']} | {ld['wall']:.1f} | {ld['jobs_per_min']:.1f}"
        f" | {ld['audio_min_per_min']:.1f} |",
    ]
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few minutes: short files, 1 and 10 minutes, 8 jobs")
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--only", choices=["speed", "scaling", "quality", "load"], action="append")
    args = parser.parse_args()
    parts = args.only or ["speed", "scaling", "quality", "load"]
    quick = args.quick
    results: dict[str, Any] = {
        "when": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} CPU cores",
        "command": ".venv/bin/python -m bench" + (" --quick" if quick else ""),
        "model": args.model,
    }
    if "speed" in parts:
        results["speed"] = [speed.measure(kind, 2.0 if quick else 10.0, args.model) for kind in ("real", "mixed")]
    if "scaling" in parts:
        results["scaling"] = scaling([1, 10] if quick else [1, 10, 30, 60, 120], args.model)
        plot(results["scaling"], ROOT / "bench" / "scaling.png")
    if "quality" in parts:
        results["quality"] = quality(10 if quick else 30, args.model)
    if "load" in parts:
        results["load"] = load(8 if quick else 32, 8)
    RESULTS.mkdir(exist_ok=True)
    raw = RESULTS / f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}.json"
    raw.write_text(json.dumps(results, indent=1))
    if set(parts) == {"speed", "scaling", "quality", "load"}:
        text = report(results)
        (ROOT / "bench" / "RESULTS.md").write_text("# Benchmark results\n\n" + text)
        print(text)
    print(f"raw numbers: {raw}")


if __name__ == "__main__":
    main()
