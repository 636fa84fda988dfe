"""Kandinsky 2.2 and Karlo at their real shapes: seconds per image, UNet TFLOP/s, peak memory, each optimisation.

    python benchmarks/bench_gpu.py --out runs/bench-gpu              # real shapes, random weights, CUDA
    python benchmarks/bench_gpu.py --tiny --device cpu --out runs/x  # the same code at tiny shapes, in seconds

Builds the pipelines with random weights at the published configurations
(benchmarks/gpu_models.py; nothing is downloaded) and measures, in one run:
each optimisation of pipelines/optimize.py on top of the stock diffusers call
with the same steps (time ratio, largest pixel difference to stock, peak
memory), seconds per image at two sizes for batch 1, 4, 8 and 16 (stock and
the fastest variant), the denoising UNets' TFLOP/s and share of the bf16 peak,
float32/16/bfloat16 against float32, and what Easel adds on top (backend and
HTTP). Sections run in order of importance and stop starting once
``--budget-s`` is spent; results.json and results.md in ``--out`` are
rewritten after every row, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np
import torch

from benchmarks import gpu_measure as measure
from benchmarks.gpu_models import build_pipeline
from pipelines import optimize
from pipelines.device import choose_dtype, dtype_name
from pipelines.presets import presets_for

PROMPT = "a red fox in the snow, oil painting"
VARIANTS: dict[str, frozenset[str] | None] = {
    "stock": None,  # the diffusers pipeline as built: SDPA attention, nothing changed
    "math_attention": frozenset(),
    "channels_last": frozenset({"sdpa", "channels_last"}),
    "fused_qkv": frozenset({"sdpa", "fused_qkv"}),
    "eager_all": frozenset({"sdpa", "channels_last", "fused_qkv"}),
    "compile_all": frozenset({"sdpa", "channels_last", "fused_qkv", "compile"}),
    "cuda_graphs_all": frozenset({"sdpa", "channels_last", "fused_qkv", "compile", "cuda_graphs"}),
    "compile": frozenset({"sdpa", "compile"}),
    "max_autotune_all": frozenset({"sdpa", "channels_last", "fused_qkv", "compile", "cuda_graphs", "max_autotune"}),
}
BATCHES = [1, 4, 8, 16]
THROUGHPUT_BATCH = 8
TINY_STEPS = {"prior_steps": 2, "decoder_steps": 4, "super_res_steps": 2}
WARMUP_STEPS = 2


class Bench:
    """The run's settings, its clock and its results, written out after every row."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device(args.device)
        self.started = time.monotonic()
        self.results: dict[str, Any] = {"command": " ".join(sys.argv), "tiny": args.tiny, "rows": []}
        self.references: dict[tuple[str, str], tuple[float, np.ndarray]] = {}  # (what, family) -> (s, pixels)
        self.measured: set[tuple[str, str]] = set()  # (family, variant) with throughput and matrix done
        args.out.mkdir(parents=True, exist_ok=True)

    def time_left(self) -> float:
        return self.args.budget_s - (time.monotonic() - self.started)

    def dtype(self, family: str) -> torch.dtype:
        return choose_dtype(self.device, self.args.dtype, family)

    def sizes(self, family: str) -> tuple[int, ...]:
        if family == "karlo":
            return (64,) if self.args.tiny else (256,)  # fixed by the super-resolution UNet
        return (64, 96) if self.args.tiny else (512, 768)

    def steps(self, family: str) -> dict[str, int]:
        if self.args.tiny:
            return dict(TINY_STEPS)
        preset = presets_for(family)["medium"]
        steps = {"prior_steps": preset.prior_steps, "decoder_steps": preset.decoder_steps}
        return steps | ({"super_res_steps": preset.super_res_steps or 7} if family == "karlo" else {})

    def applicable(self, variant: str) -> bool:
        """False (and a row saying why) for a variant this run leaves out."""
        enabled = VARIANTS[variant]
        if variant == "max_autotune_all" and not self.args.autotune:
            return False
        if enabled is not None and "cuda_graphs" in enabled and self.device.type != "cuda":
            self.row(section="variants", variant=variant, skipped="CUDA graphs need a CUDA device")
            return False
        return True

    def row(self, **fields: Any) -> dict[str, Any]:
        fields["elapsed_s"] = round(time.monotonic() - self.started, 1)
        self.results["rows"].append(fields)
        print(json.dumps(fields), flush=True)
        self.save()
        return fields

    def save(self) -> None:
        (self.args.out / "results.json").write_text(json.dumps(self.results, indent=1) + "\n")
        (self.args.out / "results.md").write_text(summary(self.results))

    def guarded(self, section: str, needed_s: float, fn: Any, *args: Any) -> None:
        """Run one measurement unless the budget is spent; an error is recorded and the run goes on."""
        if self.time_left() < needed_s:
            self.row(section=section, skipped=f"budget: {self.time_left():.0f} s left, {needed_s:.0f} s needed")
            return
        try:
            fn(*args)
        except Exception as error:  # one broken optimisation must not cost the rest of the run
            self.row(section=section, error=f"{type(error).__name__}: {error}", trace=traceback.format_exc()[-2000:])
        finally:
            measure.free(self.device)


