"""Training data: a fixed pool of rendered train-split scenes, their attribute labels, fresh captions.

Images are rendered once into one uint8 tensor (64x64 scenes render in a
fraction of a millisecond, so the pool is rebuilt rather than cached on disk).
Captions are drawn anew for every batch from an rng seeded by the step, so a
resumed run sees exactly the batches an uninterrupted one would.

Labels list a scene's objects in a canonical order (by position) with their
position, colour, shape and size, plus the background colour; the CLIP
training uses them as auxiliary targets so the embeddings carry every
attribute, bound to the right object.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from ..scenes import COLORS, POSITIONS, SHAPES, SIZES, Scene, SceneObject, caption, render, sample_scene
from .components import CLIP_MEAN, CLIP_STD

COLOR_NAMES = tuple(COLORS)
POSITION_NAMES = tuple(POSITIONS)
SIZE_NAMES = tuple(SIZES)
MAX_OBJECTS = 2
# Per object, in position order: each attribute's index + 1, and 0 for "no such object".
ATTRIBUTE_CLASSES = {
    "position": 1 + len(POSITION_NAMES),
    "color": 1 + len(COLOR_NAMES),
    "shape": 1 + len(SHAPES),
    "size": 1 + len(SIZE_NAMES),
}
BACKGROUND_CLASSES = len(COLOR_NAMES)


@dataclass
class ScenePool:
    scenes: list[Scene]
    images: torch.Tensor  # (N, 3, 64, 64) uint8
    objects: torch.Tensor  # (N, MAX_OBJECTS, 4) int64: position, colour, shape, size classes
    backgrounds: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.scenes)


def build_pool(count: int, seed: int, size: int = 64) -> ScenePool:
    """``count`` train-split scenes (never a held-out combination), rendered and labelled."""
    rng = random.Random(seed)
    return pool_of([sample_scene(rng, split="train") for _ in range(count)], size)


def pool_of(scenes: list[Scene], size: int = 64) -> ScenePool:
    """``scenes`` rendered and labelled."""
    images = np.stack([np.asarray(render(scene, size)) for scene in scenes])
    return ScenePool(
        scenes=scenes,
        images=torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        objects=torch.tensor([object_labels(scene) for scene in scenes], dtype=torch.long),
        backgrounds=torch.tensor([COLOR_NAMES.index(scene.background) for scene in scenes], dtype=torch.long),
    )


def ordered_objects(scene: Scene) -> list[SceneObject]:
    """The scene's objects in the canonical (position) order the label slots follow."""
    return sorted(scene.objects, key=lambda obj: POSITION_NAMES.index(obj.position))


def object_labels(scene: Scene) -> list[list[int]]:
    """Each object's (position, colour, shape, size) classes in position order, padded with zeros."""
    labels = [
        [
            1 + POSITION_NAMES.index(obj.position),
            1 + COLOR_NAMES.index(obj.color),
            1 + SHAPES.index(obj.shape),
            1 + SIZE_NAMES.index(obj.size),
        ]
        for obj in ordered_objects(scene)
    ]
    return labels + [[0, 0, 0, 0]] * (MAX_OBJECTS - len(labels))


def captions_for(pool: ScenePool, indices: torch.Tensor, rng: random.Random, dropout: float = 0.0) -> list[str]:
    """A fresh caption per scene; with probability ``dropout`` the empty prompt instead."""
    return ["" if rng.random() < dropout else caption(pool.scenes[i], rng) for i in indices.tolist()]


def to_clip_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 images to what ``CLIPImageProcessor`` makes of them (they are already 64x64)."""
    mean = torch.tensor(CLIP_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def to_movq_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 images to MoVQ's input range [-1, 1] (what Kandinsky's pipelines feed it)."""
    return images.float() / 127.5 - 1.0


def batch_indices(count: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """The batch for ``step``: a function of seed and step only, so resuming repeats nothing."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.randint(0, count, (batch_size,), generator=generator)
