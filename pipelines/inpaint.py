"""Edits: keep every unmasked pixel of the original exactly, and blend latents on decoders without inpaint weights.

Backends generate at their native size; the engine resizes to the request
size. Resizing alters pixels, so after resizing the engine calls
:func:`composite_unmasked` at the input's full resolution: outside the mask
the result is the original, bit for bit; inside, the generated image, blended
over a few pixels just inside the mask's edge so the seam does not show.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageFilter

from .base import BatchRows, ImageJob, Ticket

if TYPE_CHECKING:  # torch loads with the backends; the server uses only the pixel helpers here
    import torch

REPAINT_THRESHOLD = 128  # mask value at or above which a pixel is repainted


def binary_repaint_mask(mask: Image.Image, size: tuple[int, int] | None = None) -> np.ndarray:
    """Float array (H, W): 1 where the pixel is repainted, 0 where it is kept.

    When resizing, a pixel is repainted if any part of it was, so the mask
    never shrinks.
    """
    mask = mask.convert("L")
    if size is not None and mask.size != size:
        resized = mask.resize(size, Image.Resampling.BILINEAR)
        return (np.asarray(resized) > 0).astype(np.float32)
    return (np.asarray(mask) >= REPAINT_THRESHOLD).astype(np.float32)


def feathered_alpha(repaint: np.ndarray, feather: float) -> np.ndarray:
    """Blend weight of the generated image: 0 outside the mask, ramping to 1 inside it."""
    if feather <= 0:
        return repaint
    blurred = Image.fromarray((repaint * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(feather))
    # The blur spills outward as well; the minimum keeps it inside the mask only.
    return np.minimum(repaint, np.asarray(blurred, dtype=np.float32) / 255.0)


def composite_unmasked(
    original: Image.Image, generated: Image.Image, mask: Image.Image, *, feather: float | None = None
) -> Image.Image:
    """``generated`` inside ``mask`` (255 = repaint), ``original`` outside, at ``original``'s size.

    ``generated`` is resized to ``original`` if needed, ``mask`` too (the
    repaint region grows rather than shrinks). ``feather`` is the blur radius
    in pixels of the blend at the mask's inner edge; default 1/128 of the
    shorter side, at least 1.
    """
    original = original.convert("RGB")
    if generated.size != original.size:
        generated = generated.resize(original.size, Image.Resampling.BICUBIC)
    if feather is None:
        feather = max(1.0, min(original.size) / 128)
    repaint = binary_repaint_mask(mask, original.size)
    alpha = feathered_alpha(repaint, feather)[..., None]
    kept = np.asarray(original, dtype=np.float32)
    new = np.asarray(generated.convert("RGB"), dtype=np.float32)
    blended = np.where(alpha > 0, alpha * new + (1 - alpha) * kept, kept)
    return Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8), "RGB")


class LatentBlend:
    """Blended-latent inpainting on a decoder without inpaint weights (easel-mini's).

    After every denoising step the latents outside the mask are replaced by the
    original image's latents noised to the same step, so only the masked area is
    generated, in keeping with its surroundings. All tensors have one row per
    image of the batch: the original's latents, where to keep them (1 = keep),
    and the initial noise the decoder starts from.
    """

    def __init__(self, original_latents: torch.Tensor, keep: torch.Tensor, initial_noise: torch.Tensor):
        self.original_latents = original_latents
        self.keep = keep
        self.initial_noise = initial_noise

    def apply(self, latents: torch.Tensor, next_timestep: torch.Tensor | None, scheduler: Any) -> torch.Tensor:
        """Latents with the kept area reset to the original at the noise level of ``next_timestep``."""
        import torch

        if next_timestep is None:
            target = self.original_latents
        else:
            timesteps = torch.tensor([int(next_timestep)], device=latents.device)
            target = scheduler.add_noise(self.original_latents, self.initial_noise, timesteps)
        return self.keep * target + (1 - self.keep) * latents

    def clean(self, predicted: torch.Tensor, rows: slice | torch.Tensor = slice(None)) -> torch.Tensor:
        """The final image's latents for ``predicted`` clean latents of ``rows``: the original outside the mask."""
        keep = self.keep[rows]
        return keep * self.original_latents[rows] + (1 - keep) * predicted

    def keep_rows(self, keep: torch.Tensor) -> None:
        """Drop the rows of jobs that left the batch."""
        self.original_latents = self.original_latents[keep]
        self.keep = self.keep[keep]
        self.initial_noise = self.initial_noise[keep]


def latent_keep_mask(mask: Image.Image, image_size: tuple[int, int], latent_size: tuple[int, int]) -> torch.Tensor:
    """Where latents are kept (1) or regenerated (0), shaped (1, 1, h, w): a cell is regenerated if any of its
    pixels is to be repainted."""
    import torch
    import torch.nn.functional as F

    repaint = torch.from_numpy(binary_repaint_mask(mask, image_size))[None, None]
    return 1 - F.adaptive_max_pool2d(repaint, latent_size)


def resized_original(job: ImageJob) -> Image.Image:
    """The edit's input at the job's native size."""
    assert job.image is not None  # check_job
    return job.image.convert("RGB").resize((job.width, job.height), Image.Resampling.BICUBIC)


def latent_blend(
    rows: BatchRows, originals: dict[Ticket, Image.Image], generators: list[torch.Generator], movq: Any, device: Any
) -> LatentBlend:
    """The blend for a batch of edits: each job's original encoded, its keep mask, its rows' initial noise."""
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    parts = []  # per job: its original's latents and keep mask (one row each), its rows' initial noise
    for ticket, span in rows.spans():
        job = ticket.job
        pixels = np.asarray(originals[ticket], dtype=np.float32) / 127.5 - 1.0
        original = movq.encode(torch.from_numpy(pixels).permute(2, 0, 1)[None].to(device, movq.dtype)).latents
        assert job.mask is not None  # check_job
        keep = latent_keep_mask(job.mask, (job.width, job.height), original.shape[-2:]).to(device, original.dtype)
        shape = (job.n, original.shape[1], *original.shape[-2:])
        noise = randn_tensor(shape, generator=generators[span], device=device, dtype=original.dtype)
        parts.append((job.n, original, keep, noise))
    if len(parts) == 1:  # one job broadcasts its single row, as a request alone always has (same bytes)
        return LatentBlend(*parts[0][1:])
    repeated = [[part.repeat(n, 1, 1, 1) for part in (original, keep)] for n, original, keep, _ in parts]
    return LatentBlend(
        torch.cat([r[0] for r in repeated]), torch.cat([r[1] for r in repeated]), torch.cat([p[3] for p in parts])
    )


def inpaint_inputs(image: Image.Image, mask: Image.Image, n: int) -> dict[str, Any]:
    """The inpaint decoder's image and mask inputs for ``n`` images."""
    # The inpaint decoder sizes its masked-image batch from these lists, not from
    # the embeddings: one copy per image, or the batch sizes disagree.
    return {"image": [image] * n, "mask_image": [mask] * n}
