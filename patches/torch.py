"""torch: Inductor's on-disk cache of compiled graphs, switched on through its private settings module.

``torch._inductor.config`` is where torch's own compile-caching guide sets ``fx_graph_cache``; the module is
private, so the setting is made here, behind the version check.
"""

from __future__ import annotations

import os
from pathlib import Path

from .versions import VersionRange, check

TESTED = VersionRange("torch", "2.11", "2.15", "torch._inductor.config.fx_graph_cache", __name__)


def cache_compiled_graphs(directory: Path) -> None:
    """Keep Inductor's caches (FX graphs, Triton kernels) in ``directory``, which survives restarts."""
    check(TESTED)
    import torch._inductor.config as inductor_config

    # Inductor reads the variable on every cache lookup; its default lives in /tmp, lost on reboot.
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(directory)
    inductor_config.fx_graph_cache = True
