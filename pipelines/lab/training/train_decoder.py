"""The decoder UNet: noise prediction on MoVQ latents, conditioned on the target's CLIP image embedding.

Trained with the noise schedule of the scheduler that ships with it, on
latents standardised by :func:`train_movq.normalize_latents`. One condition in
ten is replaced by the embedding of the all-zero image, which is what
Kandinsky's pipelines pass as the negative embedding, so decoder guidance
pushes away from "no particular image". The UNet predicts v (the schedule
reaches zero SNR, see :func:`components.scheduler`); the loss is v-MSE, which
weighs clean-latent error by SNR+1, truncated at gamma = 5 so the many easy
low-noise steps do not crowd out the high-noise ones where the layout is
decided. Only the first half of the UNet's output is trained: the variance
half is discarded by the pipeline for a non-learned-variance scheduler.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, UNet2DConditionModel
from transformers import CLIPVisionModelWithProjection

from .components import IMAGE_SIZE
from .loop import Component, Ema, Schedule

CONDITION_DROPOUT = 0.1
MIN_SNR_GAMMA = 5.0


@torch.no_grad()
def zero_image_embedding(vision: CLIPVisionModelWithProjection, device: torch.device) -> torch.Tensor:
    """What the prior pipeline's ``get_zero_embed`` computes: the encoder on an all-zero pixel tensor."""
    vision.eval()
    return vision(torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE, device=device)).image_embeds


def decoder_component(
    unet: UNet2DConditionModel,
    scheduler: DDIMScheduler,
    latents: torch.Tensor,
    image_embeds: torch.Tensor,
    zero_embed: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    lr: float = 1e-3,
) -> Component:
    optimizer = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.99))
    alphas_cumprod = scheduler.alphas_cumprod.to(device)
    snr = alphas_cumprod / (1 - alphas_cumprod)
    weights = (snr + 1).clamp(max=MIN_SNR_GAMMA) / (snr + 1)
    timesteps = scheduler.config.num_train_timesteps
    channels = latents.shape[1]
    latents = latents.to(device)
    image_embeds = image_embeds.to(device)

    def step_loss(step: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator(device=device).manual_seed(seed * 1_000_003 + step)
        indices = torch.randint(0, len(latents), (batch_size,), generator=generator, device=device)
        clean = latents[indices]
        condition = image_embeds[indices]
        dropped = torch.rand(batch_size, generator=generator, device=device) < CONDITION_DROPOUT
        condition = torch.where(dropped[:, None], zero_embed.expand_as(condition), condition)
        t = torch.randint(0, timesteps, (batch_size,), generator=generator, device=device)
        noise = torch.randn(clean.shape, generator=generator, device=device)
        noisy = scheduler.add_noise(clean, noise, t)
        target = scheduler.get_velocity(clean, noise, t)
        predicted = unet(noisy, t, encoder_hidden_states=None, added_cond_kwargs={"image_embeds": condition}).sample
        per_sample = F.mse_loss(predicted[:, :channels], target, reduction="none").mean(dim=(1, 2, 3))
        return {"loss": (weights[t] * per_sample).mean(), "mse": per_sample.mean()}

    return Component(
        name="decoder",
        models={"unet": unet},
        optimizer=optimizer,
        schedule=Schedule.warming_up_for_a_tenth(lr, steps),
        step_loss=step_loss,
        ema=Ema(unet, decay=0.999),
        ema_of="unet",
    )
