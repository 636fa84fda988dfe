"""Which of a hub repository's files ``easel pull`` downloads, and the names they get in the assembled model.

Per component folder: every file that is not weights (configs, tokenizer
files), and one set of weights. A folder on the hub often holds the same
weights several times: in safetensors and as a pickled ``.bin``, plain and
as variants (``diffusion_pytorch_model.fp16.safetensors``), whole or in
shards (``model.fp16-00001-of-00002.safetensors`` with
``model.safetensors.index.fp16.json``). The plain weights are taken
(safetensors before ``.bin``); a folder that has only variants gets the
variant that serves best (full precision first) and the pull says so. A
variant is renamed to the plain names in the assembled model, so the
loaders find it without being told a variant.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

WEIGHT_FORMATS = (".safetensors", ".bin", ".msgpack", ".h5", ".ckpt", ".onnx", ".pt", ".pth", ".ot")
PREFERRED_FORMATS = (".safetensors", ".bin")  # what the loaders read; the other formats are never taken
# Variants in the order a server would rather have them: full precision, then the inference (EMA) weights,
# then half precision; non_ema are raw training weights.
VARIANT_PREFERENCE = ("fp32", "ema", "bf16", "fp16", "non_ema")
_FORMAT = "|".join(re.escape(suffix) for suffix in WEIGHT_FORMATS)
_WEIGHT = re.compile(rf"(?P<stem>.+?)(?P<format>{_FORMAT})(?P<index>\.index(?:\.(?P<index_variant>\w+))?\.json)?")
_STEM_VARIANT = re.compile(rf"\.(?P<variant>{'|'.join(VARIANT_PREFERENCE)})(?P<shard>-\d+-of-\d+)?$")


@dataclass(frozen=True)
class WeightFile:
    format: str  # ".safetensors", ".bin", ...
    variant: str | None  # "fp16", ...; None: the plain weights
    index: bool  # a sharded checkpoint's index (JSON naming the shards)


def weight_file(filename: str) -> WeightFile | None:
    """What a file is, if it holds weights (or indexes them); None for anything else."""
    match = _WEIGHT.fullmatch(filename.rsplit("/", 1)[-1])
    if match is None:
        return None
    stem_variant = _STEM_VARIANT.search(match["stem"])
    variant = match["index_variant"] or (stem_variant["variant"] if stem_variant else None)
    if variant is not None and variant not in VARIANT_PREFERENCE:
        return None  # "x.safetensors.index.other.json": not a weight file this knows
    return WeightFile(match["format"], variant, match["index"] is not None)


@dataclass(frozen=True)
class Selection:
    files: list[str]  # repository paths to download
    variants: dict[str, str]  # folder -> the variant taken, for folders that have no plain weights


def select_files(filenames: list[str], folders: tuple[str, ...]) -> Selection:
    """The files of ``folders`` to download: configs and such, and one set of weights per folder."""
    chosen: list[str] = []
    variants: dict[str, str] = {}
    for folder in folders:
        inside = [name for name in filenames if name.startswith(folder + "/")]
        chosen += [name for name in inside if weight_file(name) is None]
        weights = {name: kind for name in inside if (kind := weight_file(name)) is not None}
        for variant in (None, *VARIANT_PREFERENCE):
            picked = _one_format([name for name, kind in weights.items() if kind.variant == variant], weights)
            if picked:
                chosen += picked
                if variant is not None:
                    variants[folder] = variant
                break
    return Selection(sorted(chosen), variants)


def _one_format(names: list[str], kinds: dict[str, WeightFile]) -> list[str]:
    for suffix in PREFERRED_FORMATS:
        found = [name for name in names if kinds[name].format == suffix]
        if found:
            return found
    return []


def plain_name(filename: str) -> str:
    """A variant's file name without the variant (``model.fp16-00001-of-00002.safetensors`` -> ``model-00001-...``)."""
    folder, _, name = filename.rpartition("/")
    kind = weight_file(name)
    if kind is None or kind.variant is None:
        return filename
    plain = name.replace(f".index.{kind.variant}.json", ".index.json")  # transformers' and diffusers' index names
    plain = re.sub(rf"\.{kind.variant}(?=-\d+-of-\d+\.|\.)", "", plain, count=1)
    return f"{folder}/{plain}" if folder else plain


def write_plain_index(source: Path, target: Path) -> None:
    """A variant's shard index, with the shards it names renamed as :func:`plain_name` renames them."""
    index = json.loads(source.read_text())
    index["weight_map"] = {key: plain_name(value) for key, value in index.get("weight_map", {}).items()}
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(index, indent=2) + "\n")
