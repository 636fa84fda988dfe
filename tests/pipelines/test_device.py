"""Device and dtype choice, with the hardware's availability monkeypatched."""

from __future__ import annotations

import pytest
import torch

from pipelines import device as device_module
from pipelines.device import choose_device, choose_dtype, dtype_name


@pytest.fixture
def hardware(monkeypatch):
    """Set what the machine appears to have: hardware(cuda=2, mps=False, bf16=True)."""

    def set_hardware(cuda: int = 0, mps: bool = False, bf16: bool = True) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
        monkeypatch.setattr(device_module, "_mps_available", lambda: mps)

    return set_hardware


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(1, True, "cuda"), (0, True, "mps"), (0, False, "cpu")],
)
def test_automatic_device_prefers_cuda_then_mps(hardware, cuda, mps, expected):
    hardware(cuda=cuda, mps=mps)
    assert choose_device().type == expected


def test_explicit_devices(hardware):
    hardware(cuda=2, mps=True)
    assert choose_device("cuda:1") == torch.device("cuda:1")
    assert choose_device("mps") == torch.device("mps")
    assert choose_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize(
    ("requested", "message"),
    [
        ("cuda", "CUDA is not available"),
        ("cuda:0", "CUDA is not available"),
        ("mps", "MPS is not available"),
        ("tpu", "device"),
        ("gpu", "unknown device"),
    ],
)
def test_unavailable_or_unknown_device(hardware, requested, message):
    hardware(cuda=0, mps=False)
    with pytest.raises(ValueError, match=message):
        choose_device(requested)


def test_cuda_index_out_of_range(hardware):
    hardware(cuda=1)
    with pytest.raises(ValueError, match="only 1 CUDA device"):
        choose_device("cuda:1")


@pytest.mark.parametrize(
    ("device", "bf16", "expected"),
    [
        ("cuda", True, torch.bfloat16),
        ("cuda", False, torch.float16),
        ("mps", True, torch.float32),
        ("cpu", True, torch.float32),
    ],
)
def test_automatic_dtype(hardware, device, bf16, expected):
    hardware(cuda=1, bf16=bf16)
    assert choose_dtype(torch.device(device)) == expected


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        ("float32", torch.float32),
        ("float16", torch.float16),
        ("bfloat16", torch.bfloat16),
        ("fp16", torch.float16),
        ("BF16", torch.bfloat16),
    ],
)
def test_explicit_dtype(requested, expected):
    assert choose_dtype(torch.device("cpu"), requested) == expected


def test_bad_dtype():
    with pytest.raises(ValueError, match="unknown dtype 'int8'"):
        choose_dtype(torch.device("cpu"), "int8")


def test_dtype_name_round_trips():
    for name in ("float32", "float16", "bfloat16"):
        assert dtype_name(choose_dtype(torch.device("cpu"), name)) == name
