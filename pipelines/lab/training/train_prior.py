"""The prior: text embedding and text hidden states -> CLIP image embedding, as Kandinsky samples it.

Kandinsky's prior pipeline runs an UnCLIPScheduler with ``prediction_type="sample"``
on *normalised* embeddings and un-normalises the result with the prior's
``clip_mean``/``clip_std``. So the prior is trained to predict the clean
normalised image embedding from its noised version, and the real embedding
statistics are stored in the model (zeros there would collapse every output to
one point). One caption in ten is replaced by the empty prompt, so the
pipeline's classifier-free guidance (which conditions on "") has something to
push against.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from diffusers import PriorTransformer, UnCLIPScheduler
from transformers import CLIPTextModelWithProjection, CLIPTokenizer, CLIPVisionModelWithProjection

from .components import TEXT_MAX_LENGTH
from .data import ScenePool, batch_indices, captions_for, to_clip_pixels
from .loop import Component, Ema, Schedule

CAPTION_DROPOUT = 0.1


@torch.no_grad()
def embed_pool_images(
    vision: CLIPVisionModelWithProjection, pool: ScenePool, device: torch.device, batch_size: int = 256
) -> torch.Tensor:
    """CLIP image embeddings of every pool image, (N, D) float32, on the CPU."""
    vision.eval()
    chunks = [
        vision(to_clip_pixels(pool.images[start : start + batch_size].to(device))).image_embeds.float().cpu()
        for start in range(0, len(pool), batch_size)
    ]
    return torch.cat(chunks)


@torch.no_grad()
def encode_text(
    text: CLIPTextModelWithProjection, tokenizer: CLIPTokenizer, captions: list[str], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(text_embeds, hidden states padded to 77, mask): what the prior pipeline hands the prior.

    The tower runs on the batch's longest caption only. The pipeline pads to 77,
    but the tower is causal and the prior masks padded positions out of its
    attention, so the values there never reach the output: zeros stand in.
    """
    batch = tokenizer(captions, padding=True, return_tensors="pt")
    output = text(batch.input_ids.to(device))
    length = batch.input_ids.shape[1]
    hidden = F.pad(output.last_hidden_state, (0, 0, 0, TEXT_MAX_LENGTH - length))
    mask = F.pad(batch.attention_mask.bool(), (0, TEXT_MAX_LENGTH - length), value=False).to(device)
    return output.text_embeds, hidden, mask


def set_embedding_statistics(prior: PriorTransformer, image_embeds: torch.Tensor) -> None:
    with torch.no_grad():
        prior.clip_mean.copy_(image_embeds.mean(dim=0, keepdim=True))
        prior.clip_std.copy_(image_embeds.std(dim=0, keepdim=True))
    prior.clip_mean.requires_grad_(False)
    prior.clip_std.requires_grad_(False)


def prior_component(
    prior: PriorTransformer,
    scheduler: UnCLIPScheduler,
    text: CLIPTextModelWithProjection,
    tokenizer: CLIPTokenizer,
    pool: ScenePool,
    image_embeds: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    lr: float = 5e-4,
) -> Component:
    set_embedding_statistics(prior, image_embeds.to(device))
    normalised = ((image_embeds.to(device) - prior.clip_mean) / prior.clip_std).detach()
    text.eval().requires_grad_(False)
    trainable = [p for p in prior.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.01, betas=(0.9, 0.99))
    timesteps = scheduler.config.num_train_timesteps

    def step_loss(step: int) -> dict[str, torch.Tensor]:
        indices = batch_indices(len(pool), batch_size, seed, step)
        captions = captions_for(pool, indices, random.Random(f"prior-{seed}-{step}"), dropout=CAPTION_DROPOUT)
        text_embeds, hidden, mask = encode_text(text, tokenizer, captions, device)
        clean = normalised[indices.to(device)]
        generator = torch.Generator(device=device).manual_seed(seed * 1_000_003 + step)
        t = torch.randint(0, timesteps, (len(indices),), generator=generator, device=device)
        noise = torch.randn(clean.shape, generator=generator, device=device)
        noisy = scheduler.add_noise(clean, noise, t)
        predicted = prior(
            noisy, timestep=t, proj_embedding=text_embeds, encoder_hidden_states=hidden, attention_mask=mask
        ).predicted_image_embedding
        loss = F.mse_loss(predicted, clean)
        return {"loss": loss}

    return Component(
        name="prior",
        models={"prior": prior},
        optimizer=optimizer,
        schedule=Schedule.warming_up_for_a_tenth(lr, steps),
        step_loss=step_loss,
        ema=Ema(prior, decay=0.995),
        ema_of="prior",
    )
