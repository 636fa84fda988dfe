"""Ray Serve scale-out figures, all in one run: the Ray path's overhead per request, replicas' throughput.

    python benchmarks/bench_ray.py [--threads 1] [--clients 8] [--seconds 40] [--requests 20]

1. Plain ``easel serve`` (a subprocess, OMP_NUM_THREADS=threads) against
   ``easel serve --ray`` with one replica of ``threads`` CPUs: median latency of
   ``--requests`` requests each (easel-mini, 256x256, default quality,
   b64_json), one at a time, alternating between the two, and their ratio:
   the Ray path's overhead.
2. Images/s at ``--clients`` closed-loop clients on one replica and on two
   (the default model deployed twice, side by side, measured in alternating
   windows so that load drift hits both alike), and their ratio.
3. What keeping a url image costs: the shared directory the ingress writes
   (save + read of a 1024x1024 PNG) against a round trip through a Ray actor
   holding the bytes (what a store deployment would cost).

Starts its own local Ray instance (or uses ``RAY_ADDRESS``). Prints one line
per figure; the machine's load moves them, so compare figures of one run.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url + "/health/ready", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} never became ready")
        time.sleep(0.5)


def body(seed: int, model: str | None = None) -> dict:
    fields = {"prompt": "a small yellow star in the top left corner", "size": "256x256", "seed": seed,
              "response_format": "b64_json"}  # fmt: skip
    return fields if model is None else {**fields, "model": model}


def interleaved_latencies(urls: list[str], count: int) -> list[list[float]]:
    """Seconds per request for each server, asking them in turn, so that the machine's load drifts alike for all."""
    seconds: list[list[float]] = [[] for _ in urls]
    with httpx.Client(timeout=300) as client:
        for number in range(-2, count):  # two warm-up rounds
            for url, measured in zip(urls, seconds, strict=True):
                started = time.perf_counter()
                client.post(url + "/v1/images/generations", json=body(number + 2)).raise_for_status()
                if number >= 0:
                    measured.append(time.perf_counter() - started)
    return seconds


def images_answered(url: str, model: str, clients: int, seconds: float) -> int:
    """Closed loop: each client asks again as soon as it is answered; counts answers inside the window."""
    done: list[float] = []
    stop_at = time.monotonic() + seconds

    def client_loop(number: int) -> None:
        with httpx.Client(timeout=300) as client:
            seed = number * 10_000
            while time.monotonic() < stop_at:
                client.post(url + "/v1/images/generations", json=body(seed, model)).raise_for_status()
                done.append(time.monotonic())
                seed += 1

    threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(1 for t in done if t <= stop_at)


def plain_server(threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "server", "--port", str(port), "--log-level", "warning"]
    # The engine sizes its threads from the CPUs it may use, not OMP_NUM_THREADS: give it `threads` of them.
    cpus = set(sorted(os.sched_getaffinity(0))[:threads])
    process = subprocess.Popen(command, cwd=REPO, env=env, preexec_fn=lambda: os.sched_setaffinity(0, cpus))
    url = f"http://127.0.0.1:{port}"
    wait_ready(url)
    return process, url


