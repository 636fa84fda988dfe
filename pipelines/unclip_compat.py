"""The UnCLIP (Karlo) classes, which diffusers >= 0.38 keeps in ``diffusers.pipelines.deprecated.unclip``.

Loading or saving a pipeline in the published layout also needs :func:`patches.diffusers.register_unclip`, which
Karlo's loading and the tiny Karlo's saving call.
"""

from __future__ import annotations

from diffusers.pipelines.deprecated import unclip as _deprecated_unclip

UnCLIPPipeline = _deprecated_unclip.UnCLIPPipeline
UnCLIPImageVariationPipeline = _deprecated_unclip.UnCLIPImageVariationPipeline
UnCLIPTextProjModel = _deprecated_unclip.UnCLIPTextProjModel
