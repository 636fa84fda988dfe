"""Contrastive (InfoNCE) training of the CLIP text and image encoders on (render, caption) pairs.

InfoNCE alone left position out of both embeddings: colours, shapes and the
background already tell a batch's captions apart, and an MLP probe on the
trained embeddings could not find where anything was. The decoder draws from
the image embedding, so it must hold everything. Two additions fix that:

- probes read each object's position, colour, shape and size (objects in
  position order, so every attribute is bound to its object) and the
  background off the embeddings through a small MLP, and their cross-entropy
  joins the loss (text is asked for position, colour and shape, which every
  caption states; size and background only sometimes);
- the image tower's position embeddings start as 2-D sine-cosine patterns
  (see :func:`components.image_encoder`), so where a patch lies is visible
  from the first step.

The probes are not shipped.
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPTextModelWithProjection, CLIPTokenizer, CLIPVisionModelWithProjection

from .components import EMBED_DIM
from .data import (
    ATTRIBUTE_CLASSES,
    BACKGROUND_CLASSES,
    MAX_OBJECTS,
    ScenePool,
    batch_indices,
    captions_for,
    to_clip_pixels,
)
from .loop import Component, Schedule


class AttributeProbes(nn.Module):
    """Each object's attributes and the background, read off an embedding through one small MLP."""

    def __init__(self, dim: int = EMBED_DIM, hidden: int = 4 * EMBED_DIM):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(dim, hidden), nn.GELU())
        self.attributes = nn.ModuleDict(
            {name: nn.Linear(hidden, MAX_OBJECTS * classes) for name, classes in ATTRIBUTE_CLASSES.items()}
        )
        self.background = nn.Linear(hidden, BACKGROUND_CLASSES)

    def logits(self, embeds: torch.Tensor, name: str) -> torch.Tensor:
        """(N, MAX_OBJECTS, classes) for attribute ``name``."""
        return self.attributes[name](self.trunk(embeds)).view(len(embeds), MAX_OBJECTS, ATTRIBUTE_CLASSES[name])

    def loss(
        self, embeds: torch.Tensor, objects: torch.Tensor, names: tuple[str, ...], backgrounds: torch.Tensor | None
    ) -> torch.Tensor:
        features = self.trunk(embeds)
        losses = []
        for name in names:
            column = list(ATTRIBUTE_CLASSES).index(name)
            logits = self.attributes[name](features).view(len(embeds), MAX_OBJECTS, ATTRIBUTE_CLASSES[name])
            losses.append(F.cross_entropy(logits.flatten(0, 1), objects[:, :, column].flatten()))
        if backgrounds is not None:
            losses.append(F.cross_entropy(self.background(features), backgrounds))
        return torch.stack(losses).mean()


def clip_component(
    text: CLIPTextModelWithProjection,
    vision: CLIPVisionModelWithProjection,
    tokenizer: CLIPTokenizer,
    pool: ScenePool,
    *,
    steps: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    lr: float = 1e-3,
) -> Component:
    probes = AttributeProbes().to(device)
    # CLIP's learnable temperature, starting at 1/0.07.
    logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07), device=device))
    temperature = nn.ParameterDict({"logit_scale": logit_scale})
    models = {"text": text, "vision": vision, "probes": probes, "temperature": temperature}
    params = [p for m in models.values() for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.05, betas=(0.9, 0.98))

    def step_loss(step: int) -> dict[str, torch.Tensor]:
        indices = batch_indices(len(pool), batch_size, seed, step)
        captions = captions_for(pool, indices, random.Random(f"clip-{seed}-{step}"))
        # Padding to the batch's longest caption gives the same pooled output as padding to 77:
        # the text tower is causal, so nothing before end-of-text sees the padding.
        tokens = tokenizer(captions, padding=True, return_tensors="pt").input_ids.to(device)
        pixels = to_clip_pixels(pool.images[indices].to(device))
        text_embeds = text(tokens).text_embeds
        image_embeds = vision(pixels).image_embeds
        logits = logit_scale.clamp(max=math.log(100)).exp() * (
            F.normalize(image_embeds, dim=-1) @ F.normalize(text_embeds, dim=-1).T
        )
        targets = torch.arange(len(indices), device=device)
        contrastive = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
        objects, backgrounds = pool.objects[indices].to(device), pool.backgrounds[indices].to(device)
        image_probe = probes.loss(image_embeds, objects, tuple(ATTRIBUTE_CLASSES), backgrounds)
        text_probe = probes.loss(text_embeds, objects, ("position", "color", "shape"), None)
        accuracy = (logits.argmax(dim=1) == targets).float().mean()
        return {
            "loss": contrastive + image_probe + text_probe,
            "infonce": contrastive,
            "image_probe": image_probe,
            "text_probe": text_probe,
            "batch_acc": accuracy,
        }

    return Component(
        name="clip",
        models=models,
        optimizer=optimizer,
        schedule=Schedule.warming_up_for_a_tenth(lr, steps),
        step_loss=step_loss,
    )
