"""`scribepod`: transcribe files from the shell, enrol voices, check an endpoint's health, read a job's status.

Exit codes (scripts can rely on them): 0 every input transcribed; 1 at least one job failed or an input was
rejected; 2 bad command line; 3 the API key was refused; 4 the endpoint was unreachable or kept failing;
5 a job timed out or was cancelled. With several failures, the highest code wins.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

from scribepod.client import Client
from scribepod.errors import (
    AuthenticationError,
    EndpointUnavailable,
    InvalidInput,
    JobCancelled,
    JobTimedOut,
    ScribepodError,
)
from scribepod.models import Segment, Transcript
from scribepod.voices import Voice, load_voiceprints, save_voiceprints

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_AUTH, EXIT_UNAVAILABLE, EXIT_TIMEOUT = 0, 1, 2, 3, 4, 5
FORMATS = ("srt", "vtt", "txt", "json", "rttm")


def exit_code(error: ScribepodError) -> int:
    if isinstance(error, AuthenticationError):
        return EXIT_AUTH
    if isinstance(error, EndpointUnavailable):
        return EXIT_UNAVAILABLE
    if isinstance(error, JobTimedOut | JobCancelled):
        return EXIT_TIMEOUT
    return EXIT_FAILED


def render(transcript: Transcript, fmt: str, name: str) -> str:
    if fmt == "json":
        return transcript.model_dump_json(indent=2) + "\n"
    if fmt == "rttm":
        return transcript.to_rttm("".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "audio")
    return transcript.render(fmt)  # type: ignore[arg-type]


class Progress:
    """One stderr line per change: each file's stage and percent, and how many files are done overall."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total, self.done, self.quiet = total, 0, quiet
        self.lock = threading.Lock()  # one line at a time, on stderr and stdout

    def say(self, name: str, text: str) -> None:
        if not self.quiet:
            with self.lock:
                print(f"[{self.done}/{self.total}] {name}: {text}", file=sys.stderr, flush=True)

    def finished(self, name: str, text: str) -> None:
        with self.lock:
            self.done += 1
        self.say(name, text)


def request_options(args: argparse.Namespace) -> dict[str, Any]:
    """The request's options that `transcribe`'s flags give (the voices are added apart: they need the client)."""
    given = {
        "model": args.model,
        "language": args.language,
        "num_speakers": args.num_speakers,
        "min_speakers": args.min_speakers,
        "max_speakers": args.max_speakers,
    }
    options = {key: value for key, value in given.items() if value is not None}
    if args.no_diarize:
        options["diarize"] = False
    if args.multichannel is not None:
        options["multichannel"] = args.multichannel
    if args.channel_names:
        options["channel_names"] = args.channel_names.split(",")
    if args.diarize_channels:
        options["diarize_channels"] = True
    return options


def voices_of(args: argparse.Namespace) -> dict[str, list[Voice]]:
    """`--voiceprints` files' voices and `--speaker NAME=FILE` recordings, by name: every sample of a name counts."""
    voices: dict[str, list[Voice]] = {}
    for path in args.voiceprints or []:
        for voice in load_voiceprints(path):
            voices.setdefault(voice.name, []).append(voice)
    for name, recording in args.speaker or []:
        voices.setdefault(name, []).append(recording)
    return voices


