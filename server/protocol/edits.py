"""Edits and variations: the requests that start from an uploaded image, and the jobs they become.

Parsed like generations (:mod:`server.protocol.images`), in two steps: the
body's own checks, then, once the input is decoded and the model known, the
size settled from the input and the model's checks.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from PIL import Image

from pipelines.base import ImageJob, ModelInfo, Task

from ..http.errors import invalid, missing_parameter
from . import tables as t
from .fields import FieldReader, RequestedSize, read_prompt
from .images import ApiStyle, ImageOptions, build_job, check_for_model, check_stream_options, read_image_options

EDIT_FIELDS = t.names(t.EDIT)
VARIATION_FIELDS = t.names(t.VARIATION)
# Refused with a reason rather than as unknown: a variation starts from the image's own embedding.
NOT_FOR_VARIATIONS = {
    name: f"'{name}' does not apply to variations: they start from the image's own CLIP embedding, so no prompt "
    "is encoded and the prior does not run."
    for name in ("prompt", "negative_prompt", "prior_steps", "prior_guidance_scale", "complexity")
}
GIF_FOR_GENERATIONS_ONLY = (
    "output_format 'gif' is made for generations only: its frames walk between two prior samples of a prompt, "
    "and {what}. Use png, jpeg, webp or svg."
)


@dataclass(frozen=True)
class UploadedBody:
    """An edit or variation body as sent: its text fields and its image files."""

    fields: dict[str, Any]  # everything but the images, for FieldReader
    form: bool  # multipart (string values) or JSON
    image_param: str  # "image" (multipart) or "images" (JSON)
    images: list[bytes]
    mask: bytes | None = None
    markup: bytes | None = None


@dataclass(frozen=True)
class InputMix:
    """How an edit's inputs steer it: the mix weights, and where a whole-image edit's decoder starts."""

    fidelity: t.InputFidelity
    image_weight: float | None = None  # input_image_weight as sent (None: input_fidelity's)
    strength: float | None = None  # strength as sent (None: input_fidelity's)
    image_weights: tuple[float, ...] | None = None  # per input image, as sent

    def for_edit(self, whole_image: bool, from_input: bool = True) -> tuple[float, float]:
        """(strength, input image weight): a masked edit keeps its long-standing mix and ignores strength; a
        whole-image edit on a model that cannot start from the input (``from_input`` false) is the mix alone."""
        strength, weight = t.WHOLE_EDIT_FIDELITY[self.fidelity]
        if not whole_image:
            strength, weight = 1.0, t.INPUT_FIDELITY_WEIGHTS[self.fidelity]
        elif not from_input:
            strength, weight = 1.0, t.MIX_ONLY_EDIT_FIDELITY[self.fidelity]
        chosen_strength = strength if self.strength is None else self.strength
        return chosen_strength, weight if self.image_weight is None else self.image_weight


@dataclass(frozen=True)
class EditRequest:
    prompt: str
    options: ImageOptions
    size_from_input: bool  # no size or "auto": the input's own size
    images: tuple[bytes, ...]  # the first is edited, the others are references
    image_param: str
    mask: bytes | None
    markup: bytes | None = None
    mix: InputMix = InputMix("low")

    @property
    def image(self) -> bytes:
        return self.images[0]

    @classmethod
    def parse(cls, body: UploadedBody) -> EditRequest:
        reader = FieldReader(body.fields, form=body.form)
        reader.reject_unknown(EDIT_FIELDS)
        prompt = read_prompt(reader)
        options = read_image_options(reader)
        reader.read(t.MODERATION)  # checked; Easel runs no moderation model
        mix = read_input_mix(reader, len(body.images))
        check_stream_options(options)
        if options.output_format == "gif":
            what = "an edit repaints one image in place"
            raise invalid("output_format", GIF_FOR_GENERATIONS_ONLY.format(what=what), code="unsupported_value")
        if not body.images:
            raise missing_parameter(body.image_param)
        if body.markup is not None and body.mask is not None:
            message = "markup cannot be combined with mask: both mark the area to repaint. Send one of them."
            raise invalid("markup", message, code="invalid_value")
        size_from_input = reader.raw("size") in (None, "auto")
        images = tuple(body.images)
        return cls(prompt, options, size_from_input, images, body.image_param, body.mask, body.markup, mix)

    def sized_for(self, image: Image.Image, info: ModelInfo) -> EditRequest:
        """This request with ``size`` settled: the decoded input's own size unless one was asked for."""
        return replace(self, options=sized_for_input(self.options, image, info)) if self.size_from_input else self

    def to_job(
        self,
        info: ModelInfo,
        api_style: ApiStyle,
        images: list[Image.Image],
        mask: Image.Image | None,
    ) -> ImageJob:
        """A job for the decoded ``images`` (the first edited) and its repaint ``mask`` (mode "L", 255 = repaint;
        None: the whole image is edited)."""
        check_for_model(self.options, self.prompt, api_style, info)
        self._check_edit_mode(info, masked=mask is not None)
        if mask is not None and self.mix.strength is not None:
            message = (
                "'strength' applies to whole-image edits only; this edit marks an area to repaint (a mask, markup "
                "or transparent pixels), which is generated from noise."
            )
            raise invalid("strength", message, code="unsupported_value")
        strength, weight = self.mix.for_edit(whole_image=mask is None, from_input=info.edit_strength)
        job = build_job(
            Task.EDIT, self.options, info, prompt=self.prompt, image=images[0], mask=mask, input_image_weight=weight
        )
        return replace(job, references=images[1:], strength=strength, image_weights=self.mix.image_weights)

    def _check_edit_mode(self, info: ModelInfo, masked: bool) -> None:
        """Refuse what this model's edits cannot do: a marked area, or a strength it has no use for."""
        if masked and "masked" not in info.edit_modes:
            param = "mask" if self.mask is not None else "markup" if self.markup is not None else self.image_param
            message = (
                f"Model '{info.name}' repaints the whole image only: it cannot edit an area marked by a mask, "
                "markup or transparent pixels. Send an opaque image without a mask or markup."
            )
            raise invalid(param, message, code="unsupported_value")
        if self.mix.strength is not None and not info.edit_strength:
            message = (
                f"'strength' does not apply to model '{info.name}': it has no image-to-image decoder path, so a "
                "whole-image edit decodes from noise, steered by the input images' CLIP embedding "
                "(input_fidelity or input_image_weight)."
            )
            raise invalid("strength", message, code="unsupported_value")


