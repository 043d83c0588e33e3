"""Cost tracking: RunPod's serverless price per second by GPU class, each job's estimated cost, a running summary.

An estimate, not the bill: it prices each job's `executionTime` on the GPU the worker reports. RunPod also bills
cold starts, idle time before a worker scales down, and failed jobs (README, Cost tracking).
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from scribepod.models import Transcript

Tier = Literal["flex", "active"]
TIERS: tuple[Tier, ...] = ("flex", "active")

PRICES_AS_OF = "2026-11-24"
"""The day the shipped prices were read from PRICES_SOURCE (the page itself carries no date)."""
PRICES_SOURCE = "https://docs.runpod.io/serverless/pricing"
PRICES_ENV = "SCRIBEPOD_PRICES"
"""A JSON file of price overrides (see `PriceTable.with_overrides`)."""
TIER_ENV = "SCRIBEPOD_PRICE_TIER"
"""`flex` (the default: workers that scale to zero) or `active` (always-on workers)."""
UNKNOWN = "unknown"


@dataclass(frozen=True)
class GpuClass:
    """One row of RunPod's serverless price table: GPUs billed alike, and what they match as the driver names them.

    `name` is the label RunPod's console gives the class (its memory, PRO for the faster GPUs)."""

    name: str
    gpus: str
    flex: float
    active: float
    patterns: tuple[str, ...] = ()

    def price(self, tier: Tier) -> float:
        return self.flex if tier == "flex" else self.active

    def matches(self, gpu: str) -> bool:
        normalized = " ".join(gpu.upper().replace("-", " ").split())
        return any(re.search(pattern, normalized) for pattern in self.patterns)


# Patterns run on the driver's name upper-cased, with dashes as spaces ("NVIDIA A100-SXM4-80GB" -> "NVIDIA A100 SXM4
# 80GB"). An A100 must say 80GB: RunPod's serverless A100s are 80 GB, so a 40 GB one is priced as unknown, not wrongly.
_SHIPPED = (
    GpuClass("16 GB", "A4000, A4500, RTX 4000", 0.00016, 0.00011, (r"\bRTX A4[05]00\b", r"\bRTX 4000 (SFF )?ADA\b")),
    GpuClass("24 GB", "L4, A5000, 3090", 0.00019, 0.00013, (r"\bL4\b", r"\bRTX A5000\b", r"\bRTX 3090\b")),
    GpuClass("24 GB PRO", "4090 PRO", 0.00031, 0.00021, (r"\bRTX 4090\b",)),
    GpuClass("48 GB", "A6000, A40", 0.00034, 0.00024, (r"\bRTX A6000\b", r"\bA40\b")),
    GpuClass("48 GB PRO", "L40, L40S, 6000 Ada PRO", 0.00053, 0.00037, (r"\bL40S?\b", r"\bRTX 6000 ADA\b")),
    GpuClass("80 GB", "A100", 0.00076, 0.00060, (r"\bA100\b.*\b80GB\b",)),
    GpuClass("80 GB PRO", "H100 PRO", 0.00116, 0.00093, (r"\bH100\b",)),
    GpuClass("141 GB", "H200 PRO", 0.00155, 0.00124, (r"\bH200\b",)),
    GpuClass("180 GB", "B200", 0.00240, 0.00190, (r"\bB200\b",)),
)


