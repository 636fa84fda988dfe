"""How much of each object's attributes a model's image embedding carries, on seen and on unseen combinations.

    python -m pipelines.lab.probe_embeddings --model weights/easel-mini [--train-scenes 20000] [--steps 3000]

The decoder draws from the image embedding alone (and the prior is trained to
produce it), so an attribute the embedding does not carry cannot come out
right. The attribute probes of the CLIP training (one small MLP with a head per
attribute) learn afresh to read every object's position, colour, shape and
size off the image embeddings of train-split scenes. They are then scored on
objects of two sets they never saw, each half one-object and half two-object
scenes as in the evaluation: fresh train-split scenes (combinations the model
trained on) and held-out scenes (the evaluation's own generator; only the
held-out objects are scored, not their companions). One-object and
two-object scenes get separate columns because they fail differently: an
embedding can carry one object's shape well and still blur two objects'.
A drop from a "seen" column to its "held-out" column is the image encoder
failing to represent the unseen combinations, which caps what the decoder can
draw for them.

Prints a table; ``--out`` also writes it as JSON.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch
from transformers import CLIPVisionModelWithProjection

from patches.huggingface_hub import go_offline

from .scenes import Scene, heldout_prompts, object_is_heldout, sample_scene
from .training.data import (
    ATTRIBUTE_CLASSES,
    MAX_OBJECTS,
    ScenePool,
    build_pool,
    ordered_objects,
    pool_of,
    to_clip_pixels,
)
from .training.train_clip import AttributeProbes

EMBED_BATCH = 500
PROBE_BATCH = 512


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    go_offline()  # the lab's models are local folders: never ask the hub
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    vision = CLIPVisionModelWithProjection.from_pretrained(args.model / "prior_image_encoder").float().eval()
    train = build_pool(args.train_scenes, seed=args.seed + 1)
    rng = random.Random(args.seed + 2)
    seen = pool_of([sample_scene(rng, split="train", two_object_prob=0.5) for _ in range(args.test_scenes)])
    unseen = pool_of([scene for _, scene in heldout_prompts(args.test_scenes, args.seed)])
    embeds = {name: embed(vision, pool) for name, pool in (("train", train), ("seen", seen), ("unseen", unseen))}
    mean, std = embeds["train"].mean(0), embeds["train"].std(0).clamp(min=1e-6)
    embeds = {name: (e - mean) / std for name, e in embeds.items()}
    probes = fit_probe(embeds["train"], train.objects, steps=args.steps, seed=args.seed)
    # probe_accuracy scores only objects present, so a mask need not exclude empty slots.
    heldout_objects = heldout_mask(unseen.scenes)
    columns = {
        "seen, one-object scenes": (embeds["seen"], seen.objects, ~two_object_rows(seen)),
        "seen, two-object scenes": (embeds["seen"], seen.objects, two_object_rows(seen)),
        "held-out, one-object scenes": (embeds["unseen"], unseen.objects, heldout_objects & ~two_object_rows(unseen)),
        "held-out, two-object scenes": (embeds["unseen"], unseen.objects, heldout_objects & two_object_rows(unseen)),
    }
    results = {
        attribute: {
            column: probe_accuracy(probes, column_embeds, objects, attribute, scored)
            for column, (column_embeds, objects, scored) in columns.items()
        }
        for attribute in ATTRIBUTE_CLASSES
    }
    print(table(results, args))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return results


def two_object_rows(pool: ScenePool) -> torch.Tensor:
    """(N, MAX_OBJECTS) bool: True across the rows of two-object scenes."""
    return (pool.objects[:, 1, 0] > 0)[:, None].expand(-1, MAX_OBJECTS)


def heldout_mask(scenes: list[Scene]) -> torch.Tensor:
    """(N, MAX_OBJECTS) bool: which label slots hold a held-out object (slots follow the labels' position order)."""
    rows = []
    for scene in scenes:
        flags = [object_is_heldout(obj) for obj in ordered_objects(scene)]
        rows.append(flags + [False] * (MAX_OBJECTS - len(flags)))
    return torch.tensor(rows, dtype=torch.bool)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.lab.probe_embeddings", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model", type=Path, default=Path("weights/easel-mini"))
    parser.add_argument("--train-scenes", type=int, default=20_000, help="train-split scenes the probes learn from")
    parser.add_argument("--test-scenes", type=int, default=1000, help="scenes in each scored set")
    parser.add_argument("--steps", type=int, default=3000, help="probe training steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="also write the results here as JSON")
    return parser.parse_args(argv)


@torch.no_grad()
def embed(vision: CLIPVisionModelWithProjection, pool: ScenePool) -> torch.Tensor:
    chunks = [
        vision(to_clip_pixels(pool.images[i : i + EMBED_BATCH])).image_embeds for i in range(0, len(pool), EMBED_BATCH)
    ]
    return torch.cat(chunks)


def fit_probe(embeds: torch.Tensor, objects: torch.Tensor, *, steps: int, seed: int) -> AttributeProbes:
    """The CLIP training's attribute probes, learnt afresh from (N, D) embeddings and (N, MAX_OBJECTS, 4) labels."""
    generator = torch.Generator().manual_seed(seed)
    probes = AttributeProbes(dim=embeds.shape[1])
    optimizer = torch.optim.AdamW(probes.parameters(), lr=1e-3)
    for _ in range(steps):
        rows = torch.randint(0, len(embeds), (PROBE_BATCH,), generator=generator)
        loss = probes.loss(embeds[rows], objects[rows], tuple(ATTRIBUTE_CLASSES), None)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return probes.eval()


@torch.no_grad()
def probe_accuracy(
    probes: AttributeProbes,
    embeds: torch.Tensor,
    objects: torch.Tensor,
    attribute: str,
    scored: torch.Tensor | None = None,
) -> float:
    """Share of the scored objects (default: every object present) whose ``attribute`` the probes read right."""
    labels = objects[:, :, list(ATTRIBUTE_CLASSES).index(attribute)]
    scored = labels > 0 if scored is None else scored & (labels > 0)
    if not scored.any():
        return float("nan")
    right = (probes.logits(embeds, attribute).argmax(-1) == labels) & scored
    return int(right.sum()) / int(scored.sum())


def table(results: dict[str, dict[str, float]], args: argparse.Namespace) -> str:
    columns = list(next(iter(results.values())))
    lines = [
        f"Probes trained on {args.train_scenes} train-split image embeddings of {args.model}, "
        f"scored on the objects of {args.test_scenes} fresh seen-combination and {args.test_scenes} held-out scenes:",
        "",
        "| attribute (per object) | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    lines += [f"| {name} | " + " | ".join(f"{row[c]:.1%}" for c in columns) + " |" for name, row in results.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
