"""diffusers: what Easel changes in it, and the private attribute its guidance stop writes.

* :func:`register_unclip`: since 0.38 UnCLIP (Karlo) lives in ``diffusers.pipelines.deprecated.unclip``. The
  pipeline loader decides whether a library named in ``model_index.json`` is a pipeline module by looking it up
  as an attribute of ``diffusers.pipelines``, where ``unclip`` no longer exists, so Karlo's published index
  (``["unclip", "UnCLIPTextProjModel"]``) fails to load; a pipeline saved by 0.38+ names
  ``["diffusers", "UnCLIPTextProjModel"]``, which is not exported at the top level, so that fails too.
  Registering the module and the class where the loader looks makes both layouts load, and makes
  ``save_pretrained`` write the ``unclip`` form again, the same as the published checkpoint.
* :func:`prepare_inpaint_masks_with`: the Kandinsky 2.2 inpaint decoder's ``prepare_mask`` is a module function
  with a Python loop over every pixel; Easel puts a vectorised equal in its place, for the whole process.
* :func:`stop_guidance`: diffusers' dynamic-guidance recipe sets the pipeline's private ``_guidance_scale`` from a
  step callback; its loop reads it every step. There is no public setter.

The functions a model load calls check the version first; :func:`stop_guidance` runs every denoising step, so it
relies on that check (:func:`check_tested`, called when a Kandinsky backend is built).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .versions import VersionRange, check

TESTED = VersionRange(
    "diffusers",
    "0.42",
    "0.43",
    "diffusers.pipelines.unclip's old place, the Kandinsky 2.2 inpaint module's prepare_mask and a pipeline's "
    "_guidance_scale",
    __name__,
)


def check_tested() -> None:
    """Raise :class:`~patches.versions.UntestedVersion` unless the installed diffusers is a tested one."""
    check(TESTED)


def register_unclip() -> None:
    """Put the deprecated UnCLIP module and its text projection class where the pipeline loader looks
    (idempotent)."""
    check(TESTED)
    import diffusers
    import diffusers.pipelines
    from diffusers.pipelines.deprecated import unclip

    if not hasattr(diffusers.pipelines, "unclip"):
        diffusers.pipelines.unclip = unclip
    if not hasattr(diffusers, "UnCLIPTextProjModel"):
        diffusers.UnCLIPTextProjModel = unclip.UnCLIPTextProjModel


def prepare_inpaint_masks_with(prepare_mask: Callable[[Any], Any]) -> None:
    """Make the Kandinsky 2.2 inpaint decoder prepare its masks with ``prepare_mask``, process-wide (idempotent)."""
    check(TESTED)
    from diffusers.pipelines.kandinsky2_2 import pipeline_kandinsky2_2_inpainting

    pipeline_kandinsky2_2_inpainting.prepare_mask = prepare_mask


def stop_guidance(pipe: Any) -> None:
    """From the next denoising step on, ``pipe`` runs unguided: its loop and ``do_classifier_free_guidance`` read
    the scale every step. Call it from a step callback."""
    pipe._guidance_scale = 1.0