def read_input_mix(reader: FieldReader, image_count: int) -> InputMix:
    """input_fidelity and the extensions that override it, checked against the number of input images."""
    fidelity = reader.read(t.INPUT_FIDELITY)
    strength = reader.read(t.STRENGTH)
    if strength is not None and strength <= 0:
        message = "Invalid 'strength': expected a number above 0 and at most 1 (1 starts the decoder from noise)."
        raise invalid("strength", message, code="invalid_value")
    weights = reader.read(t.IMAGE_WEIGHTS)
    if weights is not None:
        if len(weights) != image_count:
            message = f"'image_weights' has {len(weights)} weights for {image_count} images: send one per image."
            raise invalid("image_weights", message, code="invalid_value")
        if sum(weights) <= 0:
            raise invalid("image_weights", "'image_weights' must not all be 0.", code="invalid_value")
    image_weights = None if weights is None else tuple(weights)
    return InputMix(fidelity, reader.read(t.INPUT_IMAGE_WEIGHT), strength, image_weights)


@dataclass(frozen=True)
class VariationRequest:
    options: ImageOptions
    size_from_input: bool  # "auto": the input's own size (default: 1024x1024, as OpenAI's)
    image: bytes

    @classmethod
    def parse(cls, body: UploadedBody) -> VariationRequest:
        for name in body.fields:
            if name in NOT_FOR_VARIATIONS:
                raise invalid(name, NOT_FOR_VARIATIONS[name], code="unsupported_value")
        reader = FieldReader(body.fields, form=True)
        reader.reject_unknown(VARIATION_FIELDS)
        options = read_image_options(reader)
        if options.output_format == "gif":
            what = "a variation has no prompt"
            raise invalid("output_format", GIF_FOR_GENERATIONS_ONLY.format(what=what), code="unsupported_value")
        if not body.images:
            raise missing_parameter("image")
        if len(body.images) > 1:
            raise invalid("image", f"Send one image; {len(body.images)} were sent.", code="invalid_value")
        return cls(options, reader.raw("size") == "auto", body.images[0])

    def sized_for(self, image: Image.Image, info: ModelInfo) -> VariationRequest:
        """This request with ``size`` settled: the decoded input's own size if ``auto`` was asked for."""
        return replace(self, options=sized_for_input(self.options, image, info)) if self.size_from_input else self

    def to_job(self, info: ModelInfo, api_style: ApiStyle, image: Image.Image) -> ImageJob:
        check_for_model(self.options, None, api_style, info)
        return build_job(Task.VARIATION, self.options, info, image=image)


def sized_for_input(options: ImageOptions, image: Image.Image, info: ModelInfo) -> ImageOptions:
    width, height = info.size_for_input(image.width, image.height)
    return replace(options, size=RequestedSize(width, height, standard=False))
