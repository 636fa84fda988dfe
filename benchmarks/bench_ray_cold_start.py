"""Cold start on Ray Serve: seconds from a request for a model at zero replicas to its image.

    python benchmarks/bench_ray_cold_start.py [--rounds 3] [--downscale-delay 5] [-- more server options]

Starts ``easel serve --ray --min-replicas 0 --max-replicas 1`` (a local Ray instance; easel-mini, the default
model, 256x256 at its default quality, b64_json) and, per round: waits until Serve has taken the model back to
zero replicas (``/v1/models`` says ``unloaded``), times one request (Serve starts a replica, which loads the
model, then runs the job), then one more at once (the replica is up: the resident time). Prints each round,
the medians, the load seconds Serve's state gave (``easel_model_load_seconds{source="replica"}``), and the
load average, which moves these figures a lot on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import httpx
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.bench_uploads import child_server

REQUEST = {"prompt": "a red circle in the top left corner", "size": "256x256", "response_format": "b64_json"}


def image_seconds(url: str) -> float:
    started = time.monotonic()
    response = httpx.post(url + "/v1/images/generations", json=REQUEST, timeout=600)
    response.raise_for_status()
    return time.monotonic() - started


def wait_for_zero(url: str, model: str, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while True:
        described = httpx.get(f"{url}/v1/models/{model}", timeout=10).json()
        if described["status"] == "unloaded" and described["replicas"]["running"] == 0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{model} never went back to zero replicas: {described}")
        time.sleep(0.5)


def replica_load_seconds(url: str) -> tuple[float, float]:
    """Serve-state replica starts: (count, sum of seconds)."""
    names = ("easel_model_load_seconds_count", "easel_model_load_seconds_sum")
    totals = dict.fromkeys(names, 0.0)
    for family in text_string_to_metric_families(httpx.get(url + "/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name in names and sample.labels.get("source") == "replica":
                totals[sample.name] += sample.value
    return totals[names[0]], totals[names[1]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--downscale-delay", type=float, default=5.0, help="Serve's delay before zero (seconds)")
    parser.add_argument("server_args", nargs="*", help="after --: more options for easel serve --ray")
    args = parser.parse_args()
    scaling = ["--ray", "--min-replicas", "0", "--max-replicas", "1"]
    delay = ["--downscale-delay-seconds", str(args.downscale_delay)]
    with child_server([*scaling, *delay, *args.server_args]) as (_, url):
        model = httpx.get(url + "/v1/models", timeout=10).json()["data"][0]["id"]
        cold, warm = [], []
        for number in range(1, args.rounds + 1):
            wait_for_zero(url, model)
            cold.append(image_seconds(url))
            warm.append(image_seconds(url))
            print(f"round {number}: from zero replicas {cold[-1]:.2f} s, resident {warm[-1]:.2f} s", flush=True)
        starts, seconds = replica_load_seconds(url)
    print(f"{model}: from zero replicas to the image {statistics.median(cold):.2f} s (median of {len(cold)})")
    each = seconds / max(starts, 1)
    print(f"  resident {statistics.median(warm):.2f} s; {starts:.0f} replica starts, {each:.2f} s each")
    print(f"  load average {' '.join(f'{value:.2f}' for value in os.getloadavg())}")


if __name__ == "__main__":
    main()
