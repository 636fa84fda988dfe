"""One model to serve: a name clients use, a model family, a weights directory, and where it came from.

The one record for a model before it loads, whichever way it was named: a registry entry
(:mod:`weights.registry`), ``NAME=FAMILY:PATH`` or a bare registered name in the server's settings
(:mod:`server.settings.model_specs`). It sits here, below the server and the model code, because ``easel pull``
reads and writes registries while the hub is online, where neither may be imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ModelSpec:
    """One model to load: a name clients use, its family, and a weights directory."""

    name: str
    family: str  # "kandinsky22" | "karlo" (pipelines.model_config.FAMILIES)
    path: Path  # absolute
    presets: str | None = None  # a quality table in pipelines.presets; None: the family's
    owned_by: str = "easel"
    quantize: str | None = None  # easel.toml's [models.NAME] quantize; None: --quantize
    step_cache: int | None = None  # easel.toml's [models.NAME] step_cache; None: --step-cache
    entry: str = field(default="", compare=False)  # the easel.toml table that set quantize or step_cache
    # Where it was configured or its weights came from (the hub repositories and commits it was pulled from), for
    # messages and `easel models`; not part of what the model is.
    source: str = field(default="", compare=False)