@dataclass(frozen=True)
class PriceTable:
    """Price per second in USD by GPU class, and the date of those prices."""

    classes: tuple[GpuClass, ...] = _SHIPPED
    as_of: str = PRICES_AS_OF
    source: str = PRICES_SOURCE

    def classify(self, gpu: str | None) -> str | None:
        """The class a GPU model is billed as: None without a GPU (a CPU worker), UNKNOWN for a GPU no row matches."""
        if not gpu:
            return None
        for gpu_class in self.classes:
            if gpu_class.matches(gpu):
                return gpu_class.name
        return UNKNOWN

    def price(self, gpu_class: str | None, tier: Tier) -> float | None:
        """USD per second, or None for no class, UNKNOWN, or a class this table does not list."""
        for row in self.classes:
            if row.name == gpu_class:
                return row.price(tier)
        return None

    def with_overrides(self, overrides: Mapping[str, Any]) -> PriceTable:
        """This table with some prices replaced or classes added, e.g. a negotiated rate or a new GPU:

        {"as_of": "2027-01-15", "classes": {"80 GB PRO": {"flex": 0.0011, "active": 0.0009},
                                           "96 GB PRO": {"flex": 0.0017, "active": 0.0014, "match": ["RTX PRO 6000"]}}}

        A class given only some fields keeps the others; `match` lists substrings of the GPU's name (any case) and is
        tried before the shipped patterns. Without `as_of` the date says that the table was changed."""
        unknown_keys = set(overrides) - {"as_of", "source", "classes"}
        if unknown_keys:
            raise ValueError(f"price overrides: unknown key {sorted(unknown_keys)[0]!r} (as_of, source, classes)")
        rows = {row.name: row for row in self.classes}
        for name, given in dict(overrides.get("classes", {})).items():
            if not isinstance(given, Mapping) or set(given) - {"flex", "active", "gpus", "match"}:
                raise ValueError(f"price overrides: class {name!r} takes flex, active, gpus and match")
            if not isinstance(given.get("match", []), list):
                raise ValueError(f"price overrides: class {name!r}: match must be a list of names")
            prices = {tier: _price(name, tier, given[tier]) for tier in TIERS if tier in given}
            patterns = tuple(
                re.escape(" ".join(str(text).upper().replace("-", " ").split())) for text in given.get("match", ())
            )
            if name in rows:
                row = rows[name]
                rows[name] = replace(
                    row,
                    flex=prices.get("flex", row.flex),
                    active=prices.get("active", row.active),
                    gpus=str(given.get("gpus", row.gpus)),
                    patterns=patterns + row.patterns,
                )
            else:
                if set(TIERS) - set(prices) or not patterns:
                    raise ValueError(f"price overrides: new class {name!r} needs flex, active and match")
                rows[name] = GpuClass(name, str(given.get("gpus", name)), prices["flex"], prices["active"], patterns)
        # Classes with a user's `match` come first, so a user's pattern wins over a shipped one.
        ordered = sorted(rows.values(), key=lambda row: row.patterns == self._shipped_patterns(row.name))
        return PriceTable(
            classes=tuple(ordered),
            as_of=str(overrides.get("as_of", f"{self.as_of}, with overrides")),
            source=str(overrides.get("source", self.source)),
        )

    def _shipped_patterns(self, name: str) -> tuple[str, ...]:
        return next((row.patterns for row in self.classes if row.name == name), ())

    @classmethod
    def from_env(cls) -> PriceTable:
        """The shipped table, with the overrides of the JSON file that $SCRIBEPOD_PRICES names, if set."""
        path = os.environ.get(PRICES_ENV)
        if not path:
            return cls()
        try:
            overrides = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ValueError(f"{PRICES_ENV}: cannot read the price file ({type(error).__name__})") from None
        if not isinstance(overrides, dict):
            raise ValueError(f"{PRICES_ENV}: the price file must hold a JSON object")
        return cls().with_overrides(overrides)


