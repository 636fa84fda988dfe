"""Turns for jobs a full queue turned away: when each should come back (every engine's models share it)."""

from __future__ import annotations

import random

FIRST_IMAGE_SECONDS_GUESS = 2.0  # Retry-After basis before any image has been timed


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
