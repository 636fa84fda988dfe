"""``easel pull`` from the hub as it really is: the 2022-23 layout, and folders that hold only variant weights.

The published Kandinsky 2.2 and Karlo repositories hold ``.bin`` weights, an
fp16-stored image encoder and the slow tokenizer's files; newer uploads may
hold only fp16 weights, in shards. Each is pulled from the fake hub with the
real command, listed, served, and used for generations, variations and edits
(with a mask) through the openai SDK.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

import numpy as np
import openai
import pytest
from PIL import Image

from ..conftest import FAST
from .conftest import clean_env, easel, serving
from .fakehub import FakeHub
from .hubrepos import DECODER, build_hub_repos, to_hub_2023

SIDE = 256


@pytest.fixture(scope="module")
def today(tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_hub_repos(tiny_model_dirs, tmp_path_factory.mktemp("today"))


@pytest.fixture(params=["today", "2023"])
def layout_hub(request: pytest.FixtureRequest, today: dict[str, Path], tmp_path: Path):
    """The fake hub serving the repositories as ``save_pretrained`` writes them today, or as published in 2023."""
    fake = FakeHub(today if request.param == "today" else to_hub_2023(today, tmp_path / "hub-2023"))
    fake.layout = request.param
    fake.url = fake.start()
    yield fake
    fake.stop()


def split_into_fp16_shards(folder: Path, weights: str = "diffusion_pytorch_model.safetensors") -> list[str]:
    """Replace ``weights`` by two fp16 shards and their index, variant-named: all the folder then holds."""
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(folder / weights)
    stem = weights.removesuffix(".safetensors")
    keys = sorted(state)
    names = [f"{stem}.fp16-0000{k}-of-00002.safetensors" for k in (1, 2)]
    weight_map = {}
    for name, part in zip(names, (keys[: len(keys) // 2], keys[len(keys) // 2 :]), strict=True):
        save_file({key: state[key].to(torch.float16) for key in part}, folder / name)
        weight_map.update(dict.fromkeys(part, name))
    total = sum(tensor.numel() * 2 for tensor in state.values())
    (folder / f"{stem}.safetensors.index.fp16.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
    )
    (folder / weights).unlink()
    return names


def b64_image(data: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data)))


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_a_folder_with_only_fp16_shards_is_taken_renamed_and_loads(today: dict[str, Path], tmp_path: Path):
    repos = {repo: shutil.copytree(path, tmp_path / "hub" / path.name) for repo, path in today.items()}
    for name in [p.name for p in (repos[DECODER] / "unet").iterdir() if ".fp16" in p.name]:
        (repos[DECODER] / "unet" / name).unlink()  # the other variants: not the point here
    shards = split_into_fp16_shards(repos[DECODER] / "movq")
    hub = FakeHub(repos)
    hub.url = hub.start()
    try:
        done = easel("pull", "kandinsky-2-2", env=clean_env(tmp_path / "home", HF_ENDPOINT=hub.url))
    finally:
        hub.stop()
    assert done.returncode == 0, done.stderr
    assert f"{DECODER}: movq/ has only variant weights: taking the fp16 ones" in done.stderr.splitlines()
    assert "loads: kandinsky22" in done.stderr
    movq = tmp_path / "home/models/kandinsky-2-2/movq"
    assert sorted(p.name for p in movq.iterdir()) == [
        "config.json",
        "diffusion_pytorch_model-00001-of-00002.safetensors",
        "diffusion_pytorch_model-00002-of-00002.safetensors",
        "diffusion_pytorch_model.safetensors.index.json",
    ]
    index = json.loads((movq / "diffusion_pytorch_model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == [name.replace(".fp16", "") for name in shards]


def test_each_layout_pulls_lists_and_serves_generations_variations_and_edits(layout_hub: FakeHub, tmp_path: Path):
    env = clean_env(tmp_path / "home", HF_ENDPOINT=layout_hub.url)
    for command in (["kandinsky-2-2"], ["karlo", "--accept-license"]):
        done = easel("pull", *command, env=env)
        assert done.returncode == 0, done.stderr
        assert "loads: " in done.stderr and "Traceback" not in done.stderr
    models = tmp_path / "home/models"
    if layout_hub.layout == "2023":
        assert (models / "kandinsky-2-2/unet/diffusion_pytorch_model.bin").is_file()
        assert {p.name for p in (models / "kandinsky-2-2/prior_tokenizer").iterdir()} >= {"vocab.json", "merges.txt"}
        assert not list(models.rglob("*.safetensors"))
        # The 2023 repositories carry no easel.json: the pulled Kandinsky's native size is what its decoder UNet's
        # config declares (the real one's 512x512; this tiny stand-in's 64x64).
        assert "native_size" not in json.loads((models / "kandinsky-2-2/easel.json").read_text())
    else:
        assert not list(models.rglob("*.bin"))
    listed = easel("models", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in map(json.loads, listed.stdout.splitlines())}
    assert rows["kandinsky-2-2"]["license"] == "apache-2.0" and rows["karlo"]["license"] == "creativeml-openrail-m"
    # The 2023 repositories store the image encoder in fp16.
    stored = ["float16", "float32"] if layout_hub.layout == "2023" else ["float32"]
    assert rows["kandinsky-2-2"]["stored_dtypes"] == stored
    assert rows["kandinsky-2-2"]["parameters"] > 0 and rows["karlo"]["parameters"] > 0  # .bin files too
    assert rows["kandinsky-2-2"]["native_size"] == rows["karlo"]["native_size"] == "64x64"

    with serving("--model", "kandinsky-2-2", "--model", "karlo", env=env) as url:  # bare names of pulled models
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=300)
        served = {model.id: model.model_extra for model in client.models.list()}
        assert served["kandinsky-2-2"]["license"] == "apache-2.0"
        assert served["kandinsky-2-2"]["weights"]["parameters"] == rows["kandinsky-2-2"]["parameters"]
        for model in ("kandinsky-2-2", "karlo"):
            made = client.images.generate(
                model=model, prompt="a red circle", size=f"{SIDE}x{SIDE}", response_format="b64_json", extra_body=FAST
            )
            picture = b64_image(made.data[0].b64_json)
            assert picture.size == (SIDE, SIDE)
            varied = client.images.create_variation(
                model=model,
                image=("in.png", png(picture), "image/png"),
                size=f"{SIDE}x{SIDE}",
                response_format="b64_json",
                extra_body={"decoder_steps": 2},  # no prior: a variation starts from the image's embedding
            )
            assert b64_image(varied.data[0].b64_json).size == (SIDE, SIDE)
        mask = np.full((SIDE, SIDE, 4), 255, dtype=np.uint8)
        mask[SIDE // 4 : SIDE // 2, SIDE // 4 : SIDE // 2, 3] = 0  # transparent: repaint here
        edited = client.images.edit(
            model="kandinsky-2-2",
            image=("in.png", png(picture.convert("RGB")), "image/png"),
            mask=("mask.png", png(Image.fromarray(mask, "RGBA")), "image/png"),
            prompt="a blue square",
            response_format="b64_json",
            extra_body=FAST,
        )
        assert b64_image(edited.data[0].b64_json).size == (SIDE, SIDE)