def store_costs(ray_module, rounds: int = 30) -> tuple[float, float]:
    """Median seconds to keep and fetch back a 1024x1024 PNG: shared directory vs a Ray actor's memory."""
    import numpy as np
    from PIL import Image

    from server.serving.files import ImageStore

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (1024, 1024, 3), dtype=np.uint8)).save(buffer, "PNG")
    data = buffer.getvalue()

    @ray_module.remote(num_cpus=0)
    class BytesStore:
        def __init__(self) -> None:
            self.files: dict[str, bytes] = {}

        def save(self, name: str, payload: bytes) -> None:
            self.files[name] = payload

        def read(self, name: str) -> bytes:
            return self.files[name]

    with tempfile.TemporaryDirectory() as directory:
        store = ImageStore(Path(directory), 3600)
        on_disk = []
        for _ in range(rounds):
            started = time.perf_counter()
            found = store.read(store.save(data, "png"))
            on_disk.append(time.perf_counter() - started)
            assert found is not None and found[0] == data
    actor = BytesStore.remote()  # type: ignore[attr-defined]  # ray.remote's class gains .remote
    in_actor = []
    for number in range(rounds):
        started = time.perf_counter()
        ray_module.get(actor.save.remote(str(number), data))
        assert ray_module.get(actor.read.remote(str(number))) == data
        in_actor.append(time.perf_counter() - started)
    return statistics.median(on_disk), statistics.median(in_actor)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per replica and for plain serving")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0, help="throughput measuring time per replica count")
    parser.add_argument("--rounds", type=int, default=3, help="alternating windows per replica count")
    parser.add_argument("--requests", type=int, default=20, help="sequential requests for the latency figures")
    args = parser.parse_args()

    import ray

    from server.scaleout.launch import running_on_ray, use_easel_proxy_middleware
    from server.settings.config import Settings
    from server.settings.ray_serve import RayServeSettings
    from weights.registry import load_registry

    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; threads per replica {args.threads}")
    use_easel_proxy_middleware()
    # Three replicas of `threads` CPUs are deployed, but at most two work at once (the windows alternate).
    cpus = max(os.cpu_count() or 1, 3 * args.threads)
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 1024 * 1024)
    process, plain_url = plain_server(args.threads)
    # The default model twice: "one" on 1 replica, "two" on 2, side by side, so their windows can alternate.
    registry = load_registry()
    entry = registry.models[registry.default]
    models = tuple(replace(entry, name=name) for name in ("one", "two"))
    with tempfile.TemporaryDirectory(prefix="easel-bench-images-") as image_dir:
        scaling = RayServeSettings(replica_cpus=args.threads)
        settings = Settings(models=models, port=free_port(), image_dir=Path(image_dir), **scaling.as_options())
        with running_on_ray(settings, {"two": {"num_replicas": 2}}) as url:
            wait_ready(url)
            plain, on_ray = interleaved_latencies([plain_url, url], args.requests)
            process.terminate()
            process.wait(60)
            print(f"plain easel serve: p50 {statistics.median(plain) * 1000:.1f} ms over {len(plain)} requests")
            print(f"easel serve --ray, 1 replica: p50 {statistics.median(on_ray) * 1000:.1f} ms, alternating")
            ratio = statistics.median(on_ray) / statistics.median(plain)
            print(f"Ray path overhead per request: {ratio:.3f}x plain ({(ratio - 1) * 100:+.1f}%; target <= +10%)")
            answered = {"one": 0, "two": 0}
            window = args.seconds / args.rounds
            images_answered(url, "two", args.clients, 3.0)  # warm both replicas of "two"
            for _ in range(args.rounds):
                for model in answered:
                    answered[model] += images_answered(url, model, args.clients, window)
            per_second = {model: count / args.seconds for model, count in answered.items()}
            spread = httpx.get(url + "/health/ready", timeout=10).json()["models"]["two"]["completed_by_replica"]
            print(f"jobs per replica of the 2-replica model: {sorted(spread.values())}")
            for model, replicas in (("one", 1), ("two", 2)):
                print(f"{replicas} replica(s), {args.clients} clients: {per_second[model]:.2f} images/s")
    print(f"2 replicas / 1 replica at {args.clients} clients: {per_second['two'] / per_second['one']:.2f}x "
          f"(target >= 1.7x; {args.rounds} alternating windows of {window:.0f} s each)")  # fmt: skip
    on_disk, in_actor = store_costs(ray)
    print(f"url image, 1024x1024 PNG save + read: shared directory {on_disk * 1000:.1f} ms, "
          f"Ray actor round trip {in_actor * 1000:.1f} ms")  # fmt: skip
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    ray.shutdown()


if __name__ == "__main__":
    main()
