"""Make saved UnCLIP (Karlo) pipelines loadable on diffusers >= 0.38.

Since 0.38 UnCLIP lives in ``diffusers.pipelines.deprecated.unclip``. The
pipeline loader decides whether the library named in ``model_index.json`` is a
pipeline module by looking it up as an attribute of ``diffusers.pipelines``,
where ``unclip`` no longer exists, so:

* Karlo's published index, which names the text projection
  ``["unclip", "UnCLIPTextProjModel"]``, fails to load;
* a pipeline saved by 0.38+ names it ``["diffusers", "UnCLIPTextProjModel"]``,
  and the class is not exported at the top level, so that fails too.

Registering the deprecated module as ``diffusers.pipelines.unclip`` and the
class as ``diffusers.UnCLIPTextProjModel`` makes both layouts load; once the
module is registered, ``save_pretrained`` writes the ``unclip`` form again,
the same as the published Karlo checkpoint.
"""

from __future__ import annotations

import diffusers
import diffusers.pipelines
from diffusers.pipelines.deprecated import unclip as _deprecated_unclip

UnCLIPPipeline = _deprecated_unclip.UnCLIPPipeline
UnCLIPImageVariationPipeline = _deprecated_unclip.UnCLIPImageVariationPipeline
UnCLIPTextProjModel = _deprecated_unclip.UnCLIPTextProjModel


def register_unclip_for_loading() -> None:
    """Put the deprecated UnCLIP module and text projection class where the loader looks (idempotent)."""
    if not hasattr(diffusers.pipelines, "unclip"):
        diffusers.pipelines.unclip = _deprecated_unclip
    if not hasattr(diffusers, "UnCLIPTextProjModel"):
        diffusers.UnCLIPTextProjModel = UnCLIPTextProjModel


register_unclip_for_loading()