def _price(name: str, tier: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ValueError(f"price overrides: {name} {tier} must be USD per second (0 to 1), not {value!r}")
    return float(value)


def tier_from_env() -> Tier:
    tier = os.environ.get(TIER_ENV) or "flex"
    if tier not in TIERS:
        raise ValueError(f"{TIER_ENV} must be 'flex' or 'active', not {tier!r}")
    return tier


@dataclass(frozen=True)
class JobCost:
    """One job's estimate. `cost_usd` is None when the job cannot be priced: it ran on no GPU (a CPU worker) or on
    one no class matches; a job run locally (provider "local") costs 0, RunPod bills nothing for it."""

    gpu: str | None
    gpu_class: str | None
    execution_seconds: float
    price_per_second: float | None
    cost_usd: float | None
    local: bool


def estimate(transcript: Transcript, prices: PriceTable | None = None, tier: Tier = "flex") -> JobCost:
    """Price a transcript's `job.execution_time` on the GPU its worker reported."""
    table = prices or PriceTable()
    gpu = transcript.gpu
    job = transcript.job
    seconds = (job.execution_time if job is not None else None) or 0.0
    if job is not None and job.provider == "local":
        return JobCost(gpu, None, seconds, 0.0, 0.0, local=True)
    gpu_class = table.classify(gpu)
    price = table.price(gpu_class, tier)
    cost = None if price is None or job is None or job.execution_time is None else price * job.execution_time
    return JobCost(gpu, gpu_class, seconds, price, cost, local=False)


@dataclass(frozen=True)
class UsageSummary:
    """What a client's jobs used so far. `estimated_cost_usd` sums the priced jobs only; `unpriced_jobs` counts the
    others (a CPU worker, an unknown GPU), whose seconds are in `execution_seconds` but in no cost."""

    jobs: int = 0
    local_jobs: int = 0
    unpriced_jobs: int = 0
    audio_seconds: float = 0.0
    execution_seconds: float = 0.0
    gpu_seconds: float = 0.0
    estimated_cost_usd: float = 0.0
    priced_audio_seconds: float = 0.0
    by_gpu_class: Mapping[str, float] = field(default_factory=dict)
    tier: Tier = "flex"
    prices_as_of: str = PRICES_AS_OF

    @property
    def cost_per_audio_hour_usd(self) -> float | None:
        """Estimated cost per hour of audio over the priced jobs (local ones at 0); None before any."""
        if self.priced_audio_seconds <= 0:
            return None
        return self.estimated_cost_usd * 3600 / self.priced_audio_seconds

    def line(self) -> str:
        """One line for a terminal, e.g. after a batch."""
        per_hour = self.cost_per_audio_hour_usd
        parts = [
            f"{self.jobs} job{'' if self.jobs == 1 else 's'}",
            f"{self.audio_seconds:.1f} s audio",
            f"{self.gpu_seconds:.1f} GPU s",
            f"est. ${self.estimated_cost_usd:.4f} ({self.tier})",
            f"${per_hour:.4f}/audio h" if per_hour is not None else "no priced job",
        ]
        if self.local_jobs:
            parts.append(f"{self.local_jobs} local at $0")
        if self.unpriced_jobs:
            parts.append(f"{self.unpriced_jobs} not priced (CPU or unknown GPU)")
        return "usage: " + ", ".join(parts) + f"; prices as of {self.prices_as_of}"


class Usage:
    """A client's running summary. Thread-safe: `transcribe_many`'s threads and an event loop may record at once.

    A job is counted once, however often its result is fetched (by job id)."""

    def __init__(self, prices: PriceTable, tier: Tier) -> None:
        self.prices = prices
        self.tier: Tier = tier
        self._lock = threading.Lock()
        self._summary = UsageSummary(tier=tier, prices_as_of=prices.as_of)
        self._seen: set[str] = set()

    def summary(self) -> UsageSummary:
        with self._lock:
            return self._summary

    def reset(self) -> UsageSummary:
        """Start again from zero; returns the summary up to now."""
        with self._lock:
            previous = self._summary
            self._summary = UsageSummary(tier=self.tier, prices_as_of=self.prices.as_of)
            self._seen.clear()
            return previous

    def estimate(self, transcript: Transcript) -> JobCost:
        return estimate(transcript, self.prices, self.tier)

    def record(self, transcript: Transcript) -> Transcript:
        """Add a finished job to the summary; returns the transcript with its cost on `job` (gpu_class and
        estimated_cost_usd)."""
        cost = self.estimate(transcript)
        if transcript.job is not None:
            transcript.job = transcript.job.model_copy(
                update={"gpu_class": cost.gpu_class, "estimated_cost_usd": cost.cost_usd}
            )
        job_id = transcript.job.id if transcript.job is not None else None
        with self._lock:
            if job_id is not None:
                if job_id in self._seen:
                    return transcript
                self._seen.add(job_id)
            self._summary = _add(self._summary, cost, transcript.duration)
        return transcript

    def __repr__(self) -> str:
        return self.summary().line()


def _add(summary: UsageSummary, cost: JobCost, audio_seconds: float) -> UsageSummary:
    priced = cost.cost_usd is not None
    by_class = dict(summary.by_gpu_class)
    if cost.cost_usd is not None and cost.gpu_class is not None:
        by_class[cost.gpu_class] = by_class.get(cost.gpu_class, 0.0) + cost.cost_usd
    return replace(
        summary,
        jobs=summary.jobs + 1,
        local_jobs=summary.local_jobs + cost.local,
        unpriced_jobs=summary.unpriced_jobs + (not priced),
        audio_seconds=summary.audio_seconds + audio_seconds,
        execution_seconds=summary.execution_seconds + (0.0 if cost.local else cost.execution_seconds),
        gpu_seconds=summary.gpu_seconds + (cost.execution_seconds if cost.gpu and not cost.local else 0.0),
        estimated_cost_usd=summary.estimated_cost_usd + (cost.cost_usd or 0.0),
        priced_audio_seconds=summary.priced_audio_seconds + (audio_seconds if priced else 0.0),
        by_gpu_class=by_class,
    )
