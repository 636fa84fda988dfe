"""huggingface_hub: offline mode for every process that loads a model.

Easel's model code never goes online; ``easel pull`` is the one command that downloads, and it never loads a
model. The hub reads ``HF_HUB_OFFLINE`` once, when it is imported, into ``huggingface_hub.constants``, which its
offline check reads on every request. :func:`go_offline` sets the variable (unless it is set already: an explicit
choice is kept) and, for a hub imported before the load, the constant from it.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from .versions import VersionRange, check

TESTED = VersionRange("huggingface_hub", "1.32", "3", "huggingface_hub.constants.HF_HUB_OFFLINE", __name__)
TRUE_WORDS = ("1", "on", "yes", "true")  # what the hub reads as true


def go_offline() -> None:
    """Put the hub in offline mode for this process, before a model loads (idempotent)."""
    check(TESTED)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    constants: Any = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = os.environ["HF_HUB_OFFLINE"].strip().lower() in TRUE_WORDS
