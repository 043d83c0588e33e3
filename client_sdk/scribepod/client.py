"""`Client` and `AsyncClient`: submit audio to a scribepod endpoint, follow jobs, fall back to local inference.

Both share `_ClientBase` (configuration, request bodies, fallback policy) and the I/O-free job protocols in
`_flows`; each only adds its way of doing I/O. Retries live in `_core.retry_arguments`, nowhere else.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import ValidationError
from tenacity import AsyncRetrying, Retrying

from scribepod import _flows
from scribepod._core import (
    DEFAULT_BASE_URL,
    RUN_PAYLOAD_LIMIT,
    RUNSYNC_PAYLOAD_LIMIT,
    JobState,
    ProgressCallback,
    SegmentCallback,
    TransientStatus,
    check_response,
    enrollment_of,
    final_error,
    provider_of,
    retry_arguments,
)
from scribepod._local import LocalEngine
from scribepod._sources import (
    PreparedAudio,
    S3Settings,
    Source,
    delete_upload,
    describe,
    is_remote,
    prepare,
    read_bytes,
)
from scribepod.errors import EndpointUnavailable, InvalidInput, JobFailed, ScribepodError
from scribepod.models import Enrollment, Provider, Segment, SpeakerSample, Transcript, TranscriptionOptions
from scribepod.redaction import redact, register_secret
from scribepod.shards import (
    CombinedProgress,
    ShardAudio,
    ShardJobs,
    SpeakerHint,
    cut_recording,
    ffmpeg,
    merge,
    shard_count,
)
from scribepod.usage import PriceTable, Tier, Usage, tier_from_env
from scribepod.voices import Recording, SpeakerVoices, split_voices, wire_speakers

log = logging.getLogger("scribepod")
# RunPod takes an executionTimeout over 5 s and up to 7 days (the local endpoint holds it to the same).
MAX_EXECUTION_TIMEOUT_S = 7 * 24 * 3600.0

Fallback = Literal["never", "on_error", "local_only"]
# Stands in for each voiceprint while a job's options are checked before its recordings are enrolled.
_STAND_IN_VOICEPRINT = {"embedding_model": "stand-in", "vector": [1.0]}
_VERSION = "0.1.0"


class _ClientBase:
    """Configuration and request building shared by the sync and async clients."""

    def __init__(
        self,
        endpoint_id: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        fallback: Fallback = "never",
        timeout: float | None = 3600.0,
        request_timeout: float = 30.0,
        max_retries: int = 6,
        s3: S3Settings | None = None,
        s3_bucket: str | None = None,
        s3_endpoint_url: str | None = None,
        prices: PriceTable | None = None,
        price_tier: Tier | None = None,
    ) -> None:
        if fallback not in ("never", "on_error", "local_only"):
            raise ValueError(f"fallback must be 'never', 'on_error' or 'local_only', not {fallback!r}")
        self.endpoint_id = endpoint_id or os.environ.get("SCRIBEPOD_ENDPOINT_ID") or None
        # RunPod's variable first; `serve` reads SCRIBEPOD_API_KEY, so a local setup can share one variable.
        self._api_key = api_key or os.environ.get("RUNPOD_API_KEY") or os.environ.get("SCRIBEPOD_API_KEY") or None
        register_secret(self._api_key, min_length=4)
        base = base_url or os.environ.get("SCRIBEPOD_BASE_URL") or None
        if base is None and self.endpoint_id is not None:
            base = DEFAULT_BASE_URL.format(endpoint_id=self.endpoint_id)
        if base is None and fallback != "local_only":
            raise ValueError(
                "no endpoint: pass endpoint_id or base_url (or set SCRIBEPOD_ENDPOINT_ID / SCRIBEPOD_BASE_URL), "
                "or use fallback='local_only'"
            )
        self.base_url = base.rstrip("/") if base else None
        self.provider: Provider = provider_of(self.base_url) if fallback != "local_only" else "local"
        self.fallback: Fallback = fallback
        self.timeout = timeout
        self.request_timeout = request_timeout
        self.max_retries = max_retries
        if s3 is None and s3_bucket:
            s3 = S3Settings(bucket=s3_bucket, endpoint_url=s3_endpoint_url)
        self.s3 = s3 or S3Settings.from_env()
        if self.s3 is not None:
            register_secret(self.s3.access_key_id)
            register_secret(self.s3.secret_access_key)
        self._local = LocalEngine() if fallback != "never" else None
        # Estimated cost of each finished job, summed: `prices` else $SCRIBEPOD_PRICES' overrides of the shipped
        # table; `price_tier` else $SCRIBEPOD_PRICE_TIER, else flex.
        self.usage = Usage(prices or PriceTable.from_env(), price_tier or tier_from_env())
        # Voiceprints of the recordings enrolled so far (by name and content), so none is sent twice; in memory only.
        self._voiceprints: dict[str, SpeakerSample] = {}

    def __repr__(self) -> str:  # never shows the API key, nor a password in the base URL
        return f"{type(self).__name__}(base_url={redact(self.base_url or '')!r}, fallback={self.fallback!r})"

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": f"scribepod-python/{_VERSION}", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _retrying_kwargs(self, call: _flows.Call) -> dict[str, Any]:
        return retry_arguments(
            idempotent=call.idempotent, attempts=self.max_retries, max_seconds=max(60.0, self.request_timeout * 4)
        )

    def _request_args(self, call: _flows.Call) -> dict[str, Any]:
        timeout = call.timeout if call.timeout is not None else self.request_timeout
        return {"params": call.params, "json": call.json, "timeout": timeout}

    def _failed(self, error: BaseException, call: _flows.Call) -> ScribepodError:
        return final_error(error, idempotent=call.idempotent, what=call.what)

    @staticmethod
    def _options(options: dict[str, Any]) -> dict[str, Any]:
        """Validate the options here, so a typo fails at once and names the field, before any upload."""
        try:
            validated = TranscriptionOptions.model_validate(options)
        except ValidationError as error:  # every invalid field in one answer, as the worker gives them
            problems = [
                f"{'.'.join(str(p) for p in e['loc']) or 'options'}: {e['msg'].removeprefix('Value error, ')}"
                for e in error.errors()
            ]
            message = problems[0] if len(problems) == 1 else f"{len(problems)} invalid fields: " + "; ".join(problems)
            raise InvalidInput(message) from None
        return validated.model_dump(exclude_defaults=True)

    def _prepare(self, source: Source, options: dict[str, Any], limit: int) -> PreparedAudio:
        keep_channels = options.get("multichannel", False) is not False  # each channel is a speaker: no mono mix
        return prepare(
            source, options_size=len(json.dumps(options)), limit=limit, s3=self.s3, keep_channels=keep_channels
        )

    @staticmethod
    def _policy(execution_timeout: float | None) -> dict[str, Any] | None:
        """RunPod's `policy` for a job, checked before anything is uploaded or sent."""
        if execution_timeout is None:
            return None
        if not math.isfinite(execution_timeout) or not 5.0 < execution_timeout <= MAX_EXECUTION_TIMEOUT_S:
            raise InvalidInput(
                f"execution_timeout must be over 5 and at most {MAX_EXECUTION_TIMEOUT_S:g} seconds (RunPod's bounds), "
                f"not {execution_timeout!r}"
            )
        return {"executionTimeout": round(execution_timeout * 1000)}

    @staticmethod
    def _body(prepared: PreparedAudio, options: dict[str, Any], policy: dict[str, Any] | None) -> dict[str, Any]:
        body: dict[str, Any] = {"input": {**prepared.fields, **options}}
        if policy is not None:
            body["policy"] = policy
        return body

    def _wait_seconds(self, timeout: float | None) -> float | None:
        """A call's own timeout, else the client's (None waits for ever)."""
        return self.timeout if timeout is None else timeout

    def _run_and_wait(
        self,
        prepared: PreparedAudio,
        options: dict[str, Any],
        timeout: float | None,
        on_progress: ProgressCallback | None,
        *,
        batch: bool,
        live: bool = False,
        on_submitted: Callable[[str], None] | None = None,
    ) -> _flows.Flow:
        """One job, through /runsync for a single call that follows nothing (no progress, no live segments), else
        through /run and polling.

        A batch submits through /run: its jobs wait in the endpoint's queue anyway, so holding a /runsync connection
        for each gains nothing, and /run answers at once, so a slow answer is never mistaken for a lost submission.
        Only a batch input too large for /run (10 MB) goes through /runsync (20 MB)."""
        inline_size = sum(len(value) for value in prepared.fields.values()) + len(json.dumps(options)) + 64
        sync = on_progress is None and not live and (not batch or inline_size > RUN_PAYLOAD_LIMIT)
        return _flows.run_and_wait(
            self._body(prepared, options, None),
            self._wait_seconds(timeout),
            on_progress,
            self.provider,
            sync=sync,
            live=live,
            on_submitted=on_submitted,
        )

    def forget_voiceprints(self) -> None:
        """Drop the voiceprints this client remembers of recordings it enrolled (the next job enrols them again)."""
        self._voiceprints.clear()

    def _enrollment_body(self, recordings: Sequence[Recording]) -> tuple[dict[str, Any], list[PreparedAudio]]:
        """An `enroll` job's body: each recording inline (compressed where large) or uploaded, all within /runsync's
        limit."""
        share = RUNSYNC_PAYLOAD_LIMIT // len(recordings)
        prepared: list[PreparedAudio] = []
        try:
            for recording in recordings:
                prepared.append(
                    prepare(recording.source, options_size=len(recording.name) + 32, limit=share, s3=self.s3)
                )
        except BaseException:  # samples uploaded before the one that failed are not left in the bucket
            for audio in prepared:
                self._cleanup(audio)
            raise
        samples = [{"name": r.name, **audio.fields} for r, audio in zip(recordings, prepared, strict=True)]
        return {"input": {"enroll": samples}}, prepared

    def _known(self, entries: Sequence[SpeakerSample | Recording]) -> dict[str, SpeakerSample]:
        """The voiceprints this client holds of the recordings among `entries`, by key (a snapshot: another thread's
        `forget_voiceprints` cannot take them from this call)."""
        recordings = [entry for entry in entries if isinstance(entry, Recording)]
        return {r.key: voice for r in recordings if (voice := self._voiceprints.get(r.key)) is not None}

    @staticmethod
    def _missing(entries: Sequence[SpeakerSample | Recording], known: dict[str, SpeakerSample]) -> list[Recording]:
        """The recordings among `entries` not in `known`, each once."""
        missing = {e.key: e for e in entries if isinstance(e, Recording) and e.key not in known}
        return list(missing.values())

    def check_options(self, options: dict[str, Any], speakers: SpeakerVoices | None = None) -> None:
        """Raise `InvalidInput` naming every invalid option, as a job would be refused, without sending anything;
        `speakers` are checked by name, with stand-ins for their voiceprints (none is enrolled here)."""
        entries = split_voices(speakers)[0] if speakers is not None else []
        self._check_before_enrolling(options, entries)

    def _check_before_enrolling(self, options: dict[str, Any], entries: Sequence[SpeakerSample | Recording]) -> None:
        """The job's options checked with stand-ins for the voiceprints, so a typo fails before samples are sent."""
        stand_ins = [{"name": entry.name, "voiceprint": _STAND_IN_VOICEPRINT} for entry in entries]
        self._options({**options, "speakers": stand_ins or None})

    @staticmethod
    def _recorded(entries: Sequence[SpeakerSample | Recording], known: dict[str, SpeakerSample]) -> list[SpeakerSample]:
        return [known[entry.key] if isinstance(entry, Recording) else entry for entry in entries]

    def _enrolled(self, recordings: Sequence[Recording], voices: Sequence[SpeakerSample]) -> dict[str, SpeakerSample]:
        """Remember what an enrolment gave, and return it by key."""
        if len(voices) != len(recordings):
            raise InvalidInput(f"the endpoint enrolled {len(voices)} voices for {len(recordings)} recordings")
        fresh = {recording.key: voice for recording, voice in zip(recordings, voices, strict=True)}
        self._voiceprints.update(fresh)
        return fresh

    @staticmethod
    def _with_voiceprints(
        options: dict[str, Any], entries: Sequence[SpeakerSample | Recording], known: dict[str, SpeakerSample]
    ) -> dict[str, Any]:
        return {**options, "speakers": wire_speakers(entries, known)}

    @staticmethod
    def _sample_failure(error: JobFailed, recordings: Sequence[Recording]) -> JobFailed:
        """An enrolment's failure naming the person whose sample it was (`enroll.N` counts only what was sent)."""
        index = error.field.split(".")[1] if error.field and error.field.startswith("enroll.") else ""
        if not index.isdigit() or int(index) >= len(recordings):
            return error
        name = recordings[int(index)].name
        return JobFailed(error.code, f"the voice sample of {name!r}: {error.message}", error.field, error.job_id)

    @staticmethod
    def _payload_limit(follows: bool) -> int:
        """A job nobody follows may go through /runsync (20 MB); one followed goes through /run (10 MB)."""
        return RUN_PAYLOAD_LIMIT if follows else RUNSYNC_PAYLOAD_LIMIT

    def _cleanup(self, prepared: PreparedAudio) -> None:
        if prepared.upload is not None and self.s3 is not None and self.s3.delete_after:
            delete_upload(prepared.upload, self.s3)

    def _should_fall_back(self, error: ScribepodError) -> bool:
        """Endpoint trouble (unreachable, overloaded, failing) falls back; a job the worker rejected does not,
        since local inference would reject it too."""
        return self.fallback == "on_error" and isinstance(error, EndpointUnavailable)

    def _fall_back(self, source: Source, options: dict[str, Any], error: ScribepodError) -> Transcript:
        assert self._local is not None
        log.warning("endpoint failed for %s (%s); transcribing locally", describe(source), error)
        return self._local.transcribe(source, options, None)

    def _shard_plan(
        self, source: Source, shards: int | str, options: dict[str, Any], workers: int, folder: Path
    ) -> tuple[list[ShardAudio], dict[str, Any], SpeakerHint] | None:
        """The shards and each shard's options, or None where the input goes as one job: too short, one worker,
        no ffmpeg, a URL (shards need the audio here), or no pause to cut at (README, "Shards")."""
        if isinstance(source, str) and is_remote(source):
            log.info("%s is a URL: sent as one job (shards need the audio on this machine)", describe(source))
            return None
        if ffmpeg() is None:
            log.warning("no ffmpeg on this machine: %s is sent as one job, not in shards", describe(source))
            return None
        pieces = cut_recording(source, shards, workers, folder)
        if pieces is None:
            return None
        asked = self._options(options)
        hint = SpeakerHint(asked.get("num_speakers"), asked.get("min_speakers"), asked.get("max_speakers"))
        # A shard may hold fewer voices than the recording: it gets only the upper bound; the count is the merge's.
        per_shard = {key: value for key, value in options.items() if key not in ("num_speakers", "min_speakers")}
        if hint.num_speakers or hint.max_speakers:
            per_shard["max_speakers"] = hint.num_speakers or hint.max_speakers
        linking = {"return_embeddings": True} if asked.get("diarize", True) else {}
        clean = self._options({**per_shard, **linking, "output_formats": []})
        log.info("%s: %d shards, cut at %s s", describe(source), len(pieces), [round(p.start, 1) for p in pieces[1:]])
        return pieces, clean, hint

    @staticmethod
    def _workers(health: dict[str, Any] | None) -> int:
        """Workers the endpoint reports able to take a job now or soon (idle, ready, running, initializing); one
        when it cannot say (its /health failed: then the recording goes as one job, with the usual fallback)."""
        counts = (health or {}).get("workers", {})
        return sum(int(counts.get(key, 0) or 0) for key in ("idle", "ready", "running", "initializing")) or 1

    @staticmethod
    def _check_shards(shards: int | str | None, options: dict[str, Any], on_segment: SegmentCallback | None) -> bool:
        """Whether the call runs in shards; what cannot be sharded fails here, before any sample or audio is sent."""
        if shards is None or shards == 1:
            return False
        shard_count(shards, 1e9, workers=1)  # raises ValueError for anything but N >= 1 or "auto"
        if on_segment is not None:
            raise ValueError("on_segment does not combine with shards: each shard is its own job")
        if options.get("multichannel", False) is not False:
            raise ValueError("shards do not combine with multichannel: cutting mixes the channels to one")
        return True

    def _sharding(self, source: Source, options: dict[str, Any]) -> Source:
        """Check the options before any work, and read a file object once (the plan and a fallback to one job both
        need its bytes)."""
        self._options(options)  # a typo fails here, before ffmpeg runs
        return read_bytes(source) if hasattr(source, "read") else source


