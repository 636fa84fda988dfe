"""The models ``easel pull`` knows: which hub repositories make each one, and how they become one directory.

A recipe lists parts: a repository, which of its component folders to take
(default: every component its ``model_index.json`` names) and a prefix for
their folder names. Kandinsky 2.2 is a decoder repository plus a prior
repository; assembled as the combined pipeline ``save_pretrained`` writes
(decoder folders as they are, prior folders as ``prior_*``), it is what
:mod:`pipelines.kandinsky` loads. Karlo is its repository as it is, plus the
image encoder and feature extractor of its image-variations repository.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INDEX = "model_index.json"


@dataclass(frozen=True)
class Part:
    repo: str
    prefix: str = ""  # put before each folder's name in the assembled model
    folders: tuple[str, ...] | None = None  # None: every component in the repository's model_index.json
    index: bool = True  # whether its components go into the assembled model_index.json


@dataclass(frozen=True)
class Recipe:
    name: str
    family: str  # pipelines.loader family
    presets: str  # pipelines.presets table
    description: str
    parts: tuple[Part, ...]
    pipeline: str | None = None  # the assembled model_index.json's _class_name; None: the first part's own


KANDINSKY_PRIOR = Part("kandinsky-community/kandinsky-2-2-prior", prefix="prior_")
RECIPES = {
    recipe.name: recipe
    for recipe in (
        Recipe(
            "kandinsky-2-2",
            "kandinsky22",
            "kandinsky22",
            "Kandinsky 2.2: prior + decoder + MoVQ, about 4.9 B parameters, about 15.9 GB to download; Apache-2.0",
            (Part("kandinsky-community/kandinsky-2-2-decoder"), KANDINSKY_PRIOR),
            pipeline="KandinskyV22CombinedPipeline",
        ),
        Recipe(
            "kandinsky-2-2-inpaint",
            "kandinsky22",
            "kandinsky22",
            "Kandinsky 2.2 with its inpainting decoder (9-channel UNet): the best edits; Apache-2.0",
            (Part("kandinsky-community/kandinsky-2-2-decoder-inpaint"), KANDINSKY_PRIOR),
            pipeline="KandinskyV22InpaintCombinedPipeline",
        ),
        Recipe(
            "karlo",
            "karlo",
            "karlo",
            "Karlo v1 alpha (unCLIP, 256x256) with its image-variation encoder, about 3.73 B parameters; "
            "CreativeML Open RAIL-M (--accept-license)",
            (
                Part("kakaobrain/karlo-v1-alpha"),
                Part(
                    "kakaobrain/karlo-v1-alpha-image-variations",
                    folders=("image_encoder", "feature_extractor"),
                    index=False,
                ),
            ),
        ),
    )
}


def components(index: dict[str, Any]) -> list[str]:
    """The component folders a ``model_index.json`` names (entries with a library and a class)."""
    return sorted(
        key
        for key, value in index.items()
        if not key.startswith("_") and isinstance(value, list) and value and value[0]
    )


def part_folders(part: Part, index: dict[str, Any]) -> tuple[str, ...]:
    return part.folders if part.folders is not None else tuple(components(index))


def assembled_index(recipe: Recipe, indexes: list[dict[str, Any]]) -> dict[str, Any]:
    """The assembled model's ``model_index.json`` from each part's own."""
    first = indexes[0]
    merged: dict[str, Any] = {key: value for key, value in first.items() if key.startswith("_")}
    if recipe.pipeline is not None:
        merged["_class_name"] = recipe.pipeline
    for part, index in zip(recipe.parts, indexes, strict=True):
        if part.index:
            merged.update({part.prefix + folder: index[folder] for folder in part_folders(part, index)})
    return merged


def place(source: Path, target: Path) -> None:
    """``target`` as a hard link to ``source`` (no second copy on disk), or a copy across file systems."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
