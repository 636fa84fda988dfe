"""What ``easel generate/edit/vary`` send, wherever the model runs: the request, and the one-line error.

:mod:`cli.images` reads the command line into a :class:`Request`; :mod:`cli.local`
and :mod:`cli.remote` run it, and report what goes wrong as a :class:`CommandError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipelines.tasks import Task


class CommandError(Exception):
    """A mistake or failure to report as one line; ``param`` is the API field it concerns, if any."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Request:
    """What to send: the task, the API fields, and the input files (edits and variations)."""

    task: Task
    fields: dict[str, Any]
    image: bytes | None = None
    mask: bytes | None = None

    @property
    def seed(self) -> int:
        return int(self.fields["seed"])
