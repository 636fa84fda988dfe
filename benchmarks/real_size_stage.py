"""One stage of a real-size Kandinsky 2.2 alone:
``python -m benchmarks.real_size_stage STAGE DIR DTYPE [SIDES|none] [--as-libraries-read] [--quantize MODE]
[--compute float32]``.

Loads the stage as the pipeline loader does (modules created empty and filled
once, in ``DTYPE``, converted as they are read: :mod:`patches.convert_on_read`;
``--as-libraries-read`` leaves the conversion to diffusers/transformers, to
compare), checks its weights for NaN/Inf as a model load does
(:mod:`pipelines.finite_weights`), then times its forward pass on
classifier-free guidance's batch of two: the decoder UNet at 512x512 and
768x768 (latents at 1/8), the prior once (``none``, and the other stages
in ``FOLDERS``: load and check only). ``--quantize int8`` quantizes the
stage after the check, with the loader's own function
(:func:`pipelines.quantize.quantize_models`, as ``--quantize`` does when
serving), before it is timed. Prints one JSON line with the memory after
loading, checking and quantizing (``VmHWM``, ``RssAnon``, ``RssFile``) and
the weights' in-memory size (``quantize``). ``--compute float32`` keeps
bfloat16 weights in memory and computes each layer in float32, as serving
does on a CPU without bfloat16 instructions (:mod:`pipelines.compute_dtype`;
``--quantize int8`` then quantizes from float32 first, as the loader does).
Each step is timed in wall seconds and in this process's CPU seconds
(``cpu_seconds_per_step``): on one thread the latter is what the step costs
on an idle core, whatever else the machine runs. Run by
:mod:`benchmarks.bench_real_size`, which reads this process's peak RSS.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from patches.convert_on_read import converting_to
from pipelines.compute_dtype import upcast_compute
from pipelines.device import DTYPES
from pipelines.finite_weights import check_finite_weights
from pipelines.quantize import check_supported, quantize_models
from pipelines.speed import QUANTIZE_MODES
from weights.footprint import component_footprint

FOLDERS = {
    "unet": "unet",
    "prior": "prior_prior",
    "image_encoder": "prior_image_encoder",
    "text_encoder": "prior_text_encoder",
    "movq": "movq",
}
EMBED = 1280  # Kandinsky 2.2's CLIP embedding width
BATCH = 2  # conditional and unconditional


def main(
    stage: str,
    model_dir: Path,
    dtype_name: str,
    sides: tuple[int, ...] = (512, 768),
    *,
    convert: bool = True,
    quantize: str = "none",
    compute: str | None = None,
) -> dict:
    check_supported(quantize, torch.device("cpu"))  # as the server refuses fp8 here, before loading
    dtype = DTYPES[dtype_name]
    compute_dtype = DTYPES[compute] if compute else dtype  # what the inputs and the layers compute in
    folder = model_dir / FOLDERS[stage]
    start = time.perf_counter()
    with converting_to(dtype) if convert else contextlib.nullcontext():
        model = _model_class(stage).from_pretrained(folder, low_cpu_mem_usage=True, local_files_only=True, dtype=dtype)
    model = model.eval()
    result: dict = {
        "stage": stage,
        "dtype": dtype_name,
        "converted_on_read": convert,
        "threads": torch.get_num_threads(),
    }
    result["load_seconds"] = round(time.perf_counter() - start, 1)
    result["weights_bytes"] = component_footprint(folder).memory_bytes(dtype_name)
    result["after_load"] = _memory()
    start = time.perf_counter()
    check_finite_weights(model_dir, {FOLDERS[stage]: model})
    result["finite_check_seconds"] = round(time.perf_counter() - start, 2)
    result["after_finite_check"] = _memory()
    start = time.perf_counter()
    widen = compute_dtype if compute_dtype != dtype else None
    result["quantize"] = quantize_models([model], quantize, widen).as_dict()  # "none": the weights' size, untouched
    gc.collect()  # the full-precision weights quantizing replaced
    if quantize != "none":
        result["quantize_seconds"] = round(time.perf_counter() - start, 1)
        result["after_quantize"] = _memory()
    if widen is not None:
        result["compute_dtype"] = compute
        result["layers_cast"] = upcast_compute([model], dtype, compute_dtype)
        result["after_casting_hooks"] = _memory()
    dtype = compute_dtype  # the inputs
    with torch.inference_mode():
        if stage == "unet" and sides:
            embeds = {"image_embeds": torch.randn(BATCH, EMBED, dtype=dtype)}
            timed = {
                f"{side}x{side}": _time(lambda: model(_latents(side, dtype), 500, None, added_cond_kwargs=embeds))  # noqa: B023 - called at once
                for side in sides
            }
            result["seconds_per_step"] = {side: wall for side, (wall, _) in timed.items()}
            result["cpu_seconds_per_step"] = {side: cpu for side, (_, cpu) in timed.items()}
        elif stage == "prior" and sides:
            inputs = {
                "hidden_states": torch.randn(BATCH, EMBED, dtype=dtype),
                "timestep": 500,
                "proj_embedding": torch.randn(BATCH, EMBED, dtype=dtype),
                "encoder_hidden_states": torch.randn(BATCH, 77, EMBED, dtype=dtype),
                "attention_mask": torch.ones(BATCH, 77, dtype=torch.bool),
            }
            wall, cpu = _time(lambda: model(**inputs))
            result["seconds_per_step"], result["cpu_seconds_per_step"] = {"prior": wall}, {"prior": cpu}
    result["after_steps"] = _memory()
    return result


def _model_class(stage: str) -> Any:  # a diffusers or transformers model class
    from diffusers import PriorTransformer, UNet2DConditionModel, VQModel
    from transformers import CLIPTextModelWithProjection, CLIPVisionModelWithProjection

    classes = {"unet": UNet2DConditionModel, "prior": PriorTransformer, "movq": VQModel}
    classes |= {"image_encoder": CLIPVisionModelWithProjection, "text_encoder": CLIPTextModelWithProjection}
    return classes[stage]


def _memory() -> dict[str, int]:
    """This process's peak RSS so far and its resident anonymous and file-mapped memory now, in bytes."""
    text = Path("/proc/self/status").read_text()
    fields = {"peak_rss": "VmHWM", "anonymous": "RssAnon", "file_mapped": "RssFile"}
    return {key: int(re.search(rf"{name}:\s+(\d+) kB", text).group(1)) * 1024 for key, name in fields.items()}  # type: ignore[union-attr]


