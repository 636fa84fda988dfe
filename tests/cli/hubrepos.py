"""The fake hub's repositories: the tiny models of :mod:`pipelines.tiny` laid out as the real ones are on the hub.

Kandinsky 2.2 is a decoder and a prior repository; Karlo its repository plus
an image-variations repository whose image encoder the pull takes. Each has a
model card naming its licence, and files the pull must leave alone (fp16
variants, whole and sharded; the variations repository's own decoder).
:func:`to_hub_2023` rewrites them into the layout the published repositories
still hold (``.bin`` only, fp16 image encoder, slow tokenizer files, old class
names, no ``easel.json``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

DECODER = "kandinsky-community/kandinsky-2-2-decoder"
PRIOR = "kandinsky-community/kandinsky-2-2-prior"
KARLO = "kakaobrain/karlo-v1-alpha"
KARLO_VARIATIONS = "kakaobrain/karlo-v1-alpha-image-variations"
UNET = "unet/diffusion_pytorch_model.safetensors"
LICENSES = {DECODER: "apache-2.0", PRIOR: "apache-2.0", KARLO: "creativeml-openrail-m"}
LICENSES[KARLO_VARIATIONS] = LICENSES[KARLO]


def model_card(license_id: str) -> str:
    return f"---\nlicense: {license_id}\ntags:\n- text-to-image\n---\n\n# A model card\n"


def add_sharded_fp16_variant(folder: Path, weights: str) -> None:
    """``NAME.fp16-0000k-of-00002.safetensors`` and their index beside ``weights``, as newer uploads hold them."""
    data = (folder / weights).read_bytes()
    stem = weights.removesuffix(".safetensors")
    shards = [f"{stem}.fp16-0000{k}-of-00002.safetensors" for k in (1, 2)]
    for shard in shards:
        (folder / shard).write_bytes(data)
    index = {"metadata": {"total_size": len(data)}, "weight_map": {"w": shards[0], "v": shards[1]}}
    (folder / f"{stem}.safetensors.index.fp16.json").write_text(json.dumps(index))


def build_hub_repos(tiny_model_dirs: dict[str, Path], root: Path) -> dict[str, Path]:
    """Today's layout (what ``save_pretrained`` writes), one directory per repository under ``root``."""
    from diffusers import KandinskyV22CombinedPipeline

    combined = KandinskyV22CombinedPipeline.from_pretrained(tiny_model_dirs["kandinsky"])
    combined.decoder_pipe.save_pretrained(root / "decoder")
    combined.prior_pipe.save_pretrained(root / "prior")
    shutil.copy(tiny_model_dirs["kandinsky"] / "easel.json", root / "decoder")  # native 64x64, as the tiny model
    shutil.copy(root / "decoder" / UNET, root / "decoder/unet/diffusion_pytorch_model.fp16.safetensors")
    add_sharded_fp16_variant(root / "decoder/unet", "diffusion_pytorch_model.safetensors")
    karlo = shutil.copytree(
        tiny_model_dirs["karlo"], root / "karlo", ignore=shutil.ignore_patterns("image_encoder", "feature_extractor")
    )
    variations = shutil.copytree(tiny_model_dirs["karlo"], root / "karlo-variations")
    index = json.loads((karlo / "model_index.json").read_text())
    index.update(
        _class_name="UnCLIPImageVariationPipeline",
        image_encoder=["transformers", "CLIPVisionModelWithProjection"],
        feature_extractor=["transformers", "CLIPImageProcessor"],
    )
    (variations / "model_index.json").write_text(json.dumps(index))
    (karlo / "LICENSE").write_text("CreativeML Open RAIL-M\n")
    repos = {DECODER: root / "decoder", PRIOR: root / "prior", KARLO: karlo, KARLO_VARIATIONS: variations}
    for repo, directory in repos.items():
        (directory / "README.md").write_text(model_card(LICENSES[repo]))
    return repos


def to_hub_2023(repos: dict[str, Path], root: Path) -> dict[str, Path]:
    """A copy of ``repos`` under ``root`` in the hub's 2022-23 layout (as kandinsky-community and kakaobrain hold)."""
    from ..legacy_layout import to_legacy_layout

    return {
        repo: to_legacy_layout(
            shutil.copytree(directory, root / directory.name, ignore=shutil.ignore_patterns("*.fp16*"))
        )
        for repo, directory in repos.items()
    }
