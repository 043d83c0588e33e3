"""`python -m scribepod_worker`: start the RunPod worker (RunPod's own flags work; alone it runs ./test_input.json)."""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any, NoReturn

from scribepod.models import Transcript
from scribepod_worker import handler, startup
from scribepod_worker.logs import configure_logging

log = logging.getLogger("scribepod_worker")


def _print_transcript(job: dict[str, Any]) -> dict[str, Any]:
    """Local test mode: run the job and also print the transcript for a person to read."""
    output = handler.handle(job)
    if "error" not in output:
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
    """Refuse a `--test_input` that is not JSON now, in one line, not with runpod's traceback after the warm-up."""
    if "--test_input" not in argv:
        return
    position = argv.index("--test_input") + 1
    text = argv[position] if position < len(argv) else ""
    try:
        job = json.loads(text)
    except ValueError as error:
        sys.exit(f'--test_input is not valid JSON ({error}); give a job such as \'{{"input": {{"audio": "..."}}}}\'')
    if not isinstance(job, dict) or not isinstance(job.get("input"), dict):
        sys.exit('--test_input must be a job object with an "input" object: \'{"input": {"audio": "..."}}\'')


def main() -> None:
    _check_test_input(sys.argv[1:])
    configure_logging()
    local_test = "--rp_serve_api" not in sys.argv and not os.environ.get("RUNPOD_WEBHOOK_GET_JOB")
    if local_test:
        # RunPod's logger defaults to DEBUG and would print the whole JSON result three times over the transcript.
        os.environ.setdefault("RUNPOD_LOG_LEVEL", "WARN")
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
    runpod.serverless.start({"handler": _print_transcript if local_test else handler.handle_async})


if __name__ == "__main__":
    main()