class Client(_ClientBase):
    """Blocking client. Thread-safe; use one per process and `close()` it (or use it as a context manager)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._http = httpx.Client(base_url=self.base_url or "", headers=self._headers())
        self._enrolling = threading.Lock()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, call: _flows.Call) -> Any:
        try:
            for attempt in Retrying(**self._retrying_kwargs(call)):
                with attempt:
                    response = self._http.request(call.method, call.path, **self._request_args(call))
                    return check_response(response, call.job_id)
        except (httpx.TransportError, TransientStatus) as error:
            raise self._failed(error, call) from None
        raise AssertionError("unreachable: tenacity reraises")

    def _steps(self, flow: _flows.Flow, outcome: list[Any]) -> Iterator[list[Segment]]:
        """Run an I/O-free flow with blocking I/O, feeding results (or errors) back into it; yield the segments it
        emits, and leave its result in `outcome`."""
        result: Any = None
        error: BaseException | None = None
        while True:
            try:
                step = flow.throw(error) if error is not None else flow.send(result)
            except StopIteration as done:
                outcome.append(done.value)
                return
            result, error = None, None
            if isinstance(step, _flows.Emit):
                yield step.segments
                continue
            try:
                if isinstance(step, _flows.Sleep):
                    time.sleep(step.seconds)
                else:
                    result = self._call(step)
            except ScribepodError as raised:
                error = raised

    def _drive(self, flow: _flows.Flow, on_segment: SegmentCallback | None = None) -> Any:
        outcome: list[Any] = []
        for segments in self._steps(flow, outcome):
            if on_segment is not None:
                for segment in segments:
                    on_segment(segment)
        return outcome[0]

    def transcribe(
        self,
        source: Source,
        *,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        on_segment: SegmentCallback | None = None,
        shards: int | Literal["auto"] | None = None,
        **options: Any,
    ) -> Transcript:
        """Transcribe one input and wait for the result (options: the contract's request fields).

        `on_progress` hears the job's stage and percent; `on_segment` each segment as it is decoded (provisional:
        no speaker yet), then the rest of the final transcript's (README, "Live transcripts"). `shards` cuts a long
        recording at pauses into that many jobs ("auto": by its length and the endpoint's workers), run side by side
        and merged into one transcript (README, "Shards")."""
        sharded = self._check_shards(shards, options, on_segment)
        options = self._voices(options, timeout)  # recordings enrolled once, for every shard
        if sharded:
            assert shards is not None
            return self._transcribe_sharded(source, shards, timeout, on_progress, options)
        return self._transcribe(source, timeout, on_progress, options, batch=False, on_segment=on_segment)

    def enroll(self, samples: SpeakerVoices, *, timeout: float | None = None) -> list[SpeakerSample]:
        """Voiceprints of voice samples, {name: recording}, each a few seconds to a minute of the person alone: pass
        them as `speakers=` (or keep them with `save_voiceprints`). The worker keeps neither samples nor prints."""
        entries, _ = split_voices(samples)
        return self._recorded(entries, self._enrol_missing(entries, timeout))

    def _voices(self, options: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        """`speakers` as voiceprints, recordings enrolled first (once per client)."""
        if options.get("speakers") is None:
            return options
        entries, _ = split_voices(options["speakers"])
        self._check_before_enrolling(options, entries)
        return self._with_voiceprints(options, entries, self._enrol_missing(entries, timeout))

    def _enrol_missing(
        self, entries: Sequence[SpeakerSample | Recording], timeout: float | None
    ) -> dict[str, SpeakerSample]:
        """The voiceprints of the recordings among `entries`, enrolling those the client has not seen. Calls that
        need the same recording at once enrol it once; a call that needs none waits for nobody."""
        known = self._known(entries)
        if not self._missing(entries, known):
            return known
        with self._enrolling:
            known = self._known(entries)
            if missing := self._missing(entries, known):
                known.update(self._enrolled(missing, self._enroll(missing, timeout)))
        return known

    def _enroll(self, recordings: Sequence[Recording], timeout: float | None) -> list[SpeakerSample]:
        try:
            if self.fallback == "local_only":
                assert self._local is not None
                return self._local.enroll(recordings)
            body, prepared = self._enrollment_body(recordings)
            try:
                flow = _flows.run_and_wait(
                    body, self._wait_seconds(timeout), None, self.provider, sync=True, read=enrollment_of
                )
                enrollment: Enrollment = self._drive(flow)
            finally:
                for audio in prepared:
                    self._cleanup(audio)
        except JobFailed as error:
            raise self._sample_failure(error, recordings) from None
        except ScribepodError as error:
            if self._should_fall_back(error):
                assert self._local is not None
                log.warning("endpoint failed enrolling voices (%s); enrolling locally", error)
                return self._local.enroll(recordings)
            raise
        return enrollment.speakers

    def _transcribe_sharded(
        self,
        source: Source,
        shards: int | str,
        timeout: float | None,
        on_progress: ProgressCallback | None,
        options: dict[str, Any],
    ) -> Transcript:
        """The shards as jobs side by side (one thread each); the first failure, a timeout or Ctrl-C cancels them
        all, on the endpoint too, including one whose submission was still under way."""
        source = self._sharding(source, options)
        workers = 1
        if shards == "auto" and self.fallback != "local_only":
            try:
                workers = self._workers(self.health())
            except ScribepodError as error:
                log.warning("could not read the endpoint's workers (%s): sending one job", error)
        with tempfile.TemporaryDirectory(prefix="scribepod-shards-") as folder:
            plan = self._shard_plan(source, shards, options, workers, Path(folder))
            if plan is None:
                return self._transcribe(source, timeout, on_progress, options, batch=False)
            pieces, clean, hint = plan
            progress = CombinedProgress(pieces, on_progress)
            jobs = ShardJobs(self._cancel_shard)
            pool = ThreadPoolExecutor(max_workers=len(pieces), thread_name_prefix="shard")
            futures = [
                pool.submit(
                    self._transcribe,
                    piece.wav,
                    timeout,
                    progress.shard(index),
                    clean,
                    batch=True,
                    on_submitted=jobs.submitted,
                )
                for index, piece in enumerate(pieces)
            ]
            try:
                pending = set(futures)
                while pending:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        future.result()  # raises the shard's error
                        progress.done(futures.index(future))
            except BaseException:
                jobs.stop()
                pool.shutdown(wait=False, cancel_futures=True)  # the threads end once their jobs are cancelled
                raise
            pool.shutdown()
            results = [future.result() for future in futures]
        return merge(
            list(zip(pieces, results, strict=True)),
            hint,
            options.get("output_formats") or (),
            embeddings=bool(options.get("return_embeddings")),
        )

    def _cancel_shard(self, job_id: str) -> None:
        try:
            self._drive(_flows.cancel(job_id))
        except ScribepodError as error:
            log.warning("could not cancel shard job %s: %s", job_id, error)

    def _transcribe(
        self,
        source: Source,
        timeout: float | None,
        on_progress: ProgressCallback | None,
        options: dict[str, Any],
        *,
        batch: bool,
        on_segment: SegmentCallback | None = None,
        on_submitted: Callable[[str], None] | None = None,
    ) -> Transcript:
        clean = self._options(options)
        if self.fallback == "local_only":
            assert self._local is not None
            return self.usage.record(self._local.transcribe(source, clean, None, on_progress, on_segment))
        follows = on_progress is not None or on_segment is not None
        try:
            prepared = self._prepare(source, clean, self._payload_limit(follows))
            try:
                flow = self._run_and_wait(
                    prepared,
                    clean,
                    timeout,
                    on_progress,
                    batch=batch,
                    live=on_segment is not None,
                    on_submitted=on_submitted,
                )
                transcript: Transcript = self._drive(flow, on_segment)
            finally:
                self._cleanup(prepared)
        except ScribepodError as error:
            if self._should_fall_back(error):
                return self.usage.record(self._fall_back(source, clean, error))
            raise
        return self.usage.record(transcript)

    def submit(self, source: Source, *, execution_timeout: float | None = None, **options: Any) -> Job:
        """Queue a job (POST /run) and return its handle at once."""
        clean, policy = self._options(self._voices(options, None)), self._policy(execution_timeout)
        prepared = self._prepare(source, clean, RUN_PAYLOAD_LIMIT)
        state: JobState = self._drive(_flows.submit(self._body(prepared, clean, policy)))
        return Job(self, state, prepared)

    def job(self, job_id: str) -> Job:
        """A handle for a job submitted earlier (by id)."""
        return Job(self, JobState(id=job_id, status="UNKNOWN"), None)

    def transcribe_many(
        self, sources: Sequence[Source], *, concurrency: int = 8, **options: Any
    ) -> list[Transcript | ScribepodError]:
        """Fan out over the endpoint's workers; one entry per source, in order: its transcript or its error.

        Each job is submitted through /run and polled (see `_run_and_wait`), so however long the endpoint's queue,
        no submission is left uncertain for want of an answer."""
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        options = self._voices(options, None)  # once for all the jobs

        def one(source: Source) -> Transcript | ScribepodError:
            try:
                return self._transcribe(source, None, None, options, batch=True)
            except ScribepodError as error:
                return error

        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="scribepod") as pool:
            return list(pool.map(one, sources))

    def health(self) -> dict[str, Any]:
        """The endpoint's health document (job and worker counts)."""
        answer: dict[str, Any] = self._call(_flows.Call("GET", "/health", idempotent=True, what="GET /health"))
        return answer


class _JobBase:
    """What a job handle holds: its id, its last known state, the upload to delete once it ends, and the
    transcript once `stream()` has seen the job complete."""

    def __init__(self, state: JobState, prepared: PreparedAudio | None) -> None:
        self._state = state
        self._prepared = prepared
        self._streamed: list[Any] = []  # the transcript `stream()` ended with, for `wait()`
        self.id = state.id

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, status={self._state.status!r})"


