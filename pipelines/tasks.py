"""What a job does: the one task type of the endpoints, the jobs, the backends' declarations and the command line."""

from __future__ import annotations

from enum import Enum


class Task(str, Enum):
    """A task. It compares, hashes, encodes to JSON and reads in every message as its value: ``Task.EDIT == "edit"``,
    ``f"{Task.EDIT!r}" == "'edit'"``, so answers, log lines and error texts name a task as its plain string would."""

    GENERATE = "generate"
    VARIATION = "variation"
    EDIT = "edit"

    def __str__(self) -> str:  # as 3.11's StrEnum, which Python 3.10 lacks
        return self.value

    def __repr__(self) -> str:
        return repr(self.value)
