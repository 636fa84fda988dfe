"""Names in the hub's 2022-23 repositories that today's libraries no longer export.

Kandinsky 2.2's and Karlo's published ``model_index.json`` files, and their
processors' ``preprocessor_config.json``, may name the image processor
``CLIPFeatureExtractor``, the class transformers renamed to
``CLIPImageProcessor`` and (in version 5) removed. The pipeline loader looks
the named class up as an attribute of ``transformers``, so the old name is
put back there, as an alias of the processor Easel uses (the PIL-backed one,
which needs no torchvision). Karlo's legacy ``unclip`` module name is handled
by :mod:`pipelines.unclip_compat`.
"""

from __future__ import annotations

import transformers

from .unclip_compat import register_unclip_for_loading

try:  # transformers 5: the PIL-backed processor, which needs no torchvision
    from transformers import CLIPImageProcessorPil as CLIPImageProcessor
except ImportError:  # transformers 4
    from transformers import CLIPImageProcessor

LEGACY_PROCESSOR_NAMES = ("CLIPFeatureExtractor",)


def register_legacy_names() -> None:
    """Make every legacy name the 2023 repositories use resolvable (idempotent)."""
    for legacy in LEGACY_PROCESSOR_NAMES:
        if not _exports(legacy):
            setattr(transformers, legacy, CLIPImageProcessor)
    register_unclip_for_loading()


def _exports(name: str) -> bool:
    try:
        return getattr(transformers, name, None) is not None
    except (ImportError, AttributeError):  # transformers' lazy module raises for removed names on some versions
        return False
