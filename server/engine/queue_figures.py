"""A model's queue figures as every engine keeps them, and the turns for jobs a full queue turned away: when each
should come back."""

from __future__ import annotations

import random
from typing import Any

FIRST_IMAGE_SECONDS_GUESS = 2.0  # Retry-After basis before any image has been timed
AVERAGE_WEIGHT = 0.3  # weight of the newest figure in the moving average of seconds per image


class RejectionTurns:
    """Rejected jobs get turns at the rate the model serves images (its measured seconds per image)."""

    seconds_per_image: float | None
    turns_until: float  # when the turns handed to rejected jobs run out (monotonic; see turn_for)

    def turn_for(self, now: float, backlog_images: int, images: int, *, slots: int) -> float:
        """Seconds until a rejected job of ``images`` should come back: rejected jobs get turns at the rate
        the model serves images.

        The first turn starts once the ``backlog_images`` waiting now are served; each
        rejection takes the next turn (its images at the measured seconds per image,
        per slot) and comes back at a random point within it, so rejected clients
        return spread out rather than all at once into a queue that is full again.
        """
        per_image = self.seconds_per_image or FIRST_IMAGE_SECONDS_GUESS
        slots = max(1, slots)
        start = max(self.turns_until, now + backlog_images * per_image / slots)
        turn = images * per_image / slots
        self.turns_until = start + turn
        return max(0.05, start - now + random.uniform(0.0, turn))


class QueueFigures(RejectionTurns):
    """A model's figures as every engine keeps them: jobs by outcome, seconds per image, turns for rejected jobs."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.completed = 0
        self.failed = 0
        self.cancelled = 0
        self.seconds_per_image: float | None = None  # a moving average
        self.turns_until = 0.0  # when the turns handed to rejected jobs run out (monotonic; see turn_for)

    def record(self, seconds: float, images: int) -> None:
        """A pipeline call (or a job) that made ``images`` in ``seconds``."""
        per_image = seconds / max(images, 1)
        if self.seconds_per_image is None:
            self.seconds_per_image = per_image
        else:
            self.seconds_per_image += AVERAGE_WEIGHT * (per_image - self.seconds_per_image)

    def figures(self, *, queued: int, running: int) -> dict[str, Any]:
        """The figures ``Engine.stats`` answers with."""
        return {
            "queued": queued,
            "running": running,
            "queue_size": self.capacity,
            "completed": self.completed,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "average_seconds": None if self.seconds_per_image is None else round(self.seconds_per_image, 3),
        }
