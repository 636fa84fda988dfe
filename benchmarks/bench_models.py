"""Time to first image for a cold (on disk), a warm (in CPU RAM) and a resident model; memory back after unload.

Starts ``python -m server`` as a child process with easel-mini (the default model) and a tiny
random-weight Kandinsky (:mod:`pipelines.tiny`), then, per model and for ``--rounds`` rounds:

- resident: a generation with the model loaded;
- cold: ``POST /v1/models/{id}/unload``, then a generation, which waits for the load from disk;
- warm: on a CPU there is no warm tier (the device's memory is the RAM), and the line says so; on a GPU the
  warm tier is not measured here yet.

It also prints the load seconds the server measured (``/v1/models``'s ``memory.load_seconds``) and the
server's resident memory (RSS) before and after each unload.

    python benchmarks/bench_models.py
    python benchmarks/bench_models.py --rounds 5 -- --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
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


def median(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f} s (of {', '.join(f'{v:.2f}' for v in values)})"


def measure(url: str, pid: int, model: str, rounds: int, gpu: bool) -> None:
    first_image_seconds(url, model)  # loaded, warmed up
    cold, loads, freed = [], [], []
    for _ in range(rounds):
        before = resident_bytes(pid)
        unload(url, model)
        freed.append(before - resident_bytes(pid))
        cold.append(first_image_seconds(url, model))
        loads.append(model_object(url, model)["memory"]["load_seconds"])
    # Timed after the cold rounds, on the copy loaded on demand (see "A model loaded at start" in the docs).
    resident = [first_image_seconds(url, model) for _ in range(rounds)]
    memory = model_object(url, model)["memory"]
    print(f"{model}: {memory['device_bytes'] / 1e6:.1f} MB budgeted ({memory['host_bytes'] / 1e6:.1f} MB weights)")
    print(f"  resident  {median(resident)}")
    print(f"  cold      {median(cold)}; the load alone {median(loads)}")
    print(
        f"  warm      {'not measured here' if gpu else 'n/a: on a CPU the device is the RAM, so there is no warm tier'}"
    )
    print(f"  RSS freed by an unload: {statistics.median(freed) / 1e6:.1f} MB (median)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("server_args", nargs="*", help="after --: arguments for python -m server")
    args = parser.parse_args()
    from pipelines.tiny import build_tiny_kandinsky

    with tempfile.TemporaryDirectory(prefix="easel-bench-models-") as scratch:
        tiny = build_tiny_kandinsky(Path(scratch) / "tiny")
        models = ["--model", "easel-mini", "--model", f"tiny=kandinsky22:{tiny}", "--preload", "easel-mini"]
        with child_server([*models, *args.server_args]) as (server, url):
            device = model_object(url, "easel-mini")["capabilities"]["device"]
            print(f"device: {device}; rounds: {args.rounds}")
            for model in ("easel-mini", "tiny"):
                measure(url, server.pid, model, args.rounds, device.startswith("cuda"))


if __name__ == "__main__":
    main()
