"""The training loop every component shares: resumable, logged, with a progress bar.

A component trains in ``workdir/<name>/``. Every minute (and at
the end) the loop writes ``checkpoint.pt``: model, EMA and optimiser states,
the step reached and the seconds spent so far. Batches are a function of
(seed, step) only, so a run resumed from a checkpoint continues exactly where
it stopped. When the last step is done the loop writes ``done.json`` and a
later run skips the component.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

log = logging.getLogger("easel.training")

CHECKPOINT_EVERY_S = 60.0


@dataclass
class Schedule:
    """Linear warm-up, then cosine decay to ``final_fraction`` of the peak learning rate."""

    peak_lr: float
    steps: int
    warmup: int = 50
    final_fraction: float = 0.1

    def lr(self, step: int) -> float:
        if step < self.warmup:
            return self.peak_lr * (step + 1) / self.warmup
        progress = (step - self.warmup) / max(1, self.steps - self.warmup)
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return self.peak_lr * (self.final_fraction + (1 - self.final_fraction) * cosine)

    @classmethod
    def warming_up_for_a_tenth(cls, peak_lr: float, steps: int) -> Schedule:
        """Every component's schedule: warm-up over a tenth of the steps, at most 100 and at least 1."""
        return cls(peak_lr=peak_lr, steps=steps, warmup=min(100, max(1, steps // 10)))


class Ema:
    """Exponential moving average of a model's weights (what ships for the diffusion models)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        # Short runs: warm the average up so early random weights do not linger.
        decay = min(self.decay, (1 + step) / (10 + step))
        for average, current in zip(self.model.parameters(), model.parameters()):
            average.lerp_(current, 1 - decay)
        for average, current in zip(self.model.buffers(), model.buffers()):
            average.copy_(current)


@dataclass
class Component:
    """One component's training: the modules it optimises and the loss of one step."""

    name: str
    models: dict[str, torch.nn.Module]
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    step_loss: Callable[[int], dict[str, torch.Tensor]]  # step -> losses; "loss" is minimised
    ema: Ema | None = None
    ema_of: str | None = None  # which entry of ``models`` the EMA follows
    max_grad_norm: float = 1.0
    log_every: int = 25
    extra: dict = field(default_factory=dict)  # figures recorded in done.json


def component_dir(workdir: Path, name: str) -> Path:
    return workdir / name


def checkpoint_path(workdir: Path, name: str) -> Path:
    return component_dir(workdir, name) / "checkpoint.pt"


def is_done(workdir: Path, name: str) -> bool:
    return (component_dir(workdir, name) / "done.json").is_file()


def has_started(workdir: Path, name: str) -> bool:
    """Finished, or interrupted with a checkpoint to resume from."""
    return is_done(workdir, name) or checkpoint_path(workdir, name).is_file()


def read_done(workdir: Path, name: str) -> dict:
    return json.loads((component_dir(workdir, name) / "done.json").read_text())


def train(component: Component, workdir: Path) -> dict:
    """Run (or resume) ``component`` to its last step; returns what done.json records."""
    folder = component_dir(workdir, component.name)
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = checkpoint_path(workdir, component.name)
    start_step, spent = 0, 0.0
    if checkpoint.is_file():
        start_step, spent = _load_checkpoint(component, checkpoint)
        log.info("%s: resuming at step %d/%d", component.name, start_step, component.schedule.steps)
    for model in component.models.values():
        model.train()
    params = [p for group in component.optimizer.param_groups for p in group["params"]]
    totals: dict[str, float] = {}
    counted = 0  # steps summed in ``totals`` since the last log line
    last_losses: dict[str, float] = {}
    began, last_save = time.monotonic(), time.monotonic()
    bar = tqdm(
        range(start_step, component.schedule.steps),
        desc=component.name,
        initial=start_step,
        total=component.schedule.steps,
        dynamic_ncols=True,
    )
    for step in bar:
        for group in component.optimizer.param_groups:
            group["lr"] = component.schedule.lr(step)
        losses = component.step_loss(step)
        component.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, component.max_grad_norm)
        component.optimizer.step()
        if component.ema is not None:
            component.ema.update(component.models[component.ema_of], step)
        for key, value in losses.items():
            totals[key] = totals.get(key, 0.0) + float(value.detach())
        counted += 1
        done_steps = step + 1
        if done_steps % component.log_every == 0 or done_steps == component.schedule.steps:
            last_losses = {key: value / counted for key, value in totals.items()}
            totals, counted = {}, 0
            bar.set_postfix({k: f"{v:.4f}" for k, v in last_losses.items()})
            log.info(
                "%s step %d/%d lr %.2e %s",
                component.name,
                done_steps,
                component.schedule.steps,
                component.schedule.lr(step),
                " ".join(f"{k} {v:.4f}" for k, v in last_losses.items()),
            )
        if time.monotonic() - last_save > CHECKPOINT_EVERY_S and done_steps < component.schedule.steps:
            _save_checkpoint(component, checkpoint, done_steps, spent + time.monotonic() - began)
            last_save = time.monotonic()
    bar.close()
    seconds = spent + time.monotonic() - began
    _save_checkpoint(component, checkpoint, component.schedule.steps, seconds)
    record = {
        "steps": component.schedule.steps,
        "seconds": round(seconds, 1),
        "final_losses": last_losses,
        **component.extra,
    }
    (folder / "done.json").write_text(json.dumps(record, indent=2))
    log.info("%s: done in %.0f s (%s)", component.name, seconds, record["final_losses"])
    return record


def load_trained(component: Component, workdir: Path) -> None:
    """Put a finished component's final weights (and EMA) into its modules."""
    _load_checkpoint(component, checkpoint_path(workdir, component.name))


def _save_checkpoint(component: Component, path: Path, step: int, seconds: float) -> None:
    state = {
        "step": step,
        "seconds": seconds,
        "models": {name: model.state_dict() for name, model in component.models.items()},
        "optimizer": component.optimizer.state_dict(),
        "ema": component.ema.model.state_dict() if component.ema is not None else None,
    }
    partial = path.with_suffix(".tmp")
    torch.save(state, partial)
    os.replace(partial, path)  # a crash mid-write leaves the previous checkpoint intact


def _load_checkpoint(component: Component, path: Path) -> tuple[int, float]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    for name, model in component.models.items():
        model.load_state_dict(state["models"][name])
    component.optimizer.load_state_dict(state["optimizer"])
    if component.ema is not None and state["ema"] is not None:
        component.ema.model.load_state_dict(state["ema"])
    return int(state["step"]), float(state["seconds"])