class Job(_JobBase):
    """A submitted job. `wait()` polls with backoff; `cancel()` stops it; `stream()` yields its segments live."""

    def __init__(self, client: Client, state: JobState, prepared: PreparedAudio | None) -> None:
        super().__init__(state, prepared)
        self._client = client

    def refresh(self) -> JobState:
        self._state = self._client._drive(_flows.status(self.id))
        return self._state

    def status(self) -> str:
        """The job's current status (IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED, CANCELLED, TIMED_OUT)."""
        return self.refresh().status

    def wait(
        self,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        on_segment: SegmentCallback | None = None,
    ) -> Transcript:
        """The transcript once the job completes; past `timeout` seconds the job is cancelled (JobTimedOut)."""
        wait = self._client._wait_seconds(timeout)
        deadline = None if wait is None else time.monotonic() + wait
        try:
            if self._streamed:
                transcript: Transcript = self._streamed[0]
            else:
                flow = _flows.wait(self._state, deadline, on_progress, self._client.provider, live=bool(on_segment))
                transcript = self._client._drive(flow, on_segment)
        finally:
            if self._prepared is not None:
                self._client._cleanup(self._prepared)
        return self._client.usage.record(transcript)

    def cancel(self) -> str:
        self._state = self._client._drive(_flows.cancel(self.id))
        return self._state.status

    def stream(self) -> Iterator[Segment]:
        """Each segment as it is decoded, while the job runs (provisional: no speaker or words yet), then the rest
        of the final transcript's; then `wait()` returns the exact transcript at once. A failed job raises here.

        Works against RunPod (each /status reading carries every segment so far) and any endpoint of this
        contract; see the README, "Live transcripts"."""
        outcome: list[Any] = []
        flow = _flows.wait(self._state, None, None, self._client.provider, live=True)
        for segments in self._client._steps(flow, outcome):
            yield from segments
        self._streamed = outcome