def _latents(side: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(BATCH, 4, side // 8, side // 8, dtype=dtype)


def _time(step: Callable[[], object]) -> tuple[float, float]:
    """The step's wall seconds and this process's CPU seconds (all threads) spent on it."""
    start, cpu = time.perf_counter(), time.process_time()
    step()
    return round(time.perf_counter() - start, 2), round(time.process_time() - cpu, 2)


def parse_arguments(argv: list[str] | None = None) -> dict:
    """The command line as :func:`main`'s arguments."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.real_size_stage", description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=list(FOLDERS))
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("dtype_name", choices=list(DTYPES))
    parser.add_argument("sides", nargs="?", default="512,768", help="comma-separated sides to time, or none")
    parser.add_argument("--as-libraries-read", dest="convert", action="store_false")
    parser.add_argument("--quantize", choices=QUANTIZE_MODES, default="none")
    parser.add_argument(  # absent unless given
        "--compute", choices=["float32"], default=argparse.SUPPRESS, help="keep DTYPE weights, compute in this"
    )
    arguments = vars(parser.parse_args(argv))
    text = arguments["sides"]
    try:
        arguments["sides"] = () if text == "none" else tuple(int(side) for side in text.split(","))
    except ValueError:
        parser.error(f"sides: comma-separated whole numbers or none, not {text!r}")
    return arguments


if __name__ == "__main__":
    print(json.dumps(main(**parse_arguments())))
