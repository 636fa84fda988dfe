"""What a model directory says about itself without loading it: licence, parameters, stored dtypes, size on disk.

``/v1/models`` and ``easel models`` show these next to OpenAI's fields.
Parameters and dtypes come from the weight files' headers
(:mod:`weights.footprint`: safetensors headers, ``.bin`` pickles read onto
the meta device), the licence from ``easel.json`` (``easel pull`` writes the
model card's; the shipped easel-mini's is the project's MIT).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.model_config import read_easel_config
from weights.footprint import FLOATING, model_footprint


@dataclass(frozen=True)
class ModelFacts:
    license: str | None  # the hub's licence id ("apache-2.0"); None: the directory does not say
    parameters: int
    stored_dtypes: tuple[str, ...]  # floating-point dtypes the weights are stored in, e.g. ("float16", "float32")
    disk_bytes: int  # every file in the directory

    def as_json(self) -> dict[str, Any]:
        return {
            "license": self.license,
            "parameters": self.parameters,
            "stored_dtypes": list(self.stored_dtypes),
            "disk_bytes": self.disk_bytes,
        }


def model_facts(path: Path) -> ModelFacts:
    """Read from ``path``'s files; raises OSError or ValueError for a directory that is not a readable model."""
    footprint = model_footprint(path)
    return ModelFacts(
        license=read_easel_config(path).license,
        parameters=footprint.parameters,
        stored_dtypes=tuple(dtype for dtype in footprint.stored_dtypes if dtype in FLOATING),
        disk_bytes=sum(file.stat().st_size for file in path.rglob("*") if file.is_file()),
    )
