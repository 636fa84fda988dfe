"""Rewrite a model directory into the hub's 2022-23 layout, the one the published repositories still hold.

Kandinsky 2.2's and Karlo's repositories predate safetensors and today's
``save_pretrained``. What differs, and what :func:`to_legacy_layout` makes of
a tiny model from :mod:`pipelines.tiny` (or one hub repository's folder):

* weights as pickled torch state dicts only (``diffusion_pytorch_model.bin``,
  ``pytorch_model.bin``; shards and their index renamed to match), no
  safetensors;
* the CLIP image encoder stored in float16 (its ``config.json`` says so too);
* the slow tokenizer's files only: ``vocab.json`` and ``merges.txt``, no
  ``tokenizer.json``;
* ``model_index.json`` naming the image processor ``CLIPImageProcessor``
  (Kandinsky's ``image_processor``) or ``CLIPFeatureExtractor`` (Karlo's
  ``feature_extractor``), and Karlo's text projection
  ``["unclip", "UnCLIPTextProjModel"]``;
* an old ``_diffusers_version`` in the index and every diffusers config;
* no ``easel.json``.

The weights keep their values (bar the float16 rounding of the image encoder),
so a model in both layouts must give the same images wherever that encoder
is not on the path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

LEGACY_DIFFUSERS_VERSION = "0.18.0.dev0"
LEGACY_TRANSFORMERS_VERSION = "4.31.0.dev0"
IMAGE_ENCODER_FOLDERS = ("image_encoder", "prior_image_encoder")
IMAGE_PROCESSOR_CLASSES = ("CLIPImageProcessor", "CLIPImageProcessorPil", "CLIPImageProcessorFast")
_BIN_NAMES = {"model": "pytorch_model", "diffusion_pytorch_model": "diffusion_pytorch_model"}


def to_legacy_layout(directory: Path | str, *, half_image_encoder: bool = True) -> Path:
    """Rewrite ``directory`` (a pipeline directory, or one hub repository's folder) in place; returns it.

    ``half_image_encoder=False`` keeps the image encoder in float32, for comparisons that need the same weights.
    """
    directory = Path(directory)
    for folder in sorted(p for p in directory.iterdir() if p.is_dir()):
        half = half_image_encoder and folder.name in IMAGE_ENCODER_FOLDERS
        _weights_to_bin(folder, half=half)
        _config_to_legacy(folder, half=half)
        if folder.name.endswith("tokenizer"):
            _tokenizer_to_slow_files(folder)
        for name in ("preprocessor_config.json",):
            if (folder / name).is_file():
                _processor_to_legacy(folder / name, folder.name)
    index = directory / "model_index.json"
    if index.is_file():
        _rewrite_json(index, _legacy_index)
    (directory / "easel.json").unlink(missing_ok=True)
    return directory


def _weights_to_bin(folder: Path, *, half: bool) -> None:
    renamed: dict[str, str] = {}
    for path in sorted(folder.glob("*.safetensors")):
        state = load_file(path)
        if half:
            state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        stem, _, rest = path.name.partition(".")
        prefix, dash, shard = stem.partition("-")
        bin_name = _BIN_NAMES.get(prefix, prefix) + dash + shard + "." + rest.removesuffix("safetensors") + "bin"
        # torch.save's zip format, as torch >= 1.6 writes and the 2023 repositories hold.
        torch.save(state, folder / bin_name)
        renamed[path.name] = bin_name
        path.unlink()
    for index in sorted(folder.glob("*.safetensors.index.json")):
        data = json.loads(index.read_text())
        data["weight_map"] = {k: renamed.get(v, v) for k, v in data.get("weight_map", {}).items()}
        stem = index.name.removesuffix(".safetensors.index.json")
        (folder / f"{_BIN_NAMES.get(stem, stem)}.bin.index.json").write_text(json.dumps(data, indent=2) + "\n")
        index.unlink()


def _config_to_legacy(folder: Path, *, half: bool) -> None:
    for name in ("config.json", "scheduler_config.json"):
        if (folder / name).is_file():
            _rewrite_json(folder / name, lambda config: _legacy_config(config, half))


def _legacy_config(config: dict[str, Any], half: bool) -> dict[str, Any]:
    if "_diffusers_version" in config:
        config["_diffusers_version"] = LEGACY_DIFFUSERS_VERSION
    if "transformers_version" in config:
        config["transformers_version"] = LEGACY_TRANSFORMERS_VERSION
        # transformers 4 wrote the stored dtype as "torch_dtype"; 5 writes "dtype".
        dtype = config.pop("dtype", None) or config.get("torch_dtype") or "float32"
        config["torch_dtype"] = "float16" if half else dtype
    return config


def _tokenizer_to_slow_files(folder: Path) -> None:
    """``vocab.json`` and ``merges.txt`` (the slow tokenizer's files) in place of ``tokenizer.json``."""
    fast = folder / "tokenizer.json"
    if fast.is_file():
        model = json.loads(fast.read_text())["model"]
        (folder / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False))
        merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
        (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{m}\n" for m in merges))
        fast.unlink()

    def rewrite(config: dict[str, Any]) -> dict[str, Any]:
        config.pop("backend", None)  # transformers 5's key
        config.setdefault("do_lower_case", True)
        config.setdefault("errors", "replace")
        return config

    if (folder / "tokenizer_config.json").is_file():
        _rewrite_json(folder / "tokenizer_config.json", rewrite)


def _processor_to_legacy(path: Path, folder: str) -> None:
    legacy = "CLIPFeatureExtractor" if folder == "feature_extractor" else "CLIPImageProcessor"

    def rewrite(config: dict[str, Any]) -> dict[str, Any]:
        config.pop("image_processor_type", None)
        config["feature_extractor_type"] = legacy
        return config

    _rewrite_json(path, rewrite)


def _legacy_index(index: dict[str, Any]) -> dict[str, Any]:
    index["_diffusers_version"] = LEGACY_DIFFUSERS_VERSION
    for key, value in index.items():
        if not (isinstance(value, list) and len(value) == 2):
            continue
        if value[1] in IMAGE_PROCESSOR_CLASSES:
            index[key] = [
                "transformers",
                "CLIPFeatureExtractor" if key == "feature_extractor" else "CLIPImageProcessor",
            ]
        elif value[1] == "UnCLIPTextProjModel":
            index[key] = ["unclip", "UnCLIPTextProjModel"]
        elif value[1] == "CLIPTokenizerFast":
            index[key] = ["transformers", "CLIPTokenizer"]
    return index


def _rewrite_json(path: Path, change: Any) -> None:
    path.write_text(json.dumps(change(json.loads(path.read_text())), indent=2, sort_keys=True) + "\n")
