"""How well easel-mini edits a whole image (no mask): does an edit keep the picture and take the instruction?

    python benchmarks/bench_edit_quality.py [--scenes 50] [--threads 2] [--quality medium]

Each case is a held-out single-object scene of the project's scene grammar
(``pipelines/lab/scenes.py``), rendered at the model's native size; the edit
asks for the same shape at the same place in another colour ("a blue circle in
the top left corner" for a red one), with a background colour the picture does
not have. The scorer (``pipelines/lab/scorer.py``) reads the result: *position
kept* is the object found where it was, *new colour* is it in the asked
colour, *both* is both; *shape kept* is the shape still read as the same one,
and *error* the mean absolute difference (0-255) of every pixel from the ideal
edit (the edited scene rendered: same background, size and place). Every
setting edits the same cases with the same seeds. Settings are (strength,
mix): the share of the decoder's schedule run from the noised input, and the
share of the input's own CLIP image embedding mixed into the prompt's. Edits
are made the way the server makes them: through the loaded backend, one job
per edit.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from pipelines.base import ImageJob, StagePreset, Task
from pipelines.lab.scenes import COLORS, Scene, caption, heldout_prompts, render
from pipelines.lab.scorer import score_image
from pipelines.loader import load_backend
from server.protocol.tables import WHOLE_EDIT_FIDELITY

# (strength, mix) settings measured; the rows input_fidelity uses (server.protocol.tables) are marked in the table.
SETTINGS: tuple[tuple[float, float], ...] = (
    (1.0, 0.0),
    (0.9, 0.0),
    (0.8, 0.0),
    (0.7, 0.0),
    (0.6, 0.0),
    (0.5, 0.0),
    (0.8, 0.2),
    (0.6, 0.2),
)


def fidelity_label(strength: float, mix: float) -> str:
    """Which input_fidelity uses this setting for whole-image edits, if any."""
    names = [name for name, setting in WHOLE_EDIT_FIDELITY.items() if setting == (strength, mix)]
    return " ".join(f"**{name}**" for name in names)


def edit_cases(count: int, seed: int) -> list[tuple[Scene, Scene, str]]:
    """``count`` (original, edited, instruction) triples: one object recoloured, everything else as it was."""
    rng = random.Random(seed)
    cases = []
    for _, scene in heldout_prompts(count * 4, seed):
        if len(scene.objects) != 1:
            continue
        (obj,) = scene.objects
        colour = rng.choice([c for c in COLORS if c not in (obj.color, scene.background)])
        edited = Scene((replace(obj, color=colour),), scene.background)
        cases.append((scene, edited, caption(edited, rng)))
        if len(cases) == count:
            break
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("weights/easel-mini"))
    parser.add_argument("--scenes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quality", default="medium", help="the preset the server's default quality (auto) uses")
    parser.add_argument("--only", nargs="*", help="strength,mix pairs to run, e.g. 0.8,0.0 (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    backend = load_backend("easel-mini", "kandinsky22", args.model, presets="easel-mini", device="cpu")
    side = int(backend.info.native_area**0.5)
    preset = backend.info.presets[args.quality]
    cases = edit_cases(args.scenes, args.seed)
    print(f"{len(cases)} held-out scenes, {side}x{side}, quality {args.quality} ({preset.decoder_steps} decoder steps)")
    backend.run(_job(cases[0], preset, side, 0, 1.0, 0.0))  # warm-up
    print("| strength | mix | input_fidelity | position kept | new colour | both | shape kept | error | s / edit |")
    print("|---|---|---|---|---|---|---|---|---|")
    only = {tuple(float(v) for v in pair.split(",")) for pair in args.only or []}
    for strength, mix in SETTINGS:
        if only and (strength, mix) not in only:
            continue
        kept = coloured = both = shaped = 0
        error = seconds = 0.0
        for index, case in enumerate(cases):
            began = time.perf_counter()
            (image,) = backend.run(_job(case, preset, side, args.seed * 1_000_000 + index, strength, mix))
            seconds += time.perf_counter() - began
            edited = case[1]
            (score,) = score_image(image, edited).objects
            kept += score.position
            coloured += score.color
            both += score.position and score.color
            shaped += score.shape
            ideal = np.asarray(render(edited, side), dtype=np.float32)
            error += float(np.abs(np.asarray(image, dtype=np.float32) - ideal).mean())
        n = len(cases)
        print(
            f"| {strength:.1f} | {mix:.1f} | {fidelity_label(strength, mix)} | {kept / n:.0%} | {coloured / n:.0%} "
            f"| {both / n:.0%} | {shaped / n:.0%} | {error / n:.1f} | {seconds / n:.2f} |",
            flush=True,
        )


def _job(
    case: tuple[Scene, Scene, str], preset: StagePreset, side: int, seed: int, strength: float, mix: float
) -> ImageJob:
    original, _, instruction = case
    return ImageJob(
        task=Task.EDIT, n=1, width=side, height=side, seeds=[seed], preset=preset, prompt=instruction,
        image=render(original, side), strength=strength, input_image_weight=mix,
    )  # fmt: skip


if __name__ == "__main__":
    main()
