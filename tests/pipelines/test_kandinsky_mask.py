"""The vectorised inpaint-mask preparation matches diffusers' loop exactly, and inpaint backends use it."""

from __future__ import annotations

import pytest
import torch
from diffusers.pipelines.kandinsky2_2 import pipeline_kandinsky2_2_inpainting as diffusers_inpaint

from pipelines.kandinsky_mask import DIFFUSERS_PREPARE_MASK, shrink_kept_region
from pipelines.loader import load_backend
from pipelines.tiny import build_tiny_kandinsky


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 1, 1, 5), (2, 1, 7, 9), (3, 1, 16, 16), (1, 2, 6, 4)])
@pytest.mark.parametrize("kept_share", [0.0, 0.2, 0.7, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_shrink_matches_diffusers_prepare_mask(shape, kept_share, dtype):
    generator = torch.Generator().manual_seed(sum(shape) + int(kept_share * 10))
    masks = (torch.rand(shape, generator=generator) < kept_share).to(dtype)
    expected = DIFFUSERS_PREPARE_MASK(masks.clone())
    got = shrink_kept_region(masks.clone())
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert torch.equal(got, expected)


def test_one_hole_clears_diffusers_asymmetric_neighbourhood():
    masks = torch.ones(1, 1, 5, 5)
    masks[0, 0, 2, 2] = 0
    expected = torch.tensor(
        [[1, 1, 1, 1, 1], [1, 0, 0, 1, 1], [1, 0, 0, 0, 1], [1, 1, 0, 0, 1], [1, 1, 1, 1, 1]], dtype=torch.float32
    )
    assert torch.equal(shrink_kept_region(masks)[0, 0], expected)


def test_loading_inpaint_weights_installs_the_vectorised_version(tmp_path):
    path = build_tiny_kandinsky(tmp_path / "tiny-inpaint", inpaint=True)
    load_backend("tiny-inpaint", "kandinsky22", path, device="cpu")
    assert diffusers_inpaint.prepare_mask is shrink_kept_region
