"""Why a backend returns no images for a job: each is a job's outcome, and the server's error table answers it.

A ``ValueError`` from a backend is a job it refuses (its input, not a bug: a 400); these are the rest.
"""

from __future__ import annotations


class Cancelled(Exception):
    """Raised inside a backend when a job's ``JobControl.should_cancel`` turns true between steps."""


class NonFiniteOutput(Exception):
    """A stage's output held NaN or infinite values (damaged weights, or a dtype that overflows): the job fails."""

    def __init__(self, model: str, stage: str) -> None:
        super().__init__(
            f"Model '{model}' produced NaN or infinite values in its {stage} stage, so it has no image to return. "
            "Its weights may be damaged, or its dtype may overflow for this input (try --dtype float32)."
        )
        self.model = model
        self.stage = stage


class MissingComponent(Exception):
    """The model directory lacks something a task needs (e.g. Karlo's image encoder).

    The message says what is missing and how to get it; the server answers 400.
    """