def prepared(bench: Bench, family: str, enabled: frozenset[str] | None, dtype: torch.dtype | None = None):
    pipe = build_pipeline(family, bench.args.tiny, bench.device, dtype or bench.dtype(family))
    pipe.set_progress_bar_config(disable=True)
    if enabled is not None:
        optimize.optimize_pipelines(optimize_targets(pipe), optimize.resolve(enabled, bench.device))
    return pipe


def optimize_targets(pipe: Any) -> list:
    # The combined Kandinsky pipeline holds a prior and a decoder pipeline; each owns its models.
    inner = [getattr(pipe, name) for name in ("prior_pipe", "decoder_pipe") if hasattr(pipe, name)]
    return inner or [pipe]


def generate(bench: Bench, pipe: Any, family: str, size: int, batch: int, steps: dict[str, int], seed: int = 0):
    generator = torch.Generator(bench.device).manual_seed(seed)
    common = {"prompt": PROMPT, "num_images_per_prompt": batch, "generator": generator}
    common["prior_num_inference_steps"] = steps["prior_steps"]
    common["prior_guidance_scale"] = 4.0
    with torch.inference_mode():
        if family == "kandinsky22":
            return pipe(
                **common, height=size, width=size, num_inference_steps=steps["decoder_steps"], guidance_scale=4.0
            ).images
        return pipe(
            **common,
            decoder_num_inference_steps=steps["decoder_steps"],
            super_res_num_inference_steps=steps["super_res_steps"],
            decoder_guidance_scale=8.0,
        ).images


def seconds_per_image(bench: Bench, pipe: Any, family: str, size: int, batch: int) -> tuple[float, list]:
    """Warm up with a short call of the same shapes (compiles, records CUDA graphs), then time full calls."""
    generate(bench, pipe, family, size, batch, dict.fromkeys(bench.steps(family), WARMUP_STEPS))
    repeats = bench.args.repeats if batch == 1 else 1
    seconds, images = measure.timed(
        lambda: generate(bench, pipe, family, size, batch, bench.steps(family)), bench.device, repeats
    )
    return seconds / batch, images


def variant_row(bench: Bench, family: str, name: str) -> None:
    enabled = VARIANTS[name]
    size = bench.sizes(family)[-1]
    measure.reset_peak(bench.device)
    built = time.monotonic()
    pipe = prepared(bench, family, enabled)
    per_image, images = seconds_per_image(bench, pipe, family, size, 1)
    row: dict[str, Any] = {"section": "variants", "family": family, "variant": name, "size": size, "batch": 1}
    row |= {"s_per_image": round(per_image, 4), "setup_and_warmup_s": round(time.monotonic() - built - per_image, 1)}
    row["peak_gib"] = round(measure.peak_memory_gib(bench.device), 2)
    bench.row(**row, **compared(bench, ("stock", family), name == "stock", per_image, images))


def dtype_row(bench: Bench, family: str, dtype: torch.dtype) -> None:
    if bench.device.type == "cpu" and family == "karlo" and dtype != torch.float32:
        bench.row(section="dtypes", family=family, dtype=dtype_name(dtype), skipped="Karlo has no CPU half kernels")
        return
    size = bench.sizes(family)[-1]
    per_image, images = seconds_per_image(bench, prepared(bench, family, None, dtype), family, size, 1)
    row = {"section": "dtypes", "family": family, "dtype": dtype_name(dtype), "size": size}
    row["s_per_image"] = round(per_image, 4)
    bench.row(**row, **compared(bench, ("float32", family), dtype == torch.float32, per_image, images))


