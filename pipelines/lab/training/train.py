"""``python -m pipelines.lab.training.train``: train easel-mini from scratch and save it as one Kandinsky 2.2 pipeline.

Order: tokenizer, CLIP text+image encoders, MoVQ, prior, decoder UNet; then
everything is saved with ``KandinskyV22CombinedPipeline.save_pretrained`` (safetensors)
plus ``easel.json``. Each component checkpoints into ``--workdir``; rerunning the
same command resumes the unfinished component and skips finished ones.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import random
import shlex
import shutil
import sys
import time
from pathlib import Path

# OpenMP's default busy-waiting turns every small op into a spin contest when another process
# holds a core (measured: a UNet forward went from 0.04 s to 3 s with 2 threads on 2 shared cores).
# Read once, when torch loads the OpenMP runtime, so it must be set before the import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
from diffusers import KandinskyV22CombinedPipeline
from transformers import CLIPTokenizer

from patches.huggingface_hub import go_offline

from ..scenes import caption, sample_scene
from . import components
from .budgets import BUDGETS, Budget, trained_by
from .data import build_pool
from .loop import Component, has_started, is_done, load_trained, read_done, train
from .tokenizer import build_tokenizer, write_vocab_files
from .train_clip import clip_component
from .train_decoder import decoder_component, zero_image_embedding
from .train_movq import encode_pool, movq_component, normalize_latents, prepare
from .train_prior import embed_pool_images, prior_component

log = logging.getLogger("easel.training")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipelines.lab.training.train", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("weights/easel-mini"), help="model directory to write")
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="full")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--workdir", type=Path, default=Path("runs/train"), help="checkpoints, caches and log")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: all cores)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=N",
        help="change one field of the budget, e.g. --set decoder_steps=4500 (repeatable; recorded in easel.json)",
    )
    parser.add_argument(
        "--fp16",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="store weights as float16 (halves the directory; backends load them in any dtype)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    go_offline()  # the lab's models are local folders: never ask the hub
    args = parse_args(argv)
    try:
        budget = BUDGETS[args.budget].with_overrides(args.overrides)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    _keep_freed_memory()
    device = _device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    workdir = args.workdir / args.budget if args.budget != "full" else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    _setup_logging(workdir / "train.log")
    command = "python -m pipelines.lab.training.train " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    log.info("%s | device %s, %d threads, workdir %s", command, device, torch.get_num_threads(), workdir)
    _check_workdir(workdir, args, budget)
    trainer = Trainer(budget, args.seed, device, workdir)
    trained = trainer.run()
    export(trained, args.out, fp16=args.fp16, notes=trainer.notes(command))
    log.info("wrote %s (%.1f MB)", args.out, _size_mb(args.out))
    return args.out


class Trainer:
    """Runs the components in order, each resumable, and collects what the export needs."""

    def __init__(self, budget: Budget, seed: int, device: torch.device, workdir: Path):
        self.budget, self.seed, self.device, self.workdir = budget, seed, device, workdir
        self.records: dict[str, dict] = {}
        # Seconds of the one-off computations; kept in the workdir so a resumed run still reports them.
        self._timings_path = workdir / "precompute.json"
        self.precompute_seconds: dict[str, float] = (
            json.loads(self._timings_path.read_text()) if self._timings_path.is_file() else {}
        )

    def run(self) -> dict:
        b, device = self.budget, self.device
        torch.manual_seed(self.seed)  # initial weights
        tokenizer = self._tokenizer()
        began = time.monotonic()
        pool = build_pool(b.pool_scenes, self.seed)
        self._timed("render_pool", began)
        log.info("pool: %d scenes rendered in %.1f s", len(pool), self.precompute_seconds["render_pool"])

        text = components.text_encoder(tokenizer).to(device)
        vision = components.image_encoder().to(device)
        self._run(
            clip_component(
                text,
                vision,
                tokenizer,
                pool,
                steps=b.clip_steps,
                batch_size=b.clip_batch,
                seed=self.seed,
                device=device,
            )
        )
        text.eval().requires_grad_(False)
        vision.eval().requires_grad_(False)
        image_embeds = self._cached("image_embeds", lambda: embed_pool_images(vision, pool, device))

        movq = prepare(components.movq(), device)
        self._run(
            movq_component(movq, pool, steps=b.movq_steps, batch_size=b.movq_batch, seed=self.seed, device=device)
        )
        latents = self._normalised_movq(movq, pool)

        prior = components.prior().to(device)
        prior_scheduler = components.prior_scheduler()
        prior_run = prior_component(
            prior,
            prior_scheduler,
            text,
            tokenizer,
            pool,
            image_embeds,
            steps=b.prior_steps,
            batch_size=b.prior_batch,
            seed=self.seed,
            device=device,
        )
        self._run(prior_run)

        unet = components.unet().to(device)
        decoder_run = decoder_component(
            unet,
            components.scheduler(),
            latents,
            image_embeds,
            zero_image_embedding(vision, device),
            steps=b.decoder_steps,
            batch_size=b.decoder_batch,
            seed=self.seed,
            device=device,
        )
        self._run(decoder_run)
        return {
            "tokenizer": tokenizer,
            "text": text,
            "vision": vision,
            "movq": movq,
            "prior": prior_run.ema.model,
            "unet": decoder_run.ema.model,
        }

    def notes(self, command: str) -> dict:
        total = sum(r["seconds"] for r in self.records.values()) + sum(self.precompute_seconds.values())
        return {
            "seed": self.seed,
            "budget": self.budget.as_dict(),
            "device": str(self.device),
            "threads": torch.get_num_threads(),
            "components": self.records,
            "precompute_seconds": self.precompute_seconds,
            "total_seconds": round(total, 1),
            "command": command,
        }

    def _tokenizer(self) -> CLIPTokenizer:
        folder = self.workdir / "tokenizer"
        if (folder / "tokenizer_config.json").is_file():
            return CLIPTokenizer.from_pretrained(folder)
        rng = random.Random(f"tokenizer-{self.seed}")
        captions = (caption(sample_scene(rng), rng) for _ in range(self.budget.tokenizer_captions))
        tokenizer = build_tokenizer(captions)
        tokenizer.save_pretrained(folder)
        log.info("tokenizer: %d tokens", len(tokenizer))
        return tokenizer

    def _run(self, component: Component) -> None:
        if is_done(self.workdir, component.name):
            load_trained(component, self.workdir)
            self.records[component.name] = read_done(self.workdir, component.name)
            log.info("%s: already trained, skipped", component.name)
        else:
            self.records[component.name] = train(component, self.workdir)
        for model in component.models.values():
            model.eval()

    def _cached(self, name: str, compute) -> torch.Tensor:
        path = self.workdir / f"{name}.pt"
        if path.is_file():
            return torch.load(path, weights_only=True)
        began = time.monotonic()
        value = compute()
        torch.save(value, path)
        self._timed(name, began)
        return value

    def _normalised_movq(self, movq, pool) -> torch.Tensor:
        """Latents of the pool, standardised, with the standardisation folded into ``movq``."""
        path = self.workdir / "movq" / "normalised.pt"
        if path.is_file():
            state = torch.load(path, weights_only=True)
            movq.load_state_dict(state["movq"])
            return state["latents"]
        began = time.monotonic()
        latents = normalize_latents(movq, encode_pool(movq, pool, self.device))
        torch.save({"movq": movq.state_dict(), "latents": latents}, path)
        self._timed("movq_latents", began)
        return latents

    def _timed(self, name: str, began: float) -> None:
        self.precompute_seconds[name] = round(time.monotonic() - began, 1)
        self._timings_path.write_text(json.dumps(self.precompute_seconds, indent=2) + "\n")


def export(trained: dict, out: Path, *, fp16: bool, notes: dict) -> None:
    """Save everything as one Kandinsky 2.2 combined pipeline (safetensors) plus easel.json."""
    modules = {k: trained[k] for k in ("text", "vision", "movq", "prior", "unet")}
    for module in modules.values():
        module.to(device="cpu", dtype=torch.float16 if fp16 else torch.float32, memory_format=torch.contiguous_format)
    pipeline = KandinskyV22CombinedPipeline(
        unet=modules["unet"],
        scheduler=components.scheduler(),
        movq=modules["movq"],
        prior_prior=modules["prior"],
        prior_image_encoder=modules["vision"],
        prior_text_encoder=modules["text"],
        prior_tokenizer=trained["tokenizer"],
        prior_scheduler=components.prior_scheduler(),
        prior_image_processor=components.image_processor(),
    )
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    pipeline.save_pretrained(staging, safe_serialization=True)
    write_vocab_files(trained["tokenizer"], staging / "prior_tokenizer")
    _name_processor_as_kandinsky_does(staging / "model_index.json")
    counts = {name: sum(p.numel() for p in module.parameters()) for name, module in modules.items()}
    easel = {
        "native_size": components.IMAGE_SIZE,
        "parameters": counts,
        "weights_dtype": "float16" if fp16 else "float32",
        "training": notes,
    }
    (staging / "easel.json").write_text(json.dumps(easel, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(staging, out)


def _name_processor_as_kandinsky_does(index_path: Path) -> None:
    """Record the image processor as ``CLIPImageProcessor``, as real Kandinsky 2.2 does.

    Without torchvision, transformers 5 builds its PIL variant and save_pretrained
    records that class, which transformers 4 lacks; ``CLIPImageProcessor`` loads
    everywhere (transformers 5 falls back to the PIL variant by itself).
    """
    index = json.loads(index_path.read_text())
    index["prior_image_processor"] = ["transformers", "CLIPImageProcessor"]
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available on this machine")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def _keep_freed_memory() -> None:
    """Stop glibc handing freed activations back to the OS after every step.

    By default glibc serves large tensors with fresh mmaps and trims freed heap,
    so every training step page-faults its activations in again; on small VMs
    that made steps several times slower and erratic. Linux/glibc only.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)
    libc.mallopt(m_trim_threshold, 1 << 30)


