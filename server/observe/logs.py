"""Logging for the server process: one format for Easel and uvicorn, and quiet libraries.

``--log-format text`` writes ``TIME LEVEL LOGGER: MESSAGE`` lines; ``json`` one
JSON object a line with the same fields plus any structured ones a record
carries (the access log's ``request_id``, ``method``, ``path``, ``status``,
``duration_ms``, ``model``, ``error``). uvicorn's own loggers go through the same
handler, and its access log is replaced by :class:`server.http.access_log.AccessLogMiddleware`.

Model libraries print warnings that say nothing to an operator (a missing
torchvision or accelerate, deprecations) and loading progress bars. Unless
``--log-level debug`` is asked for, their loggers are set to errors only and
tqdm is disabled, through the environment variables they read at import time
(the server never imports them itself); variables already set are kept.
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
import sys
import time
import warnings
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
ACCESS_FIELDS = ("request_id", "method", "path", "status", "duration_ms", "model", "error")
QUIET_LIBRARIES = {
    "DIFFUSERS_VERBOSITY": "error",
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TQDM_DISABLE": "1",  # tqdm >= 4.66 reads its defaults from TQDM_* variables
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}
NOISY_WARNING_MODULES = r"(torch|torchvision|diffusers|transformers|huggingface_hub|accelerate|safetensors)(\..*)?"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, the access fields, and a traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ACCESS_FIELDS:
            if name in record.__dict__:
                entry[name] = record.__dict__[name]
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class OncePerInterval(logging.Filter):
    """Let through one record per ``seconds`` of those whose message starts with ``prefix``; the rest are counted.

    When the process runs out of file descriptors, asyncio logs every failed ``accept()`` with a traceback:
    tens of thousands of lines a second. One a second says the same.
    """

    def __init__(self, prefix: str, seconds: float = 1.0) -> None:
        super().__init__()
        self.prefix = prefix
        self.seconds = seconds
        self.last = -seconds
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.prefix):
            return True
        now = time.monotonic()
        if now - self.last < self.seconds:
            self.dropped += 1
            return False
        self.last = now
        if self.dropped:
            record.msg = f"{record.msg} ({self.dropped} more like it in the last seconds were not logged)"
            self.dropped = 0
        record.exc_info = None  # the traceback is the same every time
        return True


def logging_config(level: str, log_format: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the whole process: one stderr handler that every logger uses."""
    formatter: dict[str, Any] = {"()": JsonFormatter} if log_format == "json" else {"format": TEXT_FORMAT}
    uvicorn = {"handlers": [], "propagate": True}  # through the root handler, in the same format
    loggers = {name: dict(uvicorn) for name in ("uvicorn", "uvicorn.error", "uvicorn.access")}
    if level != "debug":  # httpx logs each request's full URL, tokens in it too; webhooks log their own lines
        loggers["httpx"] = {"level": "WARNING"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"easel": formatter},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "easel", "stream": sys.stderr}},
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": loggers,
    }


def configure_logging(level: str, log_format: str) -> None:
    """Set up the process's logging (call before uvicorn runs, and run uvicorn with ``log_config=None``)."""
    if level != "debug":
        for name, value in QUIET_LIBRARIES.items():
            os.environ.setdefault(name, value)
        for category in (DeprecationWarning, FutureWarning, UserWarning):
            warnings.filterwarnings("ignore", category=category, module=NOISY_WARNING_MODULES)
    logging.captureWarnings(True)  # what warnings remain are log lines in the same format
    logging.config.dictConfig(logging_config(level, log_format))
    logging.getLogger("asyncio").addFilter(OncePerInterval("socket.accept() out of system resource"))
