"""Model directories at the real published size, with random weights, written one module at a time.

Kandinsky 2.2 and Karlo at their real shapes (:mod:`benchmarks.gpu_models`),
in either of the layouts a user meets:

* ``"hub-2023"``: what the published repositories hold: ``.bin`` weights,
  float32 except the CLIP image encoder (float16), slow tokenizer files, the
  2023 ``model_index.json`` names, no ``easel.json``
  (:func:`tests.legacy_layout.to_legacy_layout`);
* ``"safetensors"``: today's ``save_pretrained`` layout, in a chosen dtype.

Each module is created on the meta device, given memory in its stored dtype,
filled with random values and written, so writing never holds more than one
module. ``sparse=True`` writes safetensors files whose headers declare the
real shapes but whose data is a hole: the real size on paper, no disk and no
time, for tests of what Easel does before it loads (its memory check).
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import struct
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from benchmarks.gpu_models import real_kandinsky_models, real_karlo_models
from pipelines.tiny import build_tiny_kandinsky, build_tiny_karlo
from tests.legacy_layout import to_legacy_layout

# Each real module's folder in the directory the backends load.
FOLDERS = {
    "kandinsky22": {
        "text_encoder": "prior_text_encoder",
        "image_encoder": "prior_image_encoder",
        "prior": "prior_prior",
        "unet": "unet",
        "movq": "movq",
    },
    "karlo": {name: name for name in ("text_encoder", "prior", "decoder", "super_res_first", "super_res_last")}
    | {"text_proj": "text_proj", "image_encoder": "image_encoder"},
}
# Karlo with its image-variation encoder (CLIP ViT-L/14's vision tower): 3.73 B parameters in all.
KARLO_PARAMETERS = 3.73e9
IMAGE_ENCODERS = ("image_encoder",)
CLIP_IMAGE_SIZE = 224
EOS_TOKEN_ID = 49407  # CLIP's end-of-text id
_SAFETENSORS_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def meta_modules(family: str) -> dict[str, torch.nn.Module]:
    """The family's real modules on the meta device: shapes and configs, no memory."""
    with torch.device("meta"):
        if family == "kandinsky22":
            return real_kandinsky_models(EOS_TOKEN_ID)
        return real_karlo_models(EOS_TOKEN_ID) | {"image_encoder": clip_vision_large()}


def clip_vision_large() -> CLIPVisionModelWithProjection:
    """CLIP ViT-L/14's vision tower with its 768-wide projection: Karlo's image-variation encoder."""
    config = CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        projection_dim=768,
        patch_size=14,
        image_size=CLIP_IMAGE_SIZE,
        hidden_act="quick_gelu",
    )
    return CLIPVisionModelWithProjection(config)


def write_real_model(
    family: str, target: Path, *, layout: str = "safetensors", dtype: torch.dtype = torch.float32, sparse: bool = False
) -> Path:
    """Write the family's real-size model to ``target`` in ``layout`` ("safetensors" or "hub-2023")."""
    if target.exists():
        shutil.rmtree(target)
    # The tiny model gives the parts without weights (tokenizer, schedulers, processor, index); the real modules
    # replace its weight folders.
    (build_tiny_kandinsky if family == "kandinsky22" else build_tiny_karlo)(target)
    modules = meta_modules(family)
    for name in list(modules):
        module = modules.pop(name)  # nn.Module.to works in place: drop every reference once written
        folder = target / FOLDERS[family][name]
        shutil.rmtree(folder)
        stored = dtype
        if layout == "hub-2023":  # float32, except the image encoder, as published
            stored = torch.float16 if name in IMAGE_ENCODERS else torch.float32
        write_module(module, folder, stored, bin_format=layout == "hub-2023", sparse=sparse)
        del module
        gc.collect()
    processor = "prior_image_processor" if family == "kandinsky22" else "feature_extractor"
    _real_image_processor(target / processor / "preprocessor_config.json")
    (target / "easel.json").write_text(json.dumps({"native_size": 512}) + "\n")
    if layout == "hub-2023":
        to_legacy_layout(target)
    return target


def write_module(module: torch.nn.Module, folder: Path, dtype: torch.dtype, *, bin_format: bool, sparse: bool) -> None:
    folder.mkdir(parents=True)
    transformers_module = hasattr(module, "config") and hasattr(module.config, "to_json_string")
    if transformers_module:
        module.config.save_pretrained(folder)
    else:
        module.save_config(folder)
    stem = "model" if transformers_module else "diffusion_pytorch_model"
    if sparse:
        shapes = {name: (tuple(t.shape), dtype) for name, t in module.state_dict().items()}
        write_sparse_safetensors(shapes, folder / f"{stem}.safetensors")
        return
    module = module.to(dtype).to_empty(device="cpu")
    state = _random_state(module)
    if bin_format:  # the 2023 names: pytorch_model.bin for transformers, diffusion_pytorch_model.bin for diffusers
        torch.save(state, folder / ("pytorch_model.bin" if stem == "model" else f"{stem}.bin"))
    else:
        save_file(state, folder / f"{stem}.safetensors")


def _random_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Random weights with a plausible scale: norms at one, biases at zero, the rest small."""
    generator = torch.Generator().manual_seed(0)
    state = module.state_dict()
    with torch.no_grad():
        for name, tensor in state.items():
            if "norm" in name and name.endswith("weight") or name.endswith("clip_std"):
                tensor.fill_(1.0)
            elif name.endswith("bias") or name.endswith("clip_mean"):
                tensor.zero_()
            else:
                tensor.normal_(0.0, 0.02, generator=generator)
    return {name: tensor.contiguous() for name, tensor in state.items()}


def write_sparse_safetensors(shapes: dict[str, tuple[tuple[int, ...], torch.dtype]], path: Path) -> None:
    """A safetensors file whose header declares ``shapes`` and whose data is a hole (no disk is used)."""
    header: dict[str, object] = {}
    offset = 0
    for name, (shape, dtype) in shapes.items():
        size = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
        header[name] = {
            "dtype": _SAFETENSORS_NAMES[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)  # the format pads the header to 8 bytes
    with path.open("wb") as file:
        file.write(struct.pack("<Q", len(encoded)) + encoded)
    os.truncate(path, 8 + len(encoded) + offset)


def _real_image_processor(path: Path) -> None:
    config = json.loads(path.read_text())
    config["crop_size"] = {"height": CLIP_IMAGE_SIZE, "width": CLIP_IMAGE_SIZE}
    config["size"] = {"shortest_edge": CLIP_IMAGE_SIZE}
    path.write_text(json.dumps(config, indent=2) + "\n")
