"""Partial images for streams: which denoising steps show one, and each job's own rows of a batch, decoded.

A preview is the scheduler's estimate of the clean sample at that step (far
better than the noisy latents), decoded by the backend's own ``decode``.
Only a batch with a job that asked for partial images loads this module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from PIL import Image

from .base import BatchRows, Ticket

# A backend's decoding of a job's clean-sample estimate (its rows of the batch) into pixels in [-1, 1].
Decode = Callable[[torch.Tensor, slice], torch.Tensor]


def wanted(tickets: list[Ticket]) -> bool:
    return any(ticket.job.preview_count > 0 and ticket.control.on_preview is not None for ticket in tickets)


def preview_steps(total_steps: int, count: int) -> list[int]:
    """``count`` step indices, evenly spaced, all strictly before the last step.

    At most ``total_steps - 1`` previews exist (one per step but the last);
    asking for more gives that many, as OpenAI's partial images may be fewer
    than requested when the image is finished sooner.
    """
    count = min(count, total_steps - 1)
    return [((j + 1) * total_steps) // (count + 1) - 1 for j in range(max(count, 0))]


def predicted_clean(step_output: Any) -> Any:
    """The scheduler's estimate of the final sample, or the new sample if it gives none."""
    predicted = getattr(step_output, "pred_original_sample", None)
    return predicted if predicted is not None else step_output.prev_sample


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """Images in [-1, 1], shaped (N, 3, H, W), as RGB PIL images."""
    array = ((images.float() * 0.5 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return [Image.fromarray(a) for a in array.permute(0, 2, 3, 1).cpu().numpy()]


class Previews:
    """Records the clean-sample estimate at the steps some job wants, then hands each job its own rows."""

    def __init__(self, rows: BatchRows, steps: int, decode: Decode) -> None:
        self.rows = rows
        self.decode = decode
        self.steps = {ticket: preview_steps(steps, ticket.job.preview_count) for ticket in rows.tickets}
        self.latest: torch.Tensor | None = None

    def record(self, step: int, output: Any) -> None:
        """A scheduler step's observer (``steps.after_each_step``)."""
        if any(step in self.steps[ticket] for ticket in self.rows.tickets):
            self.latest = predicted_clean(output)

    def keep_rows(self, keep: torch.Tensor) -> None:
        if self.latest is not None:
            self.latest = self.latest[keep]

    def emit(self, step: int) -> None:
        if self.latest is None:
            return
        for ticket, rows in self.rows.spans():
            chosen, on_preview = self.steps[ticket], ticket.control.on_preview
            if step in chosen and on_preview is not None:
                on_preview(chosen.index(step), to_pil(self.decode(self.latest[rows], rows)))
        self.latest = None
