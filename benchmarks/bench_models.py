"""Time to first image for a cold (on disk), a warm (in CPU RAM) and a resident model; memory back after unload.

Starts ``python -m server`` as a child process with easel-mini (the default model, loaded at start) and a tiny
random-weight Kandinsky (:mod:`pipelines.tiny`), then, per model and for ``--rounds`` rounds:

- resident, loaded at start (easel-mini only): generations on the copy the server loaded before listening;
- cold: ``POST /v1/models/{id}/unload``, then a generation, which waits for the load from disk;
- resident, loaded on demand: generations on the copy the last cold round loaded;
- warm, on CUDA only: a generation of the other model, which evicts this one to CPU RAM (the bench gives the
  server a ``--memory-budget`` that holds one model), then one of this model, which moves it back to the GPU.
  On a CPU there is no warm tier (the device's memory is the RAM), and the line says so.

Each load's seconds are the server's own (``easel_model_load_seconds`` in ``/metrics``, by source ``disk`` or
``host``); it also prints the server's resident memory (RSS) an unload frees and the load average.

    python benchmarks/bench_models.py --rounds 5
    python benchmarks/bench_models.py --rounds 5 -- --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import httpx

from benchmarks.bench_uploads import child_server, resident_bytes

REPO = Path(__file__).resolve().parents[1]
REQUEST = {"prompt": "a red circle in the top left corner", "size": "256x256", "response_format": "b64_json"}


def first_image_seconds(url: str, model: str) -> float:
    started = time.monotonic()
    response = httpx.post(url + "/v1/images/generations", json={**REQUEST, "model": model}, timeout=600)
    response.raise_for_status()
    return time.monotonic() - started


def model_object(url: str, model: str) -> dict:
    return httpx.get(f"{url}/v1/models/{model}", timeout=30).json()


def unload(url: str, model: str) -> None:
    httpx.post(f"{url}/v1/models/{model}/unload", timeout=600).raise_for_status()


def load_seconds_so_far(url: str, model: str, source: str) -> float:
    """The server's total load seconds for ``model`` from ``source`` (the histogram's sum in /metrics)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "easel_model_load_seconds_sum" and sample.labels == {"model": model, "source": source}:
                return sample.value
    return 0.0


def timed_load(url: str, model: str, source: str, generate: Callable[[], float]) -> tuple[float, float]:
    """The first image's seconds and, of them, the server's load seconds."""
    before = load_seconds_so_far(url, model, source)
    seconds = generate()
    return seconds, load_seconds_so_far(url, model, source) - before


def median(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f} s (of {', '.join(f'{v:.2f}' for v in values)})"


def measure(url: str, pid: int, model: str, other: str, rounds: int, gpu: bool) -> None:
    at_start = model_object(url, model)["status"] == "ready"  # still the copy loaded before the server listened
    first_image_seconds(url, model)  # warmed up
    resident_at_start = [first_image_seconds(url, model) for _ in range(rounds)] if at_start else []
    cold, cold_loads, freed = [], [], []
    for _ in range(rounds):
        before = resident_bytes(pid)
        unload(url, model)
        freed.append(before - resident_bytes(pid))
        seconds, load = timed_load(url, model, "disk", lambda: first_image_seconds(url, model))
        cold.append(seconds)
        cold_loads.append(load)
    resident = [first_image_seconds(url, model) for _ in range(rounds)]
    memory = model_object(url, model)["memory"]
    print(f"{model}: {memory['device_bytes'] / 1e6:.1f} MB budgeted ({memory['host_bytes'] / 1e6:.1f} MB weights)")
    if resident_at_start:
        print(f"  resident, loaded at start   {median(resident_at_start)}")
    print(f"  resident, loaded on demand  {median(resident)}")
    print(f"  cold      {median(cold)}; the load alone {median(cold_loads)}")
    print(f"  warm      {measure_warm(url, model, other, rounds) if gpu else 'n/a on a CPU: no warm tier'}")
    print(f"  RSS freed by an unload: {statistics.median(freed) / 1e6:.1f} MB (median)")
    print(f"  load average: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")


def measure_warm(url: str, model: str, other: str, rounds: int) -> str:
    """CUDA: the other model's image evicts this one to CPU RAM; this one's next image brings it back."""
    warm, loads = [], []
    for _ in range(rounds):
        first_image_seconds(url, other)
        tier = model_object(url, model)["memory"]["tier"]
        if tier != "host":
            return f"not measured: after {other}'s image {model} is in tier {tier!r}, not 'host'"
        seconds, load = timed_load(url, model, "host", lambda: first_image_seconds(url, model))
        warm.append(seconds)
        loads.append(load)
    return f"{median(warm)}; the move back alone {median(loads)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("server_args", nargs="*", help="after --: arguments for python -m server")
    args = parser.parse_args()
    from pipelines.tiny import build_tiny_kandinsky

    with tempfile.TemporaryDirectory(prefix="easel-bench-models-") as scratch:
        tiny = build_tiny_kandinsky(Path(scratch) / "tiny")
        models = ["--model", "easel-mini", "--model", f"tiny=kandinsky22:{tiny}", "--preload", "easel-mini"]
        # On a GPU, a budget that holds one of the two (each costs about 1.1 GB) makes each evict the other
        # to CPU RAM: the warm tier. Ignored on a CPU, where there is no warm tier.
        one_model = ["--memory-budget", "1.6GiB"] if any("cuda" in arg for arg in args.server_args) else []
        with child_server([*models, *one_model, *args.server_args]) as (server, url):
            device = model_object(url, "easel-mini")["capabilities"]["device"]
            print(f"device: {device}; rounds: {args.rounds}")
            for model, other in (("easel-mini", "tiny"), ("tiny", "easel-mini")):
                measure(url, server.pid, model, other, args.rounds, device.startswith("cuda"))


if __name__ == "__main__":
    main()