def compared(bench: Bench, key: tuple[str, str], is_reference: bool, per_image: float, images: list) -> dict:
    """Keep the reference's time and pixels, or compare with them: speed ratio and pixel differences."""
    if is_reference:
        bench.references[key] = (per_image, measure.pixels(images))
        return {}
    if key not in bench.references:
        return {}
    seconds, reference = bench.references[key]
    return {f"speedup_vs_{key[0]}": round(seconds / per_image, 3)} | measure.pixel_difference(
        measure.pixels(images), reference
    )


def denoisers(pipe: Any, family: str) -> dict[str, Any]:
    if family == "kandinsky22":
        return {"unet": pipe.unet}
    return {"decoder": pipe.decoder, "super_res_first": pipe.super_res_first}


def throughput_rows(bench: Bench, family: str, name: str) -> None:
    """TFLOP/s of each denoising UNet at batch 8 (16 rows with guidance), from its recorded inputs."""
    pipe = prepared(bench, family, VARIANTS[name])
    for size in bench.sizes(family):
        recorders = {key: measure.InputRecorder(module) for key, module in denoisers(pipe, family).items()}
        for recorder in recorders.values():
            recorder.__enter__()
        try:
            generate(bench, pipe, family, size, THROUGHPUT_BATCH, dict.fromkeys(bench.steps(family), WARMUP_STEPS))
        finally:
            for recorder in recorders.values():
                recorder.__exit__()
        for key, recorder in recorders.items():
            module = denoisers(pipe, family)[key]
            flops = measure.forward_flops(module, recorder)
            seconds = measure.forward_seconds(module, recorder, bench.device, bench.args.repeats * 3)
            tflops = flops / seconds / 1e12
            peak = bench.results.get("environment", {}).get("datasheet_bf16_tflops")
            bench.row(
                section="unet_throughput",
                family=family,
                variant=name,
                model=key,
                size=size,
                images=THROUGHPUT_BATCH,
                rows=int(recorder.batch_rows()),
                tflop_per_forward=float(f"{flops / 1e12:.4g}"),
                ms_per_forward=round(seconds * 1000, 2),
                tflops=float(f"{tflops:.4g}"),
                share_of_datasheet_peak=None if not peak else round(tflops / peak, 3),
            )


def matrix_rows(bench: Bench, family: str, name: str) -> None:
    pipe = prepared(bench, family, VARIANTS[name])
    for size in bench.sizes(family):
        for batch in bench.args.batches:
            if bench.time_left() < 0:
                bench.row(section="matrix", family=family, variant=name, size=size, batch=batch, skipped="budget")
                continue
            measure.reset_peak(bench.device)
            per_image, _ = seconds_per_image(bench, pipe, family, size, batch)
            peak = round(measure.peak_memory_gib(bench.device), 2)
            fields = {"variant": name, "size": size, "batch": batch, "s_per_image": round(per_image, 4)}
            bench.row(section="matrix", family=family, **fields, peak_gib=peak)


def fastest(bench: Bench, family: str) -> str:
    """The variant with the fewest seconds per image at the larger size, batch 1, measured so far."""
    rows = [r for r in bench.results["rows"] if r.get("section") == "variants" and r.get("family") == family]
    timed = [r for r in rows if "s_per_image" in r]
    return min(timed, key=lambda r: r["s_per_image"])["variant"] if timed else "eager_all"


FASTEST = "fastest"  # in the plan: whichever variant is fastest when the step starts
K, C = "kandinsky22", "karlo"


