"""Weights converted as they are read: bit-identical to the libraries' own conversion, file pages released as it
goes, anonymous memory never touched."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel
from transformers import CLIPVisionModelWithProjection

from patches.convert_on_read import convert_releasing, converting_to, mapped_ranges
from tests.legacy_layout import to_legacy_layout

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
MIB = 1 << 20


@pytest.fixture(scope="module")
def legacy_kandinsky(tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Kandinsky 2.2 in the hub's 2023 layout: float32 ``.bin`` files, the image encoder in float16."""
    model = tmp_path_factory.mktemp("legacy") / "kandinsky"
    shutil.copytree(tiny_model_dirs["kandinsky"], model)
    return to_legacy_layout(model)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach() for name, tensor in module.state_dict().items()}


def _assert_bit_identical(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor], dtype: torch.dtype):
    assert ours.keys() == theirs.keys()
    for name, tensor in ours.items():
        assert tensor.dtype == theirs[name].dtype, name
        assert torch.equal(tensor.view(torch.uint8), theirs[name].view(torch.uint8)), name
    assert {tensor.dtype for tensor in ours.values() if tensor.is_floating_point()} == {dtype}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_float32_bin_unet_loads_bit_identical_in_a_half_dtype(legacy_kandinsky: Path, dtype: torch.dtype):
    folder = legacy_kandinsky / "unet"
    assert (folder / "diffusion_pytorch_model.bin").is_file()
    options = {"low_cpu_mem_usage": True, "local_files_only": True, "dtype": dtype}
    theirs = UNet2DConditionModel.from_pretrained(folder, **options)
    with converting_to(dtype):
        ours = UNet2DConditionModel.from_pretrained(folder, **options)
    _assert_bit_identical(_state(ours), _state(theirs), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_float16_bin_image_encoder_loads_bit_identical_in_another_dtype(legacy_kandinsky: Path, dtype: torch.dtype):
    folder = legacy_kandinsky / "prior_image_encoder"
    assert (folder / "pytorch_model.bin").is_file()
    theirs = CLIPVisionModelWithProjection.from_pretrained(folder, local_files_only=True, dtype=dtype)
    with converting_to(dtype):
        ours = CLIPVisionModelWithProjection.from_pretrained(folder, local_files_only=True, dtype=dtype)
    _assert_bit_identical(_state(ours), _state(theirs), dtype)


def test_outside_the_block_the_libraries_read_as_they_always_did(legacy_kandinsky: Path):
    from diffusers.models import model_loading_utils

    file = legacy_kandinsky / "unet" / "diffusion_pytorch_model.bin"
    with converting_to(torch.bfloat16):
        inside = model_loading_utils.load_state_dict(str(file))
    outside = model_loading_utils.load_state_dict(str(file))
    assert {tensor.dtype for tensor in inside.values()} == {torch.bfloat16}
    assert {tensor.dtype for tensor in outside.values()} == {torch.float32}


def _resident_bytes_of(path: Path) -> int:
    """How much of ``path``'s mappings is resident in this process (``Rss`` lines of ``/proc/self/smaps``)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            inside = line.endswith(str(path.resolve()))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1]) * 1024
    return total


@linux_only
def test_the_pages_of_a_converted_tensor_leave_the_process_and_it_still_reads_the_file(tmp_path: Path):
    file = tmp_path / "weights.bin"
    written = {f"w{i}": torch.randn(1024, 1024) for i in range(8)}  # 32 MiB of float32
    torch.save(written, file)
    state = torch.load(file, mmap=True, weights_only=True)
    sources = dict(state)
    assert all(torch.equal(sources[name], tensor) for name, tensor in written.items())  # every page read
    assert _resident_bytes_of(file) >= 30 * MIB

    converted = convert_releasing(state, torch.bfloat16, mapped_ranges(str(file)))

    assert _resident_bytes_of(file) < 1 * MIB
    for name, tensor in written.items():
        assert torch.equal(converted[name], tensor.to(torch.bfloat16))
        assert torch.equal(sources[name], tensor)  # a released page is read from the file again


def test_a_file_that_is_not_mapped_releases_nothing(tmp_path: Path):
    tensors = {f"w{i}": torch.randn(512, 1024) for i in range(4)}  # page-sized and larger, not from any file
    originals = {name: tensor.clone() for name, tensor in tensors.items()}
    not_mapped = mapped_ranges(str(tmp_path / "absent.bin"))
    assert not_mapped == []
    converted = convert_releasing(dict(tensors), torch.bfloat16, not_mapped)
    for name, tensor in tensors.items():
        assert torch.equal(tensor, originals[name])
        assert torch.equal(converted[name], originals[name].to(torch.bfloat16))


def test_tensors_already_in_the_dtype_and_integers_are_kept_as_they_are():
    kept = {"weight": torch.randn(4, 4, dtype=torch.bfloat16), "positions": torch.arange(4)}
    converted = convert_releasing(dict(kept), torch.bfloat16, [])
    assert all(converted[name] is tensor for name, tensor in kept.items())


def test_no_module_easel_loads_keeps_weights_in_float32():
    """Converting on read assumes the libraries would convert every floating weight to the serving dtype; a class
    that keeps some modules in float32 would get them back rounded."""
    import diffusers
    import transformers
    from diffusers.pipelines.deprecated.unclip import UnCLIPTextProjModel

    classes = [
        getattr(diffusers, name) for name in ("UNet2DConditionModel", "UNet2DModel", "PriorTransformer", "VQModel")
    ]
    classes += [UnCLIPTextProjModel]
    classes += [
        getattr(transformers, name) for name in ("CLIPTextModelWithProjection", "CLIPVisionModelWithProjection")
    ]
    assert {cls.__name__: getattr(cls, "_keep_in_fp32_modules", None) or [] for cls in classes} == {
        cls.__name__: [] for cls in classes
    }


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_float32_safetensors_unet_loads_bit_identical_in_a_half_dtype(
    tiny_model_dirs: dict[str, Path], dtype: torch.dtype
):
    folder = tiny_model_dirs["kandinsky"] / "unet"
    assert (folder / "diffusion_pytorch_model.safetensors").is_file()
    options = {"low_cpu_mem_usage": True, "local_files_only": True, "dtype": dtype}
    theirs = UNet2DConditionModel.from_pretrained(folder, **options)
    with converting_to(dtype):
        ours = UNet2DConditionModel.from_pretrained(folder, **options)
    _assert_bit_identical(_state(ours), _state(theirs), dtype)


@linux_only
def test_the_pages_of_a_converted_safetensors_tensor_leave_the_process(tmp_path: Path):
    from safetensors.torch import load_file, save_file

    file = tmp_path / "weights.safetensors"
    written = {f"w{i}": torch.randn(1024, 1024) for i in range(8)}
    save_file(written, file)
    state = load_file(file)
    assert all(torch.equal(state[name], tensor) for name, tensor in written.items())
    assert _resident_bytes_of(file) >= 30 * MIB

    converted = convert_releasing(state, torch.bfloat16, mapped_ranges(str(file)))

    assert _resident_bytes_of(file) < 1 * MIB
    assert all(torch.equal(converted[name], tensor.to(torch.bfloat16)) for name, tensor in written.items())


LOAD_AND_COUNT = """
import sys
from pathlib import Path
import patches.convert_on_read as convert_on_read
from pipelines.kandinsky import KandinskyBackend  # imports diffusers' model modules before anything converts
from pipelines.loader import load_backend

converted = []
original = convert_on_read.convert_releasing
def counting(state, dtype, mapped):
    converted.append(len(state))
    return original(state, dtype, mapped)
convert_on_read.convert_releasing = counting
load_backend("t", "kandinsky22", Path(sys.argv[1]), device="cpu", dtype="bfloat16")
print(len(converted))
"""


def test_the_loader_converts_every_weight_file_whatever_was_imported_first(legacy_kandinsky: Path):
    # A fresh process: here the libraries' modules were imported long ago, in an order no server follows.
    done = subprocess.run(
        [sys.executable, "-c", LOAD_AND_COUNT, str(legacy_kandinsky)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    # UNet, prior and MoVQ (diffusers), text and image encoders (transformers): all five files read converted.
    assert done.stdout.splitlines()[-1] == "5"
