"""One stage of a real-size Kandinsky 2.2 alone:
``python -m benchmarks.real_size_stage STAGE DIR DTYPE [SIDES|none] [--as-libraries-read]``.

Loads the stage as the pipeline loader does (modules created empty and filled
once, in ``DTYPE``, converted as they are read: :mod:`patches.convert_on_read`;
``--as-libraries-read`` leaves the conversion to diffusers/transformers, to
compare), checks its weights for NaN/Inf as a model load does
(:mod:`pipelines.finite_weights`), then times its forward pass on
classifier-free guidance's batch of two: the decoder UNet at 512x512 and
768x768 (latents at 1/8), the prior once (``none``, and the other stages
in ``FOLDERS``: load and check only). Prints one
JSON line with the memory after loading (``VmHWM``, ``RssAnon``,
``RssFile``). Run by :mod:`benchmarks.bench_real_size`, which reads this
process's peak RSS.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import time
from pathlib import Path

import torch

from patches.convert_on_read import converting_to
from pipelines.device import DTYPES
from pipelines.finite_weights import check_finite_weights
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
    stage: str, model_dir: Path, dtype_name: str, sides: tuple[int, ...] = (512, 768), *, convert: bool = True
) -> dict:
    dtype = DTYPES[dtype_name]
    folder = model_dir / FOLDERS[stage]
    start = time.perf_counter()
    with converting_to(dtype) if convert else contextlib.nullcontext():
        model = _model_class(stage).from_pretrained(folder, low_cpu_mem_usage=True, local_files_only=True, dtype=dtype)
    model = model.eval()
    result: dict = {"stage": stage, "dtype": dtype_name, "converted_on_read": convert}
    result["load_seconds"] = round(time.perf_counter() - start, 1)
    result["weights_bytes"] = component_footprint(folder).memory_bytes(dtype_name)
    result["after_load"] = _memory()
    start = time.perf_counter()
    check_finite_weights(model_dir, {FOLDERS[stage]: model})
    result["finite_check_seconds"] = round(time.perf_counter() - start, 2)
    result["after_finite_check"] = _memory()
    with torch.inference_mode():
        if stage == "unet" and sides:
            embeds = {"image_embeds": torch.randn(BATCH, EMBED, dtype=dtype)}
            result["seconds_per_step"] = {
                f"{side}x{side}": _time(lambda s=side: model(_latents(s, dtype), 500, None, added_cond_kwargs=embeds))
                for side in sides
            }
        elif stage == "prior" and sides:
            inputs = {
                "hidden_states": torch.randn(BATCH, EMBED, dtype=dtype),
                "timestep": 500,
                "proj_embedding": torch.randn(BATCH, EMBED, dtype=dtype),
                "encoder_hidden_states": torch.randn(BATCH, 77, EMBED, dtype=dtype),
                "attention_mask": torch.ones(BATCH, 77, dtype=torch.bool),
            }
            result["seconds_per_step"] = {"prior": _time(lambda: model(**inputs))}
    return result


def _model_class(stage: str):  # type: ignore[no-untyped-def]
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


def _time(step) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    step()
    return round(time.perf_counter() - start, 2)


if __name__ == "__main__":
    arguments = [argument for argument in sys.argv[1:] if argument != "--as-libraries-read"]
    sides_text = arguments[3] if len(arguments) > 3 else "512,768"
    sides = () if sides_text == "none" else tuple(int(side) for side in sides_text.split(","))
    convert = "--as-libraries-read" not in sys.argv
    print(json.dumps(main(arguments[0], Path(arguments[1]), arguments[2], sides, convert=convert)))