def plan() -> list[tuple[str, float, Any, str, Any]]:
    """(section, seconds it needs, function, family, variant or dtype), most important first.

    The issue's targets come first (Kandinsky 768^2 against stock, the UNet's
    share of peak, what serving adds), then Karlo's dtype check, the batch
    matrices and the rest.
    """
    steps: list[tuple[str, float, Any, str, Any]] = []
    steps += [("variants", 20, variant_row, K, name) for name in ("stock", "eager_all")]
    steps += [("unet_throughput", 20, throughput_rows, K, name) for name in ("stock", "eager_all")]
    steps += [("dtypes", 15, dtype_row, C, dtype) for dtype in (torch.float32, torch.float16, torch.bfloat16)]
    steps += [("variants", 150, variant_row, K, name) for name in ("cuda_graphs_all", "compile_all")]
    steps += [("unet_throughput", 60, throughput_rows, K, FASTEST), ("serving", 120, serving_step, K, FASTEST)]
    steps += [("matrix", 45, matrix_rows, K, name) for name in ("stock", FASTEST)]
    steps += [("variants", 20, variant_row, C, name) for name in ("stock", "eager_all")]
    steps += [("variants", 120, variant_row, C, "cuda_graphs_all")]
    steps += [("unet_throughput", 30, throughput_rows, C, name) for name in ("stock", FASTEST)]
    steps += [("matrix", 30, matrix_rows, C, name) for name in ("stock", FASTEST)]
    steps += [("variants", 20, variant_row, fam, n) for fam in (K, C) for n in ("channels_last", "fused_qkv")]
    steps += [("variants", 20, variant_row, fam, "math_attention") for fam in (K, C)]
    steps += [("dtypes", 20, dtype_row, K, dtype) for dtype in (torch.float32, torch.float16, torch.bfloat16)]
    steps += [("variants", 150, variant_row, fam, name) for fam in (K, C) for name in ("compile", "compile_all")]
    steps += [("variants", 300, variant_row, K, "max_autotune_all")]
    return steps


def run_plan(bench: Bench) -> None:
    done: set[tuple[str, str, str]] = set()
    for section, needed_s, function, family, what in plan():
        what = fastest(bench, family) if what == FASTEST else what
        label = dtype_name(what) if isinstance(what, torch.dtype) else what
        if (section, family, label) in done or section in bench.args.skip or label in bench.args.skip:
            continue
        done.add((section, family, label))
        if section != "dtypes" and not bench.applicable(label):
            continue
        bench.guarded(section, needed_s, function, bench, family, what)


def serving_step(bench: Bench, family: str, name: str) -> None:
    from benchmarks.gpu_serving import serving_rows

    serving_rows(bench, name, VARIANTS[name], generate)


def summary(results: dict[str, Any]) -> str:
    lines = [f"# bench_gpu ({'tiny shapes' if results['tiny'] else 'real shapes'})", "", f"`{results['command']}`", ""]
    lines += ["```json", json.dumps(results.get("environment", {})), "```", ""]
    for row in results["rows"]:
        lines.append("- " + ", ".join(f"{k}={v}" for k, v in row.items() if k not in ("trace", "elapsed_s")))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the project's tiny models, at 1/8 of the real sizes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="one dtype for both families (default: Easel's choice)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-gpu"))
    parser.add_argument("--budget-s", type=float, default=float("inf"), help="start no section after this")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls at batch 1 (median)")
    parser.add_argument("--batches", type=int, nargs="+", default=BATCHES, help="images per call in the matrix")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    parser.add_argument("--compile-backend", default=None, help="torch.compile backend (default: inductor on CUDA)")
    parser.add_argument("--compile-cache-dir", type=Path, default=None)
    parser.add_argument("--autotune", action="store_true", help="also max-autotune (minutes of compiling)")
    parser.add_argument("--skip", nargs="*", default=[], help="variant or section names to leave out")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    bench = Bench(args)
    optimize.COMPILE_BACKEND = args.compile_backend or ("inductor" if bench.device.type == "cuda" else "eager")
    environment = measure.device_description(bench.device) | {"compile_backend": optimize.COMPILE_BACKEND}
    environment["steps"] = {family: bench.steps(family) for family in ("kandinsky22", "karlo")}
    if bench.device.type == "cuda":
        environment["matmul_bf16_tflops_measured"] = round(measure.matmul_tflops(bench.device, torch.bfloat16), 1)
    bench.results["environment"] = environment
    optimize.use_compile_cache(args.compile_cache_dir)
    run_plan(bench)
    bench.save()
    print(summary(bench.results))
    return bench.results


if __name__ == "__main__":
    main()
