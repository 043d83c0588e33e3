"""`python -m scribepod_worker`: start the RunPod worker (RunPod's own flags work; alone it runs ./test_input.json)."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from scribepod.models import Transcript
from scribepod_worker import handler, startup
from scribepod_worker.errors import WorkerError
from scribepod_worker.logs import configure_logging

log = logging.getLogger("scribepod_worker")


def _print_transcript(job: dict[str, Any]) -> dict[str, Any]:
    """Local test mode: run the job and also print the transcript for a person to read."""
    output = handler.handle(job)
    if "error" not in output and "speakers" in output and "text" not in output:  # an `enroll` job's voiceprints
        print(f"\n--- enrolled: {', '.join(voice['name'] for voice in output['speakers'])}\n", flush=True)
    elif "error" not in output:
        transcript = Transcript.model_validate(output)
        speakers = ", ".join(f"{s.id} {s.duration:.1f}s" for s in transcript.speakers) or "not diarized"
        print(f"\n--- transcript: {transcript.duration:.1f}s, language {transcript.language}, speakers: {speakers}")
        for segment in transcript.segments:
            who = f"{segment.speaker}: " if segment.speaker else ""
            print(f"[{segment.start:7.2f} - {segment.end:7.2f}] {who}{segment.text}")
        print(f"--- timings: {transcript.timings}\n", flush=True)
    return output


def _fail_start(error: startup.StartupError) -> NoReturn:
    """Exit before taking a job, so RunPod marks the worker unhealthy instead of failing customers' jobs with it."""
    log.critical("start-up check failed: %s", error)
    sys.exit(1)


def _check_test_input(argv: list[str]) -> None:
    """Refuse a bad test job now, in one line, not with runpod's traceback or a job error after the warm-up: JSON
    that does not parse, or an input the contract rejects (every bad field named). The job is `--test_input`'s,
    else ./test_input.json's, as runpod reads them, and only where runpod would run it (local test mode)."""
    if "--test_input" in argv:
        position = argv.index("--test_input") + 1
        text, where = (argv[position] if position < len(argv) else ""), "--test_input"
    elif _local_test(argv) and Path("test_input.json").is_file():
        text, where = Path("test_input.json").read_text(encoding="utf-8", errors="replace"), "test_input.json"
    else:
        return
    try:
        job = json.loads(text)
    except ValueError as error:
        sys.exit(f'{where} is not valid JSON ({error}); give a job such as \'{{"input": {{"audio": "..."}}}}\'')
    if not isinstance(job, dict) or not isinstance(job.get("input"), dict):
        sys.exit(f'{where} must be a job object with an "input" object: \'{{"input": {{"audio": "..."}}}}\'')
    try:
        if "enroll" in job["input"]:
            handler.parse_enrollment(job["input"])
        else:
            handler.parse_input(job["input"])
    except WorkerError as error:
        sys.exit(f"{where} is not a valid job: {error.message}")


def _local_test(argv: list[str]) -> bool:
    """runpod's local test mode: one job from --test_input or ./test_input.json, not its API or RunPod's queue."""
    return "--rp_serve_api" not in argv and not os.environ.get("RUNPOD_WEBHOOK_GET_JOB")


def main() -> None:
    _check_test_input(sys.argv[1:])
    configure_logging()
    local_test = _local_test(sys.argv[1:])
    # RunPod's logger defaults to DEBUG, which logs every job's input and output whole: transcripts, voice samples and
    # voiceprints would land in the worker's logs. INFO keeps its job lines without them; locally, WARN (the printed
    # transcript follows).
    os.environ.setdefault("RUNPOD_LOG_LEVEL", "WARN" if local_test else "INFO")
    import runpod

    try:
        engine = startup.build_engine()
    except startup.StartupError as error:
        _fail_start(error)
    try:
        log.info(startup.describe(startup.prepare(engine)))
    except startup.StartupError as error:
        if startup.strict_startup(engine.settings):
            _fail_start(error)
        # A local run: jobs that name another model can still run; the default is the operator's to fix.
        log.warning("warm-up incomplete: %s", error)
    handler.set_engine(engine)
    if local_test:
        runpod.serverless.start({"handler": _print_transcript})
    elif engine.settings.stream:  # /stream carries the segments; /run and /runsync answer with every item
        runpod.serverless.start({"handler": handler.handle_stream, "return_aggregate_stream": True})
    else:
        runpod.serverless.start({"handler": handler.handle_async})


if __name__ == "__main__":
    main()