class AsyncClient(_ClientBase):
    """asyncio client with the same methods as `Client` (awaitable)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._http = httpx.AsyncClient(base_url=self.base_url or "", headers=self._headers())
        self._enrolling = asyncio.Lock()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _call(self, call: _flows.Call) -> Any:
        try:
            async for attempt in AsyncRetrying(**self._retrying_kwargs(call)):
                with attempt:
                    response = await self._http.request(call.method, call.path, **self._request_args(call))
                    return check_response(response, call.job_id)
        except (httpx.TransportError, TransientStatus) as error:
            raise self._failed(error, call) from None
        raise AssertionError("unreachable: tenacity reraises")

    async def _steps(self, flow: _flows.Flow, outcome: list[Any]) -> AsyncIterator[list[Segment]]:
        result: Any = None
        error: BaseException | None = None
        while True:
            try:
                step = flow.throw(error) if error is not None else flow.send(result)
            except StopIteration as done:
                outcome.append(done.value)
                return
            result, error = None, None
            if isinstance(step, _flows.Emit):
                yield step.segments
                continue
            try:
                if isinstance(step, _flows.Sleep):
                    await asyncio.sleep(step.seconds)
                else:
                    result = await self._call(step)
            except ScribepodError as raised:
                error = raised

    async def _drive(self, flow: _flows.Flow, on_segment: SegmentCallback | None = None) -> Any:
        outcome: list[Any] = []
        async for segments in self._steps(flow, outcome):
            if on_segment is not None:
                for segment in segments:
                    on_segment(segment)
        return outcome[0]

    async def transcribe(
        self,
        source: Source,
        *,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        on_segment: SegmentCallback | None = None,
        shards: int | Literal["auto"] | None = None,
        **options: Any,
    ) -> Transcript:
        sharded = self._check_shards(shards, options, on_segment)
        options = await self._voices(options, timeout)
        if sharded:
            assert shards is not None
            return await self._transcribe_sharded(source, shards, timeout, on_progress, options)
        return await self._transcribe(source, timeout, on_progress, options, batch=False, on_segment=on_segment)

    async def enroll(self, samples: SpeakerVoices, *, timeout: float | None = None) -> list[SpeakerSample]:
        """As `Client.enroll`."""
        entries, _ = await asyncio.to_thread(split_voices, samples)
        return self._recorded(entries, await self._enrol_missing(entries, timeout))

    async def _voices(self, options: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        if options.get("speakers") is None:
            return options
        entries, _ = await asyncio.to_thread(split_voices, options["speakers"])
        self._check_before_enrolling(options, entries)
        return self._with_voiceprints(options, entries, await self._enrol_missing(entries, timeout))

    async def _enrol_missing(
        self, entries: Sequence[SpeakerSample | Recording], timeout: float | None
    ) -> dict[str, SpeakerSample]:
        known = self._known(entries)
        if not self._missing(entries, known):
            return known
        async with self._enrolling:
            known = self._known(entries)
            if missing := self._missing(entries, known):
                known.update(self._enrolled(missing, await self._enroll(missing, timeout)))
        return known

    async def _enroll(self, recordings: Sequence[Recording], timeout: float | None) -> list[SpeakerSample]:
        try:
            if self.fallback == "local_only":
                assert self._local is not None
                return await asyncio.to_thread(self._local.enroll, recordings)
            body, prepared = await asyncio.to_thread(self._enrollment_body, recordings)
            try:
                flow = _flows.run_and_wait(
                    body, self._wait_seconds(timeout), None, self.provider, sync=True, read=enrollment_of
                )
                enrollment: Enrollment = await self._drive(flow)
            finally:
                for audio in prepared:
                    await asyncio.to_thread(self._cleanup, audio)
        except JobFailed as error:
            raise self._sample_failure(error, recordings) from None
        except ScribepodError as error:
            if self._should_fall_back(error):
                assert self._local is not None
                log.warning("endpoint failed enrolling voices (%s); enrolling locally", error)
                return await asyncio.to_thread(self._local.enroll, recordings)
            raise
        return enrollment.speakers

    async def _transcribe_sharded(
        self,
        source: Source,
        shards: int | str,
        timeout: float | None,
        on_progress: ProgressCallback | None,
        options: dict[str, Any],
    ) -> Transcript:
        """As `Client`'s: the first failure, a timeout or cancelling the task cancels every shard's job (one whose
        POST /run the cancel interrupted may have been created unseen: RunPod's TTL ends it)."""
        source = await asyncio.to_thread(self._sharding, source, options)
        workers = 1
        if shards == "auto" and self.fallback != "local_only":
            try:
                workers = self._workers(await self.health())
            except ScribepodError as error:
                log.warning("could not read the endpoint's workers (%s): sending one job", error)
        with tempfile.TemporaryDirectory(prefix="scribepod-shards-") as folder:
            plan = await asyncio.to_thread(self._shard_plan, source, shards, options, workers, Path(folder))
            if plan is None:
                return await self._transcribe(source, timeout, on_progress, options, batch=False)
            pieces, clean, hint = plan
            progress = CombinedProgress(pieces, on_progress)
            submitted: list[str] = []

            async def one(index: int, piece: ShardAudio) -> Transcript:
                transcript = await self._transcribe(
                    piece.wav, timeout, progress.shard(index), clean, batch=True, on_submitted=submitted.append
                )
                progress.done(index)
                return transcript

            tasks = [asyncio.ensure_future(one(index, piece)) for index, piece in enumerate(pieces)]
            try:
                results = await asyncio.gather(*tasks)
            except BaseException:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await self._cancel_all(submitted)
                raise
        return merge(
            list(zip(pieces, results, strict=True)),
            hint,
            options.get("output_formats") or (),
            embeddings=bool(options.get("return_embeddings")),
        )

    async def _cancel_all(self, job_ids: list[str]) -> None:
        for job_id in list(job_ids):
            try:
                await self._drive(_flows.cancel(job_id))
            except ScribepodError as error:
                log.warning("could not cancel shard job %s: %s", job_id, error)

    async def _transcribe(
        self,
        source: Source,
        timeout: float | None,
        on_progress: ProgressCallback | None,
        options: dict[str, Any],
        *,
        batch: bool,
        on_segment: SegmentCallback | None = None,
        on_submitted: Callable[[str], None] | None = None,
    ) -> Transcript:
        clean = self._options(options)
        if self.fallback == "local_only":
            assert self._local is not None
            local = self._local.transcribe
            return self.usage.record(await asyncio.to_thread(local, source, clean, None, on_progress, on_segment))
        follows = on_progress is not None or on_segment is not None
        try:
            prepared = await asyncio.to_thread(self._prepare, source, clean, self._payload_limit(follows))
            try:
                flow = self._run_and_wait(
                    prepared,
                    clean,
                    timeout,
                    on_progress,
                    batch=batch,
                    live=on_segment is not None,
                    on_submitted=on_submitted,
                )
                transcript: Transcript = await self._drive(flow, on_segment)
            finally:
                await asyncio.to_thread(self._cleanup, prepared)
        except ScribepodError as error:
            if self._should_fall_back(error):
                return self.usage.record(await asyncio.to_thread(self._fall_back, source, clean, error))
            raise
        return self.usage.record(transcript)

    async def submit(self, source: Source, *, execution_timeout: float | None = None, **options: Any) -> AsyncJob:
        clean, policy = self._options(await self._voices(options, None)), self._policy(execution_timeout)
        prepared = await asyncio.to_thread(self._prepare, source, clean, RUN_PAYLOAD_LIMIT)
        state: JobState = await self._drive(_flows.submit(self._body(prepared, clean, policy)))
        return AsyncJob(self, state, prepared)

    def job(self, job_id: str) -> AsyncJob:
        return AsyncJob(self, JobState(id=job_id, status="UNKNOWN"), None)

    async def transcribe_many(
        self, sources: Sequence[Source], *, concurrency: int = 8, **options: Any
    ) -> list[Transcript | ScribepodError]:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        options = await self._voices(options, None)
        gate = asyncio.Semaphore(concurrency)

        async def one(source: Source) -> Transcript | ScribepodError:
            async with gate:
                try:
                    return await self._transcribe(source, None, None, options, batch=True)
                except ScribepodError as error:
                    return error

        return list(await asyncio.gather(*(one(source) for source in sources)))

    async def health(self) -> dict[str, Any]:
        answer: dict[str, Any] = await self._call(_flows.Call("GET", "/health", idempotent=True, what="GET /health"))
        return answer


class AsyncJob(_JobBase):
    """The asyncio twin of `Job`."""

    def __init__(self, client: AsyncClient, state: JobState, prepared: PreparedAudio | None) -> None:
        super().__init__(state, prepared)
        self._client = client

    async def refresh(self) -> JobState:
        self._state = await self._client._drive(_flows.status(self.id))
        return self._state

    async def status(self) -> str:
        return (await self.refresh()).status

    async def wait(
        self,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        on_segment: SegmentCallback | None = None,
    ) -> Transcript:
        wait = self._client._wait_seconds(timeout)
        deadline = None if wait is None else time.monotonic() + wait
        try:
            if self._streamed:
                transcript: Transcript = self._streamed[0]
            else:
                flow = _flows.wait(self._state, deadline, on_progress, self._client.provider, live=bool(on_segment))
                transcript = await self._client._drive(flow, on_segment)
        finally:
            if self._prepared is not None:
                await asyncio.to_thread(self._client._cleanup, self._prepared)
        return self._client.usage.record(transcript)

    async def cancel(self) -> str:
        self._state = await self._client._drive(_flows.cancel(self.id))
        return self._state.status

    async def stream(self) -> AsyncIterator[Segment]:
        outcome: list[Any] = []
        flow = _flows.wait(self._state, None, None, self._client.provider, live=True)
        async for segments in self._client._steps(flow, outcome):
            for segment in segments:
                yield segment
        self._streamed = outcome
