"""What weight quantization and step caching cost in quality, and what they save: easel-mini's evaluator per setting.

    python benchmarks/bench_tradeoffs.py [--model weights/easel-mini] [--count 200] [--seed 0]
        [--settings none,int8,cache2,int8+cache2,cache3,cache4] [--threads 1] [--out runs/tradeoffs]

Each setting loads the model afresh in its own process (so its peak memory is
its own) with ``--quantize`` and ``--step-cache`` as the server would apply
them, then runs the lab's evaluator (:mod:`pipelines.lab.evaluate`) on the
same held-out prompts and seed as the shipped figures (docs/lab.md: 200
prompts, seed 0, quality ``medium``, 64x64). It reports accuracy on every
axis, the largest loss against ``none`` in points, seconds per image (the
evaluator's own timing of the generations), the weights' size as stored
and the process's peak RSS. Variations are left out unless ``--variations``
(they double the time). Writes ``table.md`` and ``results.json`` to ``--out``.

Settings may run in several invocations at once, each with its own ``--out``
(on a machine with cores to spare); ``--merge DIR ...`` then writes one table
of all their rows, in ``SETTINGS`` order, to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SETTINGS = ("none", "int8", "cache2", "int8+cache2", "cache3", "cache4")
AXES = (
    ("colour", "color"),
    ("shape", "shape"),
    ("position", "position"),
    ("object", "object_correct"),
    ("one-object", "single_correct"),
    ("two-object", "both_correct"),
    ("all", "all_correct"),
)
MAX_LOSS_FOR_PRESET = 1.0  # points: a setting may join a quality preset only if no axis loses more


def parse_setting(name: str) -> tuple[str, int]:
    """``none``, ``int8``, ``cacheN`` or ``int8+cacheN`` as (quantize, step_cache)."""
    quantize, step_cache = "none", 0
    for part in name.split("+"):
        if part in ("int8", "fp8"):
            quantize = part
        elif part.startswith("cache") and part[5:].isdigit() and int(part[5:]) >= 1:
            step_cache = int(part[5:])
        elif part != "none":
            raise ValueError(f"unknown setting {name!r}: use none, int8, fp8, cacheN or a '+' of them")
    return quantize, step_cache


def main(argv: list[str] | None = None) -> dict:
    args = _parser().parse_args(argv)
    if args.one:
        return _run_one(args)
    if args.merge:
        return merge(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for setting in args.settings.split(","):
        parse_setting(setting)  # refuse a typo before the first long run
    for setting in args.settings.split(","):
        command = [sys.executable, __file__, *_shared_args(args), "--one", setting]
        subprocess.run(command, check=True)
        results[setting] = json.loads((out / setting / "summary.json").read_text())
        print(f"{setting}: {_row(setting, results[setting], results.get('none'))}", flush=True)
        table = markdown_table(results, args)  # rewritten after each setting: a long run stopped early keeps its rows
        (out / "table.md").write_text(table)
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table, end="")
    return results


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="weights/easel-mini")
    parser.add_argument("--count", type=int, default=200, help="held-out prompts (the shipped figures use 200)")
    parser.add_argument("--seed", type=int, default=0, help="picks the prompts and the image seeds (shipped: 0)")
    parser.add_argument("--quality", default="medium")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadiest on a shared machine)")
    parser.add_argument("--variations", action="store_true", help="also score variations of ground-truth renders")
    parser.add_argument("--out", default="runs/tradeoffs")
    parser.add_argument("--merge", nargs="+", metavar="DIR", help="one table from these runs' results.json")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one setting in this process
    return parser


def merge(args: argparse.Namespace) -> dict:
    """The rows of several runs' ``results.json`` as one table (``none`` first: the losses are against it)."""
    found: dict[str, dict] = {}
    for directory in args.merge:
        found.update(json.loads((Path(directory) / "results.json").read_text()))
    order = [*SETTINGS, *sorted(set(found) - set(SETTINGS))]
    results = {setting: found[setting] for setting in order if setting in found}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(results, args)
    (out / "table.md").write_text(table)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table, end="")
    return results


def _shared_args(args: argparse.Namespace) -> list[str]:
    shared = ["--model", args.model, "--count", str(args.count), "--seed", str(args.seed), "--quality", args.quality]
    shared += ["--threads", str(args.threads), "--out", args.out]
    return shared + (["--variations"] if args.variations else [])


def _run_one(args: argparse.Namespace) -> dict:
    import resource

    import torch

    from pipelines.lab.evaluate import evaluate
    from pipelines.loader import load_backend
    from pipelines.optimize import backend_pipelines, pipeline_models
    from pipelines.quantize import weight_bytes
    from pipelines.speed import SpeedOptions

    torch.set_num_threads(args.threads)
    quantize, step_cache = parse_setting(args.one)
    options = SpeedOptions(quantize=quantize, step_cache=step_cache)
    backend = load_backend(
        "easel-mini", "kandinsky22", args.model, presets="easel-mini", device="cpu", optimize=options
    )
    out = Path(args.out) / args.one
    results = evaluate(
        backend, count=args.count, seed=args.seed, quality=args.quality, images_per_prompt=1, out=out,
        variations=args.variations,
    )  # fmt: skip
    summary = {
        "quantize": quantize,
        "step_cache": step_cache,
        "summaries": results["summaries"],
        "seconds_per_image": results["seconds_per_image"],
        "weight_bytes": sum(weight_bytes(model) for model in pipeline_models(backend_pipelines(backend))),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "optimizations": backend.info.optimizations,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def largest_loss(result: dict, baseline: dict | None, part: str = "model") -> float:
    """The largest drop in points on any axis against the baseline (0 for the baseline itself)."""
    if baseline is None:
        return 0.0
    drops = [
        100 * (baseline["summaries"][part][key] - result["summaries"][part][key])
        for _, key in AXES
        if baseline["summaries"][part][key] is not None and result["summaries"][part][key] is not None
    ]
    return max(0.0, *drops)


def _row(setting: str, result: dict, baseline: dict | None) -> str:
    model = result["summaries"]["model"]
    cells = [setting, *(_percent(model[key]) for _, key in AXES)]
    loss = largest_loss(result, baseline)
    cells.append(f"{loss:.1f}")
    is_baseline = baseline is None or baseline is result
    cells.append("—" if is_baseline else "yes" if loss <= MAX_LOSS_FOR_PRESET else "no")
    cells.append(f"{result['seconds_per_image']:.3f}")
    cells.append(f"{result['weight_bytes'] / 1e6:.2f}")
    cells.append(f"{result['peak_rss_bytes'] / 1e6:.0f}")
    return "| " + " | ".join(cells) + " |"


def markdown_table(results: dict[str, dict], args: argparse.Namespace) -> str:
    header = [
        "setting", *(name for name, _ in AXES), "largest loss (points)", f"loss ≤ {MAX_LOSS_FOR_PRESET:g}",
        "s/image", "weights (MB)", "peak RSS (MB)",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    baseline = results.get("none")
    lines += [_row(setting, result, baseline) for setting, result in results.items()]
    first = next(iter(results.values()))["summaries"]["model"]
    lines.append(
        f"\n{first['prompts']} held-out prompts, seed {args.seed}, quality {args.quality}, "
        f"{args.threads} CPU threads; accuracy is per axis as in docs/lab.md (objects for colour, shape, position).\n"
    )
    return "\n".join(lines)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


if __name__ == "__main__":
    main()
