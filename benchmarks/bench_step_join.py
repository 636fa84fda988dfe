"""Step-level joining against request-level batching: measured costs, simulated Poisson arrivals.

    python benchmarks/bench_step_join.py [--model weights/easel-mini] [--jobs 4000]

The question (issue 13, item 3): would a job that joins a running batch at its
next denoising step, and leaves it when its own steps are done, get lower
latency at the same throughput than Easel's request-level batching, where a
batch runs all its steps and companions wait for the next call?

Building step-level joining means a per-sample scheduler, per-sample guidance
and a prior and decoder that run side by side, so this script answers the
question first, without it:

1. **Measured costs.** It runs one real easel-mini request, records the
   inputs of each module a request runs (text encoder, prior, decoder UNet,
   MoVQ decoder) and which decoder steps are guided, then times each module's
   forward pass at 1 to 32 batch rows on this machine (fastest of repeats).
2. **Simulated serving.** Jobs (one image each, easel-mini's ``medium``)
   arrive at random (Poisson) at a fixed rate, served by one lane on all the
   cores under each policy, with the measured cost table:
   - *request*: what the engine does: a free lane takes the waiting jobs, up to
     ``--max-batch`` images, and runs all their steps;
   - *step*: a job joins at the next step (its text encoding costs a batched
     call with the other joiners), every iteration runs one prior step for the
     jobs in the prior and one decoder step for those in the decoder (each
     job's rows: two when its step is guided), and a job leaves after its MoVQ
     decode, which leavers share;
   - *step-dec*: joiners first run their text encoding and whole prior as one
     batched call (the prior is cheap), then join the decoder batch at its
     next step; only the decoder is shared step by step.
   It prints throughput, p50 and p95 latency of both at several loads.

Both policies use the same cost table, so the comparison does not depend on
how busy the machine was while measuring; the absolute seconds do.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.base import ImageJob, Task, Ticket  # noqa: E402
from pipelines.loader import load_backend  # noqa: E402

ROWS = (1, 2, 4, 8, 16, 32)


# -- measuring ---------------------------------------------------------------------------------


@dataclass
class Captured:
    """The first forward call of each module, and the UNet's batch rows at every call."""

    calls: dict[str, tuple[tuple, dict]] = field(default_factory=dict)
    unet_rows: list[int] = field(default_factory=list)


def capture(backend: Any, job: ImageJob) -> Captured:
    modules = backend._stages
    captured = Captured()
    handles = []
    for name in ("text_encoder", "prior", "decoder", "image_decode"):

        def hook(module, args, kwargs, name=name):
            if name == "decoder":
                captured.unet_rows.append(_rows(args, kwargs))
            captured.calls.setdefault(name, (args, kwargs))

        handles.append(modules[name].register_forward_pre_hook(hook, with_kwargs=True))
    try:
        backend.run_batch([Ticket(job)])
    finally:
        for handle in handles:
            handle.remove()
    return captured


def _rows(args: tuple, kwargs: dict) -> int:
    first = next(value for value in [*args, *kwargs.values()] if isinstance(value, torch.Tensor) and value.dim())
    return first.shape[0]


