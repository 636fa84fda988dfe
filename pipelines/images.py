"""Tensor images to PIL."""

from __future__ import annotations

import torch
from PIL import Image


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """Images in [-1, 1], shaped (N, 3, H, W), as RGB PIL images."""
    array = ((images.float() * 0.5 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return [Image.fromarray(a) for a in array.permute(0, 2, 3, 1).cpu().numpy()]