def transcribe(client: Client, args: argparse.Namespace) -> int:
    progress = Progress(len(args.inputs), args.quiet)
    options = request_options(args)
    if voices := voices_of(args):  # enrolled once here, not by each input's job, after the options are checked
        client.check_options(options, voices)
        options["speakers"] = client.enroll(voices, timeout=args.timeout)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    outcomes: dict[int, Transcript | ScribepodError] = {}

    def one(index: int, source: str) -> None:
        name = Path(source.split("?", 1)[0]).name or f"input{index}"

        def report(update: dict[str, Any]) -> None:
            progress.say(name, f"{update.get('stage', '?')} {update.get('percent', 0):.0f}%")

        def show(segment: Segment) -> None:
            who = f"{segment.speaker}: " if segment.speaker else ""
            prefix = f"{name}: " if len(args.inputs) > 1 else ""
            with progress.lock:
                print(f"{prefix}[{segment.start:8.2f} - {segment.end:8.2f}] {who}{segment.text}", flush=True)

        progress.say(name, "preparing")  # not yet sent: a missing file fails here, before any request
        try:
            transcript = client.transcribe(
                source,
                timeout=args.timeout,
                on_progress=report,
                on_segment=show if args.live else None,
                shards=args.shards,
                **options,
            )
        except ScribepodError as error:
            outcomes[index] = error
            progress.finished(name, f"FAILED: {error}")
            return
        except ValueError as error:  # a combination the SDK refuses before sending anything
            outcomes[index] = InvalidInput(str(error))
            progress.finished(name, f"FAILED: {error}")
            return
        outcomes[index] = transcript
        where = f" ({transcript.job.provider})" if transcript.job else ""
        speakers = len(transcript.speakers)
        progress.finished(
            name, f"done{where}: {speakers} speaker{'' if speakers == 1 else 's'}, {transcript.duration:.0f} s"
        )

    threads = []
    gate = threading.Semaphore(args.concurrency)

    def gated(index: int, source: str) -> None:
        with gate:
            one(index, source)

    for index, source in enumerate(args.inputs):
        thread = threading.Thread(target=gated, args=(index, source), daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    if not args.quiet:  # what the batch used: jobs, audio, GPU seconds, estimated cost (README, Cost tracking)
        print(client.usage.summary().line(), file=sys.stderr, flush=True)

    code = EXIT_OK
    for index, source in enumerate(args.inputs):
        outcome = outcomes[index]
        if isinstance(outcome, ScribepodError):
            code = max(code, exit_code(outcome))
            continue
        name = Path(source.split("?", 1)[0]).stem or f"input{index}"
        document = render(outcome, args.format, name)
        if args.out:
            (Path(args.out) / f"{name}.{args.format}").write_text(document)
        else:
            if len(args.inputs) > 1 or args.live:  # after the live lines, the exact transcript, with speakers
                print(f"==> {source} <==")
            sys.stdout.write(document)
    return code


def enroll(client: Client, args: argparse.Namespace) -> int:
    samples: dict[str, list[Voice]] = {}
    for name, recording in args.samples:
        samples.setdefault(name, []).append(recording)
    voices = client.enroll(samples, timeout=args.timeout)
    try:
        save_voiceprints(args.out, voices)
    except OSError as error:
        print(f"scribepod: cannot write {args.out}: {error.strerror}", file=sys.stderr)
        return EXIT_USAGE
    for voice in voices:
        seconds = voice.voiceprint.seconds if voice.voiceprint is not None else None
        print(f"enrolled {voice.name} ({seconds or 0:.1f} s of speech)", file=sys.stderr)
    print(f"wrote {len(voices)} voiceprints to {args.out} (readable by you alone)", file=sys.stderr)
    return EXIT_OK


def _named_file(text: str) -> tuple[str, str]:
    name, equals, path = text.partition("=")
    if not equals or not name or not path:
        raise argparse.ArgumentTypeError("give NAME=FILE, e.g. Alice=alice.wav")
    return name, path


def _shards(text: str) -> int | str:
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError("give a number of shards (1 or more) or 'auto'")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scribepod", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--endpoint", help="RunPod endpoint id (default: $SCRIBEPOD_ENDPOINT_ID)")
    parser.add_argument("--base-url", help="endpoint URL, e.g. http://127.0.0.1:8000 (default: $SCRIBEPOD_BASE_URL)")
    parser.add_argument(
        "--fallback",
        choices=["never", "on_error", "local_only"],
        default="never",
        help="run locally when the endpoint fails (on_error) or always (local_only); needs the worker engine",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("transcribe", help="transcribe files or URLs")
    run.add_argument("inputs", nargs="+", metavar="FILE_OR_URL")
    run.add_argument("--format", choices=FORMATS, default="txt")
    run.add_argument("--out", help="write <name>.<format> per input here instead of printing")
    run.add_argument("--concurrency", type=int, default=4, help="inputs in flight at once (default 4)")
    run.add_argument("--timeout", type=float, default=None, help="seconds to wait per input before cancelling it")
    run.add_argument("--model")
    run.add_argument("--language")
    run.add_argument("--num-speakers", type=int)
    run.add_argument("--min-speakers", type=int)
    run.add_argument("--max-speakers", type=int)
    run.add_argument("--no-diarize", action="store_true")
    run.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    run.add_argument(
        "--shards",
        type=_shards,
        default=None,
        metavar="N|auto",
        help="cut a long recording at pauses into N jobs run side by side, merged (needs ffmpeg; README, Shards)",
    )
    run.add_argument(
        "--live",
        action="store_true",
        help="print each segment as it is decoded (provisional, without speakers), then the final transcript in "
        "--format (or write it to --out)",
    )

    run.add_argument(
        "--multichannel",
        action="store_const",
        const=True,
        help="one speaker per audio channel (a call with each side on its own channel)",
    )
    run.add_argument(
        "--multichannel-auto",
        dest="multichannel",
        action="store_const",
        const="auto",
        help="the same, only for a stereo file whose channels differ (else one mono job)",
    )
    run.add_argument("--channel-names", metavar="A,B", help="each channel's speaker name, comma-separated")
    run.add_argument("--diarize-channels", action="store_true", help="also tell voices apart within each channel")
    run.add_argument(
        "--speaker",
        type=_named_file,
        action="append",
        metavar="NAME=FILE",
        help="a recording of one person alone (3 to 60 s): speakers with that voice are named NAME (repeatable)",
    )
    run.add_argument(
        "--voiceprints", action="append", metavar="FILE", help="voiceprints saved by `scribepod enroll` (repeatable)"
    )

    enrolling = commands.add_parser("enroll", help="make voiceprints of voice samples, to name speakers later")
    enrolling.add_argument("samples", nargs="+", type=_named_file, metavar="NAME=FILE")
    enrolling.add_argument("--out", required=True, help="the JSON file to write (only you can read it)")
    enrolling.add_argument("--timeout", type=float, default=None, help="seconds to wait before cancelling")

    commands.add_parser("health", help="print the endpoint's health document")
    status = commands.add_parser("status", help="print a job's status")
    status.add_argument("job_id")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "transcribe" and args.concurrency < 1:
        print("scribepod: --concurrency must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "transcribe" and args.shards not in (None, 1) and args.live:
        print("scribepod: --live does not combine with --shards", file=sys.stderr)
        return EXIT_USAGE
    endpoint_given = args.endpoint or args.base_url or os.environ.get("SCRIBEPOD_ENDPOINT_ID")
    if not (endpoint_given or os.environ.get("SCRIBEPOD_BASE_URL") or args.fallback == "local_only"):
        print(
            "scribepod: no endpoint: give --endpoint ID or --base-url URL (or set SCRIBEPOD_ENDPOINT_ID or "
            "SCRIBEPOD_BASE_URL), or --fallback local_only to run here",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        client = Client(args.endpoint, base_url=args.base_url, fallback=args.fallback)
    except (ValueError, ScribepodError) as error:
        print(f"scribepod: {error}", file=sys.stderr)
        return EXIT_USAGE
    with client:
        try:
            if args.command == "transcribe":
                return transcribe(client, args)
            if args.command == "enroll":
                return enroll(client, args)
            if args.command == "health":
                print(json.dumps(client.health(), indent=2))
                return EXIT_OK
            state = client.job(args.job_id).refresh()
            print(json.dumps({key: value for key, value in vars(state).items() if value not in (None, ())}, indent=2))
            return EXIT_OK
        except ScribepodError as error:
            print(f"scribepod: {error}", file=sys.stderr)
            return exit_code(error)


def entry_point() -> None:
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # `scribepod status ID | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_OK
    sys.exit(code)