def _widen(value: Any, rows0: int, rows: int) -> Any:
    """``value`` with every tensor of ``rows0`` batch rows grown (or cut) to ``rows``."""
    if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == rows0:
        repeats = -(-rows // rows0)
        return value.repeat(repeats, *([1] * (value.dim() - 1)))[:rows]
    if isinstance(value, dict):
        return {key: _widen(item, rows0, rows) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_widen(item, rows0, rows) for item in value)
    return value


def time_module(module: torch.nn.Module, call: tuple[tuple, dict], rows: int, repeats: int) -> float:
    args, kwargs = call
    rows0 = _rows(args, kwargs)
    args, kwargs = _widen(args, rows0, rows), _widen(kwargs, rows0, rows)
    seconds = []
    with torch.inference_mode():
        module(*args, **kwargs)  # warm-up
        for _ in range(repeats):
            started = time.perf_counter()
            module(*args, **kwargs)
            seconds.append(time.perf_counter() - started)
    return min(seconds)  # the machine is shared: the fastest pass is the one least disturbed


@dataclass
class Costs:
    """Seconds of one forward pass by batch rows, per module, and the steps one job runs."""

    table: dict[str, dict[int, float]]
    prior_steps: int
    decoder_guided: list[bool]  # per decoder step: two rows per job (guided) or one

    def of(self, module: str, rows: int) -> float:
        """Linear between measured row counts; beyond the last, proportional."""
        if rows == 0:
            return 0.0
        measured = self.table[module]
        below = max([r for r in measured if r <= rows], default=min(measured))
        above = min([r for r in measured if r >= rows], default=None)
        if above is None:
            return measured[below] * rows / below
        if above == below:
            return measured[below]
        share = (rows - below) / (above - below)
        return measured[below] + share * (measured[above] - measured[below])


def measure(model: Path, repeats: int) -> Costs:
    backend: Any = load_backend("easel-mini", "kandinsky22", model, presets="easel-mini", device="cpu")
    width, height = backend.info.native_size_for(256, 256)
    preset = backend.info.presets["medium"]
    job = ImageJob(task=Task.GENERATE, n=1, width=width, height=height, seeds=[0], preset=preset, prompt="a red circle")
    captured = capture(backend, job)
    rows_of = {"text_encoder": 2, "prior": 2, "decoder": 2, "image_decode": 1}  # per job, guided
    table = {}
    for name, call in captured.calls.items():
        per_job = rows_of[name]
        table[name] = {r: time_module(backend._stages[name], call, r, repeats) for r in ROWS if r >= per_job // 2}
        print(f"  {name:<13}" + "  ".join(f"{r:>2} rows {s * 1000:7.1f} ms" for r, s in table[name].items()))
    guided = [rows == 2 for rows in captured.unet_rows]
    print(f"  prior steps {preset.prior_steps}, decoder steps {len(guided)} ({sum(guided)} guided)")
    return Costs(table, preset.prior_steps, guided)


# -- simulating --------------------------------------------------------------------------------


@dataclass
class Job:
    arrived: float
    step: int = 0  # prior steps first, then decoder steps
    finished: float = 0.0


def request_level(costs: Costs, arrivals: list[float], max_batch: int) -> list[Job]:
    """A free lane takes what is waiting (up to max_batch) and runs every step of it."""
    jobs = [Job(t) for t in arrivals]
    now, waiting = 0.0, 0
    while waiting < len(jobs):
        now = max(now, jobs[waiting].arrived)
        batch = [job for job in jobs[waiting : waiting + max_batch] if job.arrived <= now]
        waiting += len(batch)
        b = len(batch)
        now += costs.of("text_encoder", 2 * b)
        now += costs.prior_steps * costs.of("prior", 2 * b)
        now += sum(costs.of("decoder", (2 if guided else 1) * b) for guided in costs.decoder_guided)
        now += costs.of("image_decode", b)
        for job in batch:
            job.finished = now
    return jobs


def joining(costs: Costs, arrivals: list[float], max_batch: int, *, prior_first: bool) -> list[Job]:
    """Jobs join at the next step (up to ``max_batch`` at once) and leave once their own steps are done.

    ``prior_first``: a joiner runs its text encoding and whole prior at once, with
    the other joiners, and only the decoder is shared step by step; otherwise
    each iteration runs one prior step and one decoder step for whoever is there.
    """
    jobs = [Job(t) for t in arrivals]
    prior = 0 if prior_first else costs.prior_steps  # the prior steps taken inside iterations
    total = prior + len(costs.decoder_guided)
    now, next_arrival = 0.0, 0
    active: list[Job] = []
    while next_arrival < len(jobs) or active:
        if not active:
            now = max(now, jobs[next_arrival].arrived)
        joiners = []
        while next_arrival < len(jobs) and jobs[next_arrival].arrived <= now and len(active) < max_batch:
            joiners.append(jobs[next_arrival])
            next_arrival += 1
        now += costs.of("text_encoder", 2 * len(joiners))
        if prior_first:
            now += costs.prior_steps * costs.of("prior", 2 * len(joiners))
        active += joiners
        in_prior = sum(job.step < prior for job in active)
        guided = [costs.decoder_guided[job.step - prior] for job in active if job.step >= prior]
        now += costs.of("prior", 2 * in_prior) + costs.of("decoder", len(guided) + sum(guided))
        for job in active:
            job.step += 1
        leavers = [job for job in active if job.step == total]
        now += costs.of("image_decode", len(leavers))
        for job in leavers:
            job.finished = now
        active = [job for job in active if job.step < total]
    return jobs


def poisson(rate: float, count: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    times, now = [], 0.0
    for _ in range(count):
        now += rng.expovariate(rate)
        times.append(now)
    return times


def summary(jobs: list[Job]) -> tuple[float, float, float]:
    latencies = sorted(job.finished - job.arrived for job in jobs)
    span = max(job.finished for job in jobs) - jobs[0].arrived
    return len(jobs) / span, latencies[len(latencies) // 2], latencies[int(0.95 * (len(latencies) - 1))]


def compare(costs: Costs, count: int, max_batch: int, loads: list[float]) -> None:
    full = request_level(costs, [0.0] * (8 * max_batch), max_batch)
    capacity = len(full) / max(job.finished for job in full)
    alone = request_level(costs, [0.0], 1)[0].finished
    print(f"\none job alone {alone:.3f} s; request-level capacity {capacity:.2f} images/s (full batches)")
    print(f"{'load':>5} {'rate/s':>7} | {'policy':<8} {'images/s':>8} {'p50 s':>7} {'p95 s':>7}")
    policies: dict[str, Callable[[Costs, list[float], int], list[Job]]] = {
        "request": request_level,
        "step": lambda c, a, m: joining(c, a, m, prior_first=False),
        "step-dec": lambda c, a, m: joining(c, a, m, prior_first=True),
    }
    for load in loads:
        rate = load * capacity
        arrivals = poisson(rate, count, seed=int(load * 1000))
        figures = {name: summary(policy(costs, arrivals, max_batch)) for name, policy in policies.items()}
        for name, (throughput, p50, p95) in figures.items():
            print(f"{load:>5.2f} {rate:>7.2f} | {name:<8} {throughput:>8.2f} {p50:>7.3f} {p95:>7.3f}")
        _, r50, r95 = figures["request"]
        for name in ("step", "step-dec"):
            _, s50, s95 = figures[name]
            print(f"{'':>15}{name}/request: p50 {s50 / r50:.2f}x, p95 {s95 / r95:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO / "weights" / "easel-mini")
    parser.add_argument("--jobs", type=int, default=4000, help="simulated arrivals per load")
    parser.add_argument("--max-batch", type=int, default=8, help="images per call (the engine's CPU default)")
    parser.add_argument("--repeats", type=int, default=15, help="timed forward passes per module and row count")
    parser.add_argument("--loads", default="0.2,0.5,0.8,0.95", help="arrival rates, as shares of capacity")
    args = parser.parse_args()
    print(f"measuring easel-mini's modules on {torch.get_num_threads()} threads (one lane, all cores):")
    costs = measure(args.model, args.repeats)
    compare(costs, args.jobs, args.max_batch, [float(x) for x in args.loads.split(",")])


if __name__ == "__main__":
    main()
