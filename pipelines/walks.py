"""Moving through image-embedding space: animation frames, and input-fidelity mixing of edit inputs.

unCLIP decoders draw from a CLIP image embedding, so images between two
embeddings are meaningful (DALL-E 2's interpolations). An animation's two
ends are two prior samples of the same prompt: from the image's own seed, and
from that seed shifted by :data:`END_SEED_OFFSET`.
Each frame decodes a point on the path between them with the image's own
initial noise, so only the embedding changes from frame to frame. The path
goes out and back with an eased pace, so a looping GIF has no jump; frames
that sit at the same point (on the way out and back) are decoded once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from PIL import Image

from .base import BatchRows, Cancelled, ImageJob, JobOutcome, Ticket, seeded_generators

if TYPE_CHECKING:
    import torch

END_SEED_OFFSET = 2**31  # torch's CPU generator keeps a seed's low 32 bits: the shift must change them
_PARALLEL = 1e-6  # sin(angle) below which two directions count as the same

SampleEmbeds = Callable[[ImageJob], "tuple[torch.Tensor, torch.Tensor]"]  # job -> (embeds, negative), n rows each
Decode = Callable[[ImageJob, "torch.Tensor", "torch.Tensor"], list[Image.Image]]  # reseeded from job.seeds each call


def walk_positions(frames: int) -> list[float]:
    """Each frame's place on the path, 0 (start) to 1 (end) and back: (1 - cos) / 2 over one period.

    An odd count is shifted half a frame, so no two neighbouring frames sit at the same place
    (a GIF encoder would merge them into one longer frame).
    """
    shift = (frames % 2) / 2
    return [round((1 - math.cos(2 * math.pi * (k + shift) / frames)) / 2, 9) for k in range(frames)]


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Row-wise: the direction interpolated on the sphere, the length linearly (CLIP embeddings are not unit)."""
    import torch

    length_a, length_b = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    unit_a, unit_b = a / length_a, b / length_b
    angle = torch.acos((unit_a * unit_b).sum(dim=-1, keepdim=True).clamp(-1.0, 1.0))
    sine = torch.sin(angle)
    apart = sine > _PARALLEL
    safe_sine = torch.where(apart, sine, torch.ones_like(sine))
    weight_a = torch.where(apart, torch.sin((1 - t) * angle) / safe_sine, torch.full_like(sine, 1 - t))
    weight_b = torch.where(apart, torch.sin(t * angle) / safe_sine, torch.full_like(sine, t))
    return (weight_a * unit_a + weight_b * unit_b) * ((1 - t) * length_a + t * length_b)


def mix_in_image(prompt_embeds: torch.Tensor, image_embed: torch.Tensor, weight: float) -> torch.Tensor:
    """The prompt's embeddings moved ``weight`` of the way toward the input image's own (input_fidelity)."""
    if weight <= 0:
        return prompt_embeds
    return slerp(prompt_embeds, image_embed.expand_as(prompt_embeds), weight)


def mix_in_images(
    rows: BatchRows, embeds: torch.Tensor, embed_image: Callable[[Image.Image], torch.Tensor]
) -> torch.Tensor:
    """Each job's rows of prompt embeddings mixed with its input images' own, as its ``input_image_weight`` asks."""
    if all(job.input_image_weight <= 0 or job.image is None for job in rows.jobs):
        return embeds
    import torch

    mixed = []
    for ticket, span in rows.spans():
        job = ticket.job
        if job.input_image_weight > 0 and job.image is not None:
            inputs = [embed_image(image) for image in (job.image, *job.references)]
            combined = combine_embeds(inputs, job.image_weights)
            mixed.append(mix_in_image(embeds[span], combined, job.input_image_weight))
        else:
            mixed.append(embeds[span])
    return torch.cat(mixed)


def combine_embeds(embeds: list[torch.Tensor], weights: tuple[float, ...] | None) -> torch.Tensor:
    """Several images' embeddings (one row each) as one: the weighted mean direction, at the weighted mean length.

    A plain weighted sum (what Kandinsky's prior ``interpolate`` does) shortens the vector as the images
    disagree; the decoder was trained on embeddings of an image's own length. One image is used as it is.
    """
    if len(embeds) == 1:
        return embeds[0]
    import torch

    shares = torch.tensor(weights or [1.0] * len(embeds), dtype=embeds[0].dtype, device=embeds[0].device)
    shares = shares / shares.sum()
    stacked = torch.cat(embeds)  # (images, dim)
    lengths = stacked.norm(dim=-1, keepdim=True)
    direction = (shares[:, None] * stacked / lengths).sum(dim=0, keepdim=True)
    length = (shares[:, None] * lengths).sum(dim=0, keepdim=True)
    return direction / direction.norm(dim=-1, keepdim=True).clamp_min(_PARALLEL) * length


TextToEmbeds = Callable[[list[Ticket]], "tuple[dict[Ticket, tuple[torch.Tensor, torch.Tensor]], dict]"]
DecodeRows = Callable[[BatchRows, "torch.Tensor", "torch.Tensor", list["torch.Generator"]], dict[Ticket, JobOutcome]]


def animate(ticket: Ticket, text_to_embeds: TextToEmbeds, decode_rows: DecodeRows, device: Any) -> JobOutcome:
    """A backend's animation job: its prior samples and frame decodes, with Cancelled as the outcome if it left.

    Each prior and decoder call is a job of its own, under the animation's control.
    """

    def sample(ends: ImageJob) -> tuple[torch.Tensor, torch.Tensor]:
        sampled = Ticket(ends, ticket.control)
        embeds, left = text_to_embeds([sampled])
        if left:
            raise Cancelled()
        return embeds[sampled]

    def decode(frame_job: ImageJob, embeds: torch.Tensor, negative: torch.Tensor) -> list[Image.Image]:
        generators = seeded_generators(device, frame_job.seeds)
        frame = Ticket(frame_job, ticket.control)
        outcome = decode_rows(BatchRows([frame]), embeds, negative, generators)[frame]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    try:
        return walk_frames(ticket.job, sample, decode)
    except Cancelled as left:
        return left


def walk_frames(job: ImageJob, sample: SampleEmbeds, decode: Decode) -> list[Image.Image]:
    """``job.n`` animations of ``job.frames`` frames, image i's frames together (ImageJob.frames)."""
    n = job.n
    ends = replace(job, n=2 * n, seeds=[*job.seeds, *(seed + END_SEED_OFFSET for seed in job.seeds)], frames=1)
    embeds, negative = sample(ends)
    start, end, negative = embeds[:n], embeds[n:], negative[:n]
    positions = walk_positions(job.frames)
    decoded: dict[float, list[Image.Image]] = {}
    for t in positions:
        if t not in decoded:
            decoded[t] = decode(job, slerp(start, end, t), negative)
    return [decoded[t][i] for i in range(n) for t in positions]
