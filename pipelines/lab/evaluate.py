"""Measure how well a model draws held-out scene prompts.

    python -m pipelines.lab.evaluate --model weights/easel-mini [--count 200] [--seed 0]
        [--quality medium] [--images-per-prompt 1] [--out runs/eval]

The prompts are :func:`pipelines.lab.scenes.heldout_prompts`: every one contains a
colour+shape pair or colour+shape+position triple the model never saw in
training. Each generated image is scored from its pixels
(:mod:`pipelines.lab.scorer`) against the scene its prompt describes. Two reference
rows frame the figures:

- random baseline: for each prompt, a render of an independently sampled scene
  with the same number of objects, scored against the prompt's scene (what
  ignoring the prompt earns);
- ground-truth renders: renders of the prompts' own scenes (what the scorer
  itself gets right; the ceiling).

When the model does variations, a third row splits the figure by stage:
variations of those ground-truth renders go through the image encoder and the
decoder alone, with no text and no prior, so they measure what the decoder
draws from a true image embedding (``--no-variations`` skips them).

Writes to ``--out``: ``table.md``, ``results.json`` (summaries and every
image's score), ``contact_sheet.png`` (the first images with their prompts)
and ``images/`` (every generated image). Prints the table and the seconds per
image.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..base import ImageBackend, ImageJob
from ..tasks import Task
from .scenes import Scene, heldout_prompts, render, sample_scene
from .scorer import ImageScore, score_image, summarize

SCENE_SIDE = 64
SHEET_IMAGES = 48
SHEET_COLUMNS = 8
THUMB_SIDE = 128
CELL_PADDING = 4
CAPTION_LINES = 4
LINE_HEIGHT = 12
MARK_HEIGHT = 3  # green under an image that scored all correct, red otherwise
CELL_WIDTH = THUMB_SIDE + 2 * CELL_PADDING
CELL_HEIGHT = CELL_PADDING + THUMB_SIDE + MARK_HEIGHT + CELL_PADDING + CAPTION_LINES * LINE_HEIGHT + CELL_PADDING

ROWS = (
    ("colour accuracy (objects)", "color"),
    ("shape accuracy (objects)", "shape"),
    ("position accuracy (objects)", "position"),
    ("object fully correct", "object_correct"),
    ("one-object prompts correct", "single_correct"),
    ("two-object prompts, both correct", "both_correct"),
    ("all prompts correct", "all_correct"),
)


def main(argv: list[str] | None = None) -> dict:
    args = _parser().parse_args(argv)
    from ..loader import load_backend  # imports torch and diffusers: only when a model is evaluated

    started = time.perf_counter()
    backend = load_backend(
        args.name or Path(args.model).name,
        args.family,
        args.model,
        presets=args.presets,
        device=args.device,
        dtype=args.dtype,
    )
    load_seconds = time.perf_counter() - started
    results = evaluate(
        backend,
        count=args.count,
        seed=args.seed,
        quality=args.quality,
        images_per_prompt=args.images_per_prompt,
        out=Path(args.out),
        variations=args.variations,
    )
    print((Path(args.out) / "table.md").read_text(), end="")
    print(
        f"\n{results['seconds_per_image']:.3f} s per image ({results['images']} images at "
        f"{results['width']}x{results['height']}, quality {args.quality}, {backend.info.device}); "
        f"model loaded in {load_seconds:.1f} s; wrote {args.out}"
    )
    return results


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines.lab.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model directory, e.g. weights/easel-mini")
    parser.add_argument("--name", help="name in the table (default: the directory's name)")
    parser.add_argument("--family", default="kandinsky22", choices=("kandinsky22", "karlo"))
    parser.add_argument("--presets", default="easel-mini", help="quality preset table (pipelines/presets.py)")
    parser.add_argument("--count", type=int, default=200, help="held-out prompts")
    parser.add_argument("--seed", type=int, default=0, help="picks the prompt set and the image seeds")
    parser.add_argument("--quality", default="medium")
    parser.add_argument("--images-per-prompt", type=int, default=1)
    parser.add_argument(
        "--variations",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also score variations of the ground-truth renders (decoder alone)",
    )
    parser.add_argument("--device")
    parser.add_argument("--dtype")
    parser.add_argument("--out", default="runs/eval")
    return parser


def evaluate(
    backend: ImageBackend,
    *,
    count: int,
    seed: int,
    quality: str,
    images_per_prompt: int,
    out: Path,
    variations: bool = True,
) -> dict:
    """Generate, score, write everything to ``out``; return what results.json holds."""
    if count < 1 or images_per_prompt < 1:
        raise ValueError("count and images-per-prompt must be at least 1")
    prompts = heldout_prompts(count, seed)
    scenes = [scene for _, scene in prompts]
    width, height = backend.info.native_size_for(SCENE_SIDE, SCENE_SIDE)
    preset = backend.info.presets[quality]

    images: list[list[Image.Image]] = []
    seeds: list[list[int]] = []
    jobs: list[ImageJob] = []
    generating = 0.0
    for index, (prompt, _) in enumerate(prompts):
        job_seeds = [seed * 1_000_000 + index * images_per_prompt + i for i in range(images_per_prompt)]
        job = ImageJob(
            task=Task.GENERATE, n=images_per_prompt, width=width, height=height, seeds=job_seeds, preset=preset,
            prompt=prompt,
        )  # fmt: skip
        jobs.append(job)
        started = time.perf_counter()
        images.append(backend.run(job))
        generating += time.perf_counter() - started
        seeds.append(job_seeds)

    model_scores = [[score_image(image, scene) for image in row] for row, scene in zip(images, scenes)]
    flat_scores = [score for row in model_scores for score in row]
    flat_scenes = [scene for scene in scenes for _ in range(images_per_prompt)]
    summaries = {
        "model": summarize(flat_scores, flat_scenes),
        "random_baseline": summarize(random_baseline_scores(scenes, seed), scenes),
        "ground_truth": summarize([score_image(render(scene, SCENE_SIDE), scene) for scene in scenes], scenes),
    }
    if variations and Task.VARIATION in backend.info.tasks:
        varied = [
            backend.run(replace(job, task=Task.VARIATION, prompt="", image=render(scene, SCENE_SIDE)))
            for job, scene in zip(jobs, scenes)
        ]
        summaries["variations"] = summarize(
            [score_image(image, scene) for row, scene in zip(varied, scenes) for image in row], flat_scenes
        )

    out.mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(exist_ok=True)
    records = []
    for index, ((prompt, scene), row, row_seeds, row_scores) in enumerate(zip(prompts, images, seeds, model_scores)):
        files = []
        for i, (image, image_seed, score) in enumerate(zip(row, row_seeds, row_scores)):
            name = f"images/{index:04d}_{i}.png"
            image.save(out / name)
            files.append({"file": name, "seed": image_seed, **asdict(score)})
        records.append({"prompt": prompt, "scene": asdict(scene), "images": files})

    (out / "table.md").write_text(markdown_table(backend.info.name, summaries))
    first = [(row[0], prompt, score[0]) for row, (prompt, _), score in zip(images, prompts, model_scores)]
    contact_sheet(first[:SHEET_IMAGES]).save(out / "contact_sheet.png")
    results = {
        "model": backend.info.name,
        "device": backend.info.device,
        "dtype": backend.info.dtype,
        "quality": quality,
        "preset": asdict(preset),
        "count": count,
        "seed": seed,
        "images_per_prompt": images_per_prompt,
        "images": count * images_per_prompt,
        "width": width,
        "height": height,
        "seconds_per_image": generating / (count * images_per_prompt),
        "summaries": summaries,
        "prompts": records,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def random_baseline_scores(scenes: list[Scene], seed: int) -> list[ImageScore]:
    """Each scene scored against a render of an unrelated random scene with as many objects."""
    rng = random.Random(f"random-baseline-{seed}")
    scores = []
    for scene in scenes:
        other = sample_scene(rng, two_object_prob=1.0 if len(scene.objects) == 2 else 0.0)
        scores.append(score_image(render(other, SCENE_SIDE), scene))
    return scores


def markdown_table(model_name: str, summaries: dict[str, dict]) -> str:
    columns = (
        ("model", model_name),
        ("variations", "its variations of ground-truth renders"),
        ("random_baseline", "random baseline"),
        ("ground_truth", "ground-truth renders"),
    )
    columns = tuple((key, title) for key, title in columns if key in summaries)
    lines = [
        "| metric | " + " | ".join(title for _, title in columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for label, key in ROWS:
        lines.append(f"| {label} | " + " | ".join(_percent(summaries[c][key]) for c, _ in columns) + " |")
    model = summaries["model"]
    lines.append(
        f"\n{model['prompts']} prompts ({model['single_object_prompts']} with one object, "
        f"{model['two_object_prompts']} with two), {model['objects']} objects scored for the model.\n"
    )
    return "\n".join(lines)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def contact_sheet(entries: list[tuple[Image.Image, str, ImageScore]]) -> Image.Image:
    """A grid of images upscaled to 128 px, each with its prompt wrapped underneath and a pass/fail bar."""
    if not entries:
        raise ValueError("no images for the contact sheet")
    columns = min(SHEET_COLUMNS, len(entries))
    rows = math.ceil(len(entries) / columns)
    sheet = Image.new("RGB", (columns * CELL_WIDTH, rows * CELL_HEIGHT), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for index, (image, prompt, score) in enumerate(entries):
        left = (index % columns) * CELL_WIDTH + CELL_PADDING
        top = (index // columns) * CELL_HEIGHT + CELL_PADDING
        sheet.paste(image.convert("RGB").resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.NEAREST), (left, top))
        bar_top = top + THUMB_SIDE
        mark = (40, 170, 50) if score.all_correct else (215, 25, 35)
        draw.rectangle((left, bar_top, left + THUMB_SIDE - 1, bar_top + MARK_HEIGHT - 1), fill=mark)
        text_top = bar_top + MARK_HEIGHT + CELL_PADDING
        for line_index, line in enumerate(_wrap(prompt, draw, font, THUMB_SIDE)):
            draw.text((left, text_top + line_index * LINE_HEIGHT), line, fill=(0, 0, 0), font=font)
    return sheet


def _wrap(text: str, draw: ImageDraw.ImageDraw, font, width: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels, at most CAPTION_LINES lines (the last one ellipsised)."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    if len(lines) > CAPTION_LINES:
        last = " ".join(lines[CAPTION_LINES - 1 :])
        while draw.textlength(last + "...", font=font) > width and " " in last:
            last = last.rsplit(" ", 1)[0]
        lines = lines[: CAPTION_LINES - 1] + [last + "..."]
    return lines


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (FileNotFoundError, ValueError) as error:  # a missing model or a bad option: say so, no traceback
        sys.exit(f"error: {error}")
