"""One stage of a real-size Kandinsky 2.2 alone: ``python -m benchmarks.real_size_stage unet|prior DIR DTYPE [SIDES]``.

Loads the stage as the pipeline loader does (modules created empty and filled
once, in ``DTYPE``), then times its forward pass on classifier-free
guidance's batch of two: the decoder UNet at 512x512 and 768x768 (latents at
1/8), the prior once. Prints one JSON line. Run by
:mod:`benchmarks.bench_real_size`, which reads this process's peak RSS.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from diffusers import PriorTransformer, UNet2DConditionModel

from pipelines.device import DTYPES
from weights.footprint import component_footprint

FOLDERS = {"unet": "unet", "prior": "prior_prior"}
EMBED = 1280  # Kandinsky 2.2's CLIP embedding width
BATCH = 2  # conditional and unconditional


def main(stage: str, model_dir: Path, dtype_name: str, sides: tuple[int, ...] = (512, 768)) -> dict:
    dtype = DTYPES[dtype_name]
    folder = model_dir / FOLDERS[stage]
    start = time.perf_counter()
    model_class = UNet2DConditionModel if stage == "unet" else PriorTransformer
    model = model_class.from_pretrained(folder, low_cpu_mem_usage=True, local_files_only=True, dtype=dtype).eval()
    result = {"stage": stage, "dtype": dtype_name, "load_seconds": round(time.perf_counter() - start, 1)}
    result["weights_bytes"] = component_footprint(folder).memory_bytes(dtype_name)
    with torch.inference_mode():
        if stage == "unet":
            embeds = {"image_embeds": torch.randn(BATCH, EMBED, dtype=dtype)}
            result["seconds_per_step"] = {
                f"{side}x{side}": _time(lambda s=side: model(_latents(s, dtype), 500, None, added_cond_kwargs=embeds))
                for side in sides
            }
        else:
            inputs = {
                "hidden_states": torch.randn(BATCH, EMBED, dtype=dtype),
                "timestep": 500,
                "proj_embedding": torch.randn(BATCH, EMBED, dtype=dtype),
                "encoder_hidden_states": torch.randn(BATCH, 77, EMBED, dtype=dtype),
                "attention_mask": torch.ones(BATCH, 77, dtype=torch.bool),
            }
            result["seconds_per_step"] = {"prior": _time(lambda: model(**inputs))}
    return result


def _latents(side: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(BATCH, 4, side // 8, side // 8, dtype=dtype)


def _time(step) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    step()
    return round(time.perf_counter() - start, 2)


if __name__ == "__main__":
    sides = tuple(int(side) for side in sys.argv[4].split(",")) if len(sys.argv) > 4 else (512, 768)
    print(json.dumps(main(sys.argv[1], Path(sys.argv[2]), sys.argv[3], sides)))
