"""Engine figures measured on a model replica, carried to the ingress with each job's answer.

A pipeline call runs on a model replica, so the figures taken inside it
(queue wait, images per call, stage seconds, busy seconds, non-finite outputs, requeued batch lines) are
measured there,
in a process no scrape reaches. The replica's engine records them into a
:class:`FigureLog`; every message that ends a job takes what has been recorded
since the last one (:meth:`FigureLog.drain`), and the ingress that receives it
replays it on its own metrics (:func:`replay`). Each figure thus reaches one
ingress exactly once, and ``GET /metrics`` answers the same names as plain
serving. Images made and jobs cancelled are counted by the ingress itself
(:class:`server.scaleout.engine.RemoteModel`), so the replica's are not sent.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import fields
from typing import Any

from ..engine.base import EngineMetrics

Figure = tuple[str, tuple[str, ...], str, float]  # EngineMetrics field, label values, "observe" or "inc", value
FORWARDED = ("queue_wait", "batch_images", "stage_seconds", "busy_seconds", "nonfinite", "requeued")
# Figures wait here only while no job ends on this replica (its clients all left); past this many, the
# oldest go, so a replica nobody asks for answers cannot grow without bound.
MAX_WAITING_FIGURES = 10_000


class FigureLog:
    """Figures recorded by a replica's worker threads, waiting for the next message that ends a job."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._figures: list[Figure] = []

    def metrics(self) -> EngineMetrics:
        """An EngineMetrics for the replica's engine that records into this log."""
        recorders = {
            field.name: _Recorder(self, field.name) if field.name in FORWARDED else _Ignored()
            for field in fields(EngineMetrics)
        }
        return EngineMetrics(**recorders)

    def add(self, figure: Figure) -> None:
        with self._lock:
            self._figures.append(figure)
            del self._figures[:-MAX_WAITING_FIGURES]

    def drain(self) -> list[Figure]:
        with self._lock:
            taken, self._figures = self._figures, []
        return taken


def replay(figures: Iterable[Figure], metrics: EngineMetrics) -> None:
    """Record figures drained on a replica into this process's metrics."""
    for field, labels, operation, value in figures:
        if field in FORWARDED and operation in ("observe", "inc"):
            getattr(getattr(metrics, field).labels(*labels), operation)(value)


class _Recorder:
    """Stands for one prometheus-client metric: ``.labels(...).observe(v)`` or ``.inc(v)`` land in the log."""

    def __init__(self, log: FigureLog, field: str) -> None:
        self._log = log
        self._field = field

    def labels(self, *values: str) -> _Series:
        return _Series(self._log, self._field, tuple(str(value) for value in values))


class _Series:
    def __init__(self, log: FigureLog, field: str, labels: tuple[str, ...]) -> None:
        self._log = log
        self._field = field
        self._labels = labels

    def observe(self, value: float) -> None:
        self._log.add((self._field, self._labels, "observe", float(value)))

    def inc(self, value: float = 1.0) -> None:
        self._log.add((self._field, self._labels, "inc", float(value)))


class _Ignored:
    """A metric the ingress counts itself."""

    def labels(self, *values: Any) -> _Ignored:
        return self

    def observe(self, value: float) -> None:
        pass

    def inc(self, value: float = 1.0) -> None:
        pass
