"""Check a model directory's files before the libraries read them, so a broken file is named, not guessed at.

diffusers and transformers report a garbage JSON file as "Expecting value: line
1 column 1" without saying which file, and a model folder whose safetensors file
is missing as a missing ``.bin``. These checks read only small files and the
folder listings, so they cost milliseconds at any model size.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from weights.footprint import weight_files

# model_index.json names [library, class]; a model (not a tokenizer, scheduler or processor) has a config.json
# beside its weights. transformers names those files differently from diffusers and its pipeline modules.
_TRANSFORMERS_STEMS = ("model", "pytorch_model")
_DIFFUSERS_STEMS = ("diffusion_pytorch_model", "diffusion_pytorch_model")
_MAX_JSON_BYTES = 64 * 1024 * 1024  # tokenizer.json files reach a few MB; anything far larger is not a config


class BrokenModelFile(ValueError):
    """A file of a model directory that cannot be used as it is; the message names it."""


def check_model_files(model_dir: Path) -> dict[str, Any]:
    """Every JSON file parses and every model component has weights; the parsed ``model_index.json``.

    Raises :class:`BrokenModelFile` (naming the file) or ``FileNotFoundError``
    (naming the weights looked for).
    """
    index_path = model_dir / "model_index.json"
    for path in sorted(model_dir.rglob("*.json")):
        if path.is_file() and path != index_path:
            read_json_file(path)
    index = read_json_file(index_path)
    if not isinstance(index, dict):
        raise BrokenModelFile(f"{model_dir / 'model_index.json'}: expected a JSON object")
    for folder, entry in sorted(index.items()):
        if not folder.startswith("_") and isinstance(entry, list) and len(entry) == 2 and entry[0] is not None:
            if not (model_dir / folder).is_dir():
                raise FileNotFoundError(f"{model_dir / folder} is missing (model_index.json names it)")
            _check_component_weights(model_dir / folder, str(entry[0]))
    return index


def read_json_file(path: Path) -> object:
    """``path``'s JSON, or :class:`BrokenModelFile` naming the file and where it breaks."""
    if path.stat().st_size > _MAX_JSON_BYTES:
        raise BrokenModelFile(f"{path}: {path.stat().st_size} bytes is too large for a configuration file")
    try:
        return json.loads(path.read_bytes())
    except UnicodeDecodeError as error:
        raise BrokenModelFile(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except json.JSONDecodeError as error:
        where = f"line {error.lineno} column {error.colno}"
        raise BrokenModelFile(f"{path}: not valid JSON ({error.msg}: {where})") from None


def _check_component_weights(folder: Path, library: str) -> None:
    if not (folder / "config.json").is_file():
        return  # a scheduler, tokenizer or processor: no weights of its own
    files = weight_files(folder)
    missing_shards = [name for name in files if not (folder / name).is_file()]
    if missing_shards:
        raise FileNotFoundError(f"{folder / missing_shards[0]} is missing (its shard index names it)")
    if files:
        return
    stem, bin_stem = _TRANSFORMERS_STEMS if library == "transformers" else _DIFFUSERS_STEMS
    raise FileNotFoundError(
        f"{folder} has no weights: looked for {folder / (stem + '.safetensors')} and {folder / (bin_stem + '.bin')} "
        "(or their sharded or variant forms). Pull the model again, or copy the missing file in."
    )
