"""Cost tracking: the GPU a job ran on, its estimated cost from the price table, and the client's running summary."""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import pytest

from scribepod import PRICES_AS_OF, AsyncClient, Client, JobInfo, PriceTable, Transcript, Usage, estimate
from scribepod.usage import UNKNOWN
from scribepod_worker.engine import Engine, gpu_model

H100 = "NVIDIA H100 80GB HBM3"


def scribepod(*args: str) -> subprocess.CompletedProcess[str]:
    command = Path(sys.executable).with_name("scribepod")  # the venv's console script, whatever PATH says
    return subprocess.run([str(command), *args], capture_output=True, text=True, timeout=120, check=False)


def transcript(
    gpu: str | None,
    seconds: float | None,
    *,
    job_id: str | None = "j1",
    provider: Literal["runpod", "local"] = "runpod",
) -> Transcript:
    made = Transcript(text="hi", duration=60.0, gpu=gpu)
    made.job = JobInfo(id=job_id, execution_time=seconds, provider=provider)
    return made


@pytest.mark.parametrize(
    ("gpu", "gpu_class"),
    [
        (H100, "80 GB PRO"),
        ("NVIDIA H100 PCIe", "80 GB PRO"),
        ("NVIDIA H100 NVL", "80 GB PRO"),
        ("NVIDIA A100-SXM4-80GB", "80 GB"),
        ("NVIDIA A100 80GB PCIe", "80 GB"),
        ("NVIDIA A100-SXM4-40GB", UNKNOWN),  # RunPod's serverless A100s are 80 GB: no price rather than a wrong one
        ("NVIDIA L40S", "48 GB PRO"),
        ("NVIDIA L40", "48 GB PRO"),
        ("NVIDIA RTX 6000 Ada Generation", "48 GB PRO"),
        ("NVIDIA RTX A6000", "48 GB"),
        ("NVIDIA A40", "48 GB"),
        ("NVIDIA L4", "24 GB"),
        ("NVIDIA RTX A5000", "24 GB"),
        ("NVIDIA GeForce RTX 3090", "24 GB"),
        ("NVIDIA GeForce RTX 4090", "24 GB PRO"),
        ("NVIDIA RTX A4000", "16 GB"),
        ("NVIDIA RTX A4500", "16 GB"),
        ("NVIDIA RTX 4000 Ada Generation", "16 GB"),
        ("NVIDIA RTX 4000 SFF Ada Generation", "16 GB"),
        ("NVIDIA H200", "141 GB"),
        ("NVIDIA B200", "180 GB"),
        ("Quadro RTX 6000", UNKNOWN),
        ("NVIDIA GeForce GTX 1080", UNKNOWN),
        (None, None),
        ("", None),
    ],
)
def test_gpu_names_map_to_runpods_classes(gpu: str | None, gpu_class: str | None) -> None:
    assert PriceTable().classify(gpu) == gpu_class


def test_shipped_prices_and_their_date() -> None:
    table = PriceTable()
    assert table.as_of == PRICES_AS_OF and table.source == "https://docs.runpod.io/serverless/pricing"
    assert (table.price("80 GB PRO", "flex"), table.price("80 GB PRO", "active")) == (0.00116, 0.00093)
    assert (table.price("16 GB", "flex"), table.price("16 GB", "active")) == (0.00016, 0.00011)
    assert table.price(UNKNOWN, "flex") is None and table.price(None, "flex") is None


def test_a_known_gpu_job_costs_its_seconds_at_the_class_price() -> None:
    flex = estimate(transcript(H100, 10.0))
    assert flex.gpu_class == "80 GB PRO" and flex.cost_usd == pytest.approx(0.0116)
    assert estimate(transcript(H100, 10.0), tier="active").cost_usd == pytest.approx(0.0093)


@pytest.mark.parametrize(
    ("job", "cost"),
    [
        (transcript(None, 10.0), None),  # a CPU worker: no GPU class, so no price (and never a made-up one)
        (transcript("NVIDIA GeForce GTX 1080", 10.0), None),  # a GPU no class matches
        (transcript(H100, None), None),  # no executionTime reported
        (transcript(H100, 10.0, provider="local"), 0.0),  # run in this process: RunPod bills nothing
    ],
)
def test_jobs_that_cannot_be_priced(job: Transcript, cost: float | None) -> None:
    assert estimate(job).cost_usd == cost


