"""The MoVQ autoencoder, trained through the path Kandinsky's decoder pipeline uses.

Kandinsky decodes with ``force_not_quantize=True``, so the codebook is never
consulted at inference: the model is trained as a plain autoencoder
(encode -> quant_conv -> post_quant_conv -> decode). Small noise on the latents
while training makes the decoder forgiving of the slightly-off latents a
diffusion model produces. Afterwards :func:`normalize_latents` folds each
latent channel's mean and spread into ``quant_conv``/``post_quant_conv``, so
latents have zero mean and unit variance (what the decoder's noise schedule
assumes) while the decoded images stay exactly the same.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import VQModel

from .data import ScenePool, batch_indices, to_movq_pixels
from .loop import Component, Schedule

# At a peak learning rate of 2e-3 (batch 16) objects' colours came out washed out for good
# (reconstruction MSE 0.033 after 1200 steps). 5e-4 at batch 32, with a firmer hold on the
# latent scale, reconstructs held-out scenes to MSE 0.009 in 1000 steps.
LATENT_NOISE = 0.05  # relative to the latents' current spread
SCALE_PENALTY = 1e-2  # keeps the raw latents from drifting far above unit variance


def movq_component(
    movq: VQModel, pool: ScenePool, *, steps: int, batch_size: int, seed: int, device: torch.device, lr: float = 5e-4
) -> Component:
    optimizer = torch.optim.AdamW(movq.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.99))
    memory_format = _memory_format(device)

    def step_loss(step: int) -> dict[str, torch.Tensor]:
        indices = batch_indices(len(pool), batch_size, seed, step)
        pixels = to_movq_pixels(pool.images[indices].to(device)).contiguous(memory_format=memory_format)
        latents = movq.encode(pixels).latents
        generator = torch.Generator(device=device).manual_seed(seed * 1_000_003 + step)
        noise = torch.randn(latents.shape, generator=generator, device=device)
        noisy = latents + LATENT_NOISE * latents.detach().std() * noise
        decoded = movq.decode(noisy, force_not_quantize=True).sample
        l1 = F.l1_loss(decoded, pixels)
        mse = F.mse_loss(decoded, pixels)
        scale = (latents.square().mean() - 1).clamp(min=0)
        return {"loss": l1 + mse + SCALE_PENALTY * scale, "l1": l1, "mse": mse, "latent_var": latents.detach().var()}

    return Component(
        name="movq",
        models={"movq": movq},
        optimizer=optimizer,
        schedule=Schedule.warming_up_for_a_tenth(lr, steps),
        step_loss=step_loss,
    )


def _memory_format(device: torch.device) -> torch.memory_format:
    # Channels-last convolutions run several times faster on CPU for these small channel counts.
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


def prepare(movq: VQModel, device: torch.device) -> VQModel:
    return movq.to(device=device, memory_format=_memory_format(device))


@torch.no_grad()
def encode_pool(movq: VQModel, pool: ScenePool, device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """Latents of every pool image, (N, C, h, w) float32, on the CPU."""
    movq.eval()
    chunks = []
    for start in range(0, len(pool), batch_size):
        pixels = to_movq_pixels(pool.images[start : start + batch_size].to(device))
        chunks.append(movq.encode(pixels.contiguous(memory_format=_memory_format(device))).latents.float().cpu())
    return torch.cat(chunks).contiguous()


@torch.no_grad()
def normalize_latents(movq: VQModel, latents: torch.Tensor) -> torch.Tensor:
    """Fold per-channel standardisation into the model; returns the standardised ``latents``.

    encode: z' = (z - m) / s, so quant_conv's weights and bias are shifted and divided.
    decode: post_quant_conv(z) = W z + b = (W s) z' + (b + W m), so its weights absorb s and m.
    """
    mean = latents.mean(dim=(0, 2, 3))
    std = latents.std(dim=(0, 2, 3))
    quant, post = movq.quant_conv, movq.post_quant_conv
    m, s = mean.to(quant.weight.device), std.to(quant.weight.device)
    quant.weight.div_(s.view(-1, 1, 1, 1))
    quant.bias.sub_(m).div_(s)
    post.bias.add_(post.weight[:, :, 0, 0] @ m)
    post.weight.mul_(s.view(1, -1, 1, 1))
    return (latents - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