def _check_workdir(workdir: Path, args: argparse.Namespace, budget: Budget) -> None:
    """A workdir belongs to one (budget, seed): resuming with other settings would mix runs.

    The one change allowed is to the budget of components not trained yet, so
    an experiment can reuse the finished ones (say, a longer decoder on the
    same CLIP, MoVQ and prior); the stamp then records the new values.
    """
    stamp = workdir / "run.json"
    settings = {"budget": args.budget, "seed": args.seed, "budget_values": budget.as_dict()}
    if stamp.is_file():
        previous = json.loads(stamp.read_text())
        if previous != settings:
            _refuse_unless_only_untrained_components_change(workdir, previous, settings)
            log.info("%s: budget of components not trained yet changed to %s", workdir, settings["budget_values"])
    stamp.write_text(json.dumps(settings, indent=2))


def _refuse_unless_only_untrained_components_change(workdir: Path, previous: dict, settings: dict) -> None:
    refusal = f"{workdir} holds a run with {previous}; use another --workdir or delete it"
    if {k: v for k, v in previous.items() if k != "budget_values"} != {
        k: v for k, v in settings.items() if k != "budget_values"
    }:
        raise SystemExit(refusal)
    before, after = previous["budget_values"], settings["budget_values"]
    changed = [name for name in after if before.get(name) != after[name]]
    for name in changed:
        component = trained_by(name)
        if component is None or has_started(workdir, component):
            raise SystemExit(
                f"{refusal} ({name} changed, and {component or 'every component'} "
                "has started training with the old value)"
            )


def _setup_logging(path: Path) -> None:
    logger = logging.getLogger("easel.training")
    logger.setLevel(logging.INFO)
    logger.handlers.clear()
    formatter = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    for handler in (logging.StreamHandler(sys.stdout), logging.FileHandler(path)):
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    logger.propagate = False


def _size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6


if __name__ == "__main__":
    main()