def test_overrides_change_a_price_add_a_gpu_and_date_the_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = {
        "as_of": "2027-01-15",
        "classes": {
            "80 GB PRO": {"flex": 0.001},
            "96 GB PRO": {"flex": 0.002, "active": 0.0015, "gpus": "RTX PRO 6000", "match": ["RTX PRO 6000"]},
        },
    }
    table = PriceTable().with_overrides(overrides)
    assert table.as_of == "2027-01-15"
    assert (table.price("80 GB PRO", "flex"), table.price("80 GB PRO", "active")) == (0.001, 0.00093)
    assert table.classify("NVIDIA RTX PRO 6000 Blackwell Server Edition") == "96 GB PRO"
    assert table.classify(H100) == "80 GB PRO"
    assert (
        PriceTable().with_overrides({"classes": {"16 GB": {"active": 0.0001}}}).as_of
        == f"{PRICES_AS_OF}, with overrides"
    )

    path = tmp_path / "prices.json"
    path.write_text(json.dumps(overrides))
    monkeypatch.setenv("SCRIBEPOD_PRICES", str(path))
    monkeypatch.setenv("SCRIBEPOD_PRICE_TIER", "active")
    with Client(base_url="http://127.0.0.1:9") as client:
        assert client.usage.prices.as_of == "2027-01-15" and client.usage.tier == "active"
    with Client(base_url="http://127.0.0.1:9", prices=PriceTable(), price_tier="flex") as client:
        assert client.usage.prices.as_of == PRICES_AS_OF and client.usage.tier == "flex"  # arguments win


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"clases": {}}, "unknown key 'clases'"),
        ({"classes": {"80 GB PRO": {"flex": "cheap"}}}, "80 GB PRO flex must be USD per second"),
        ({"classes": {"80 GB PRO": {"flex": 1.16}}}, "must be USD per second"),  # per hour by mistake
        ({"classes": {"96 GB": {"flex": 0.001, "active": 0.001}}}, "needs flex, active and match"),
        ({"classes": {"96 GB": {"flex": 0.001, "active": 0.001, "match": "RTX"}}}, "match must be a list"),
    ],
)
def test_bad_overrides_name_what_is_wrong(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PriceTable().with_overrides(overrides)


def test_a_bad_price_file_or_tier_fails_at_construction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "prices.json"
    path.write_text("{not json")
    monkeypatch.setenv("SCRIBEPOD_PRICES", str(path))
    with pytest.raises(ValueError, match="SCRIBEPOD_PRICES: cannot read the price file") as raised:
        Client(base_url="http://127.0.0.1:9")
    assert str(tmp_path) not in str(raised.value)  # no internal path in a message
    monkeypatch.delenv("SCRIBEPOD_PRICES")
    monkeypatch.setenv("SCRIBEPOD_PRICE_TIER", "spot")
    with pytest.raises(ValueError, match="'flex' or 'active'"):
        Client(base_url="http://127.0.0.1:9")


def test_summary_sums_priced_jobs_and_counts_the_others() -> None:
    usage = Usage(PriceTable(), "flex")
    usage.record(transcript(H100, 10.0, job_id="gpu"))
    usage.record(transcript(H100, 10.0, job_id="gpu"))  # the same job fetched twice counts once
    usage.record(transcript(None, 5.0, job_id="cpu"))
    usage.record(transcript(None, 3.0, job_id=None, provider="local"))
    summary = usage.summary()
    assert (summary.jobs, summary.unpriced_jobs, summary.local_jobs) == (3, 1, 1)
    assert (summary.audio_seconds, summary.execution_seconds, summary.gpu_seconds) == (180.0, 15.0, 10.0)
    assert summary.estimated_cost_usd == pytest.approx(0.0116)
    # Over the priced audio only (the H100 job and the free local one): 0.0116 USD per 120 s.
    assert summary.cost_per_audio_hour_usd == pytest.approx(0.0116 * 30)
    assert summary.by_gpu_class == {"80 GB PRO": pytest.approx(0.0116)}
    line = summary.line()
    assert line.startswith("usage: 3 jobs, 180.0 s audio, 10.0 GPU s, est. $0.0116 (flex), $0.3480/audio h")
    assert "1 local at $0" in line and "1 not priced (CPU or unknown GPU)" in line and PRICES_AS_OF in line
    assert usage.reset().jobs == 3 and usage.summary().jobs == 0 and usage.summary().cost_per_audio_hour_usd is None
    usage.record(transcript(H100, 10.0, job_id="gpu"))  # after a reset the job counts again
    assert usage.summary().jobs == 1


def test_summary_is_exact_under_concurrent_recording() -> None:
    usage = Usage(PriceTable(), "flex")

    def record(thread: int) -> None:
        for index in range(500):
            usage.record(transcript(H100, 1.0, job_id=f"{thread}-{index}"))

    threads = [threading.Thread(target=record, args=(thread,)) for thread in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    summary = usage.summary()
    assert summary.jobs == 4000 and summary.gpu_seconds == 4000.0
    assert summary.estimated_cost_usd == pytest.approx(4000 * 0.00116)


class FakeCuda:
    """libcuda as ctypes loads it: answers the three calls `gpu_model` makes."""

    def __init__(self, status: int = 0) -> None:
        self.status = status

    def cuInit(self, flags: int) -> int:  # noqa: N802 (the C API's names)
        return self.status

    def cuDeviceGet(self, out: Any, ordinal: int) -> int:  # noqa: N802
        return 0

    def cuDeviceGetName(self, buffer: Any, size: int, device: Any) -> int:  # noqa: N802
        buffer.value = H100.encode()
        return 0


def test_the_worker_names_its_gpu() -> None:
    assert gpu_model(lambda name: FakeCuda()) == H100
    assert gpu_model(lambda name: FakeCuda(status=100)) is None  # CUDA_ERROR_NO_DEVICE

    def no_driver(name: str) -> ctypes.CDLL:
        raise OSError(f"{name}: cannot open shared object file")

    assert gpu_model(no_driver) is None


def test_a_real_cpu_job_is_counted_but_not_priced(endpoint: str, sample_dir: Path, engine: Engine) -> None:
    """The rule for a CPU worker: no GPU, so no class and no cost (None), never a guessed one; its seconds count."""
    assert engine.gpu is None  # this machine has no GPU
    with Client(base_url=endpoint, timeout=120) as client:
        job = client.submit(sample_dir / "sample.wav", diarize=False)
        done = job.wait(timeout=120)
        job.wait(timeout=120)  # fetched again: still one job
        summary = client.usage.summary()
    assert done.gpu is None and "gpu" in done.model_dump()  # the worker says it ran on no GPU
    assert done.job is not None and done.job.estimated_cost_usd is None
    assert done.job.gpu_class is None
    assert summary.jobs == 1 and summary.unpriced_jobs == 1
    assert summary.audio_seconds == done.duration > 20
    assert summary.execution_seconds == done.job.execution_time and summary.execution_seconds > 0
    assert summary.gpu_seconds == 0 and summary.estimated_cost_usd == 0 and summary.cost_per_audio_hour_usd is None


class _GpuEndpoint(BaseHTTPRequestHandler):
    """/run and /runsync as RunPod answers them for a job that ran 12.5 s on an H100 (done at once)."""

    job_ids = itertools.count()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        output = {"text": "hello", "duration": 90.0, "device": "cuda", "gpu": H100}
        body = {"id": f"job-{next(self.job_ids)}", "status": "COMPLETED", "output": output}
        encoded = json.dumps({**body, "delayTime": 800, "executionTime": 12500, "workerId": "w1"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(encoded)))
        self.end_headers()
        self.wfile.write(encoded)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def gpu_endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _GpuEndpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_gpu_job_is_priced_from_the_table(gpu_endpoint: str) -> None:
    with Client(base_url=gpu_endpoint) as client:
        done = client.transcribe(b"RIFF not really audio", diarize=False)
        assert done.job is not None and done.job.gpu_class == "80 GB PRO"
        assert done.job.estimated_cost_usd == pytest.approx(12.5 * 0.00116)
        summary = client.usage.summary()
    assert (summary.jobs, summary.gpu_seconds, summary.audio_seconds) == (1, 12.5, 90.0)
    assert summary.cost_per_audio_hour_usd == pytest.approx(12.5 * 0.00116 * 40)


def test_async_batches_add_up(gpu_endpoint: str) -> None:
    async def batch() -> Any:
        async with AsyncClient(base_url=gpu_endpoint, price_tier="active") as client:
            results = await client.transcribe_many([b"a", b"b", b"c"], concurrency=3, diarize=False)
            assert all(isinstance(result, Transcript) for result in results)
            return client.usage.summary()

    summary = asyncio.run(batch())
    assert summary.jobs == 3 and summary.estimated_cost_usd == pytest.approx(3 * 12.5 * 0.00093)


def test_the_cli_prints_the_summary_after_a_batch(gpu_endpoint: str, tmp_path: Path) -> None:
    inputs = []
    for name in ("a", "b"):
        inputs.append(tmp_path / f"{name}.wav")
        inputs[-1].write_bytes(b"RIFF")
    result = scribepod("--base-url", gpu_endpoint, "transcribe", *map(str, inputs), "--no-diarize")
    assert result.returncode == 0, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("usage: 2 jobs, 180.0 s audio, 25.0 GPU s, est. $0.0290 (flex), $0.5800/audio h")
    assert last.endswith(f"prices as of {PRICES_AS_OF}")
    assert result.stderr.count("usage:") == 1
