"""The image endpoints' requests and responses: one field table each, typed requests that become jobs, answer bodies.

A request is parsed in two steps. ``parse`` checks what needs no model
(types, ranges, values). Once the serving layer knows the model, ``to_job``
checks what depends on it (size bounds, features, the OpenAI name's own
limits) and converts the request into the :class:`ImageJob` a backend runs.

The name a client asks for decides the answer's style (:data:`ApiStyle`):
``dall-e-2``, ``dall-e-3``, GPT image names, or ``easel`` for everything else
(local names, custom aliases), which answers like ``dall-e-2`` and accepts
every field. The fields and their meanings are listed in the README.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, replace
from typing import Any, Literal

from PIL import Image

from pipelines.base import ImageJob, ModelInfo, Task
from pipelines.presets import STYLE_DECODER_GUIDANCE_FACTOR, STYLES

from ..errors import invalid, missing_parameter
from .fields import (
    MAX_N,
    MAX_PROMPT_LENGTH,
    MODERATIONS,
    FieldReader,
    ImageOptions,
    RequestedSize,
    read_image_options,
    read_prompt,
    require_object,
)

ApiStyle = Literal["dall-e-2", "dall-e-3", "gpt-image", "easel"]

PROMPT_LIMITS: dict[ApiStyle, int] = {
    "dall-e-2": 1000,
    "dall-e-3": 4000,
    "gpt-image": MAX_PROMPT_LENGTH,
    "easel": MAX_PROMPT_LENGTH,
}
RANDOM_SEED_RANGE = 2**31
TASK_ENDPOINTS: dict[str, str] = {
    "generate": "image generations",
    "edit": "image edits",
    "variation": "image variations",
}
OUTPUT_TOKEN_PATCH = 8
GPT_IMAGE_QUALITY = {
    "low": "low",
    "medium": "medium",
    "high": "high",
    "standard": "medium",
    "auto": "medium",
    "hd": "high",
}

# -- field tables: what each endpoint accepts -------------------------------------------------------

EXTENSION_FIELDS = frozenset(
    {
        "seed", "negative_prompt", "prior_steps", "prior_guidance_scale", "decoder_steps", "decoder_guidance_scale",
        "decoder_guidance_min_timestep",
    }
)  # fmt: skip
GENERATION_FIELDS = frozenset(
    {
        "prompt", "model", "n", "size", "quality", "response_format", "output_format", "output_compression",
        "style", "background", "moderation", "user", "safety_identifier", "stream", "partial_images",
    }
) | EXTENSION_FIELDS  # fmt: skip
EDIT_FIELDS = frozenset(
    {
        "prompt", "model", "n", "size", "quality", "response_format", "output_format", "output_compression",
        "background", "moderation", "user", "safety_identifier", "stream", "partial_images",
    }
) | EXTENSION_FIELDS  # fmt: skip
VARIATION_FIELDS = frozenset(
    {
        "model", "n", "size", "response_format", "user", "safety_identifier",
        "quality", "output_format", "output_compression", "seed", "decoder_steps", "decoder_guidance_scale",
        "decoder_guidance_min_timestep",
    }
)  # fmt: skip
# Refused with a reason rather than as unknown: a variation starts from the image's own embedding.
NOT_FOR_VARIATIONS = {
    name: f"'{name}' does not apply to variations: they start from the image's own CLIP embedding, so no prompt "
    "is encoded and the prior does not run."
    for name in ("prompt", "negative_prompt", "prior_steps", "prior_guidance_scale")
}


def api_style_for(name: str) -> ApiStyle:
    if name == "dall-e-2":
        return "dall-e-2"
    if name == "dall-e-3":
        return "dall-e-3"
    if name.startswith(("gpt-image", "chatgpt-image")):
        return "gpt-image"
    return "easel"


@dataclass(frozen=True)
class UploadedBody:
    """An edit or variation body as sent: its text fields and its image files."""

    fields: dict[str, Any]  # everything but the images, for FieldReader
    form: bool  # multipart (string values) or JSON
    image_param: str  # "image" (multipart) or "images" (JSON)
    images: list[bytes]
    mask: bytes | None = None


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    style: str
    moderation: str
    options: ImageOptions

    @classmethod
    def parse(cls, body: Any) -> GenerationRequest:
        """Check a ``POST /v1/images/generations`` JSON body."""
        reader = FieldReader(require_object(body))
        reader.reject_unknown(GENERATION_FIELDS)
        return cls(
            prompt=read_prompt(reader),
            style=reader.choice("style", STYLES) or "vivid",
            moderation=reader.choice("moderation", MODERATIONS) or "auto",
            options=read_image_options(reader),
        )

    def to_job(self, info: ModelInfo, api_style: ApiStyle) -> ImageJob:
        check_for_model(self.options, self.prompt, api_style, info)
        check_stream_options(self.options)
        return _build_job("generate", self.options, info, prompt=self.prompt, style=self.style)


@dataclass(frozen=True)
class EditRequest:
    prompt: str
    options: ImageOptions
    size_from_input: bool  # no size or "auto": the input's own size
    image: bytes
    image_param: str
    mask: bytes | None

    @classmethod
    def parse(cls, body: UploadedBody) -> EditRequest:
        reader = FieldReader(body.fields, form=body.form)
        reader.reject_unknown(EDIT_FIELDS)
        prompt = read_prompt(reader)
        options = read_image_options(reader)
        reader.choice("moderation", MODERATIONS)  # checked; Easel runs no moderation model
        check_stream_options(options)
        if not body.images:
            raise missing_parameter(body.image_param)
        size_from_input = reader.raw("size") in (None, "auto")
        return cls(prompt, options, size_from_input, body.images[0], body.image_param, body.mask)

    def sized_for(self, image: Image.Image, info: ModelInfo) -> EditRequest:
        """This request with ``size`` settled: the decoded input's own size unless one was asked for."""
        return replace(self, options=_sized_for_input(self.options, image, info)) if self.size_from_input else self

    def to_job(self, info: ModelInfo, api_style: ApiStyle, image: Image.Image, mask: Image.Image) -> ImageJob:
        """A job for the decoded ``image`` and its repaint ``mask`` (mode "L", 255 = repaint)."""
        check_for_model(self.options, self.prompt, api_style, info)
        return _build_job("edit", self.options, info, prompt=self.prompt, image=image, mask=mask)


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
        if not body.images:
            raise missing_parameter("image")
        if len(body.images) > 1:
            raise invalid("image", f"Send one image; {len(body.images)} were sent.", code="invalid_value")
        return cls(options, reader.raw("size") == "auto", body.images[0])

    def sized_for(self, image: Image.Image, info: ModelInfo) -> VariationRequest:
        """This request with ``size`` settled: the decoded input's own size if ``auto`` was asked for."""
        return replace(self, options=_sized_for_input(self.options, image, info)) if self.size_from_input else self

    def to_job(self, info: ModelInfo, api_style: ApiStyle, image: Image.Image) -> ImageJob:
        check_for_model(self.options, None, api_style, info)
        return _build_job("variation", self.options, info, image=image)


def max_n_for(api_style: ApiStyle) -> int:
    """The most images one request may ask for under this model name (dall-e-3, like OpenAI's: one)."""
    return 1 if api_style == "dall-e-3" else MAX_N


def check_task(info: ModelInfo, task: Task) -> None:
    if task not in info.tasks:
        raise invalid(
            "model", f"Model '{info.name}' does not support {TASK_ENDPOINTS[task]}.", code="unsupported_model"
        )


def check_for_model(options: ImageOptions, prompt: str | None, api_style: ApiStyle, info: ModelInfo) -> None:
    """Checks that need the model: its bounds and features, and the OpenAI name's own limits."""
    if options.n > max_n_for(api_style):  # read_image_options caps n at MAX_N: only dall-e-3's limit is left
        message = "dall-e-3 only supports n=1 (as OpenAI's does); use a local model name for batches."
        raise invalid("n", message, code="invalid_value")
    if api_style == "gpt-image" and options.response_format == "url":
        raise invalid(
            "response_format",
            "response_format is not supported for GPT image models, which always return b64_json.",
            code="unsupported_value",
        )
    limit = PROMPT_LIMITS[api_style]
    if prompt is not None and len(prompt) > limit:
        message = f"Invalid 'prompt': string too long. Maximum length for this model is {limit} characters."
        raise invalid("prompt", message, code="string_above_max_length")
    size = options.size
    if not size.standard and not (
        info.min_side <= size.width <= info.max_side and info.min_side <= size.height <= info.max_side
    ):
        raise invalid(
            "size",
            f"Invalid size '{size.label}': width and height must each be between {info.min_side} and {info.max_side} "
            f"for model '{info.name}'.",
            code="invalid_value",
        )
    if options.negative_prompt is not None and not info.supports_negative_prompt:
        message = f"Model '{info.name}' does not support negative_prompt."
        raise invalid("negative_prompt", message, code="unsupported_value")
    if options.decoder_guidance_min_timestep is not None and not info.supports_guidance_interval:
        raise invalid(
            "decoder_guidance_min_timestep",
            f"Model '{info.name}' guides every decoder step; it does not support decoder_guidance_min_timestep.",
            code="unsupported_value",
        )
    if options.quality not in info.presets:
        message = f"Model '{info.name}' has no '{options.quality}' quality preset."
        raise invalid("quality", message, code="unsupported_value")


def check_stream_options(options: ImageOptions) -> None:
    if options.stream and options.response_format == "url":
        raise invalid(
            "response_format",
            "Streamed images are always sent as b64_json; omit response_format or set it to b64_json.",
            code="unsupported_value",
        )


def _sized_for_input(options: ImageOptions, image: Image.Image, info: ModelInfo) -> ImageOptions:
    width, height = info.size_for_input(image.width, image.height)
    return replace(options, size=RequestedSize(width, height, standard=False))


def _build_job(
    task: Task,
    options: ImageOptions,
    info: ModelInfo,
    *,
    prompt: str = "",
    style: str | None = None,
    image: Image.Image | None = None,
    mask: Image.Image | None = None,
) -> ImageJob:
    preset = info.presets[options.quality].adjusted(
        decoder_guidance_factor=STYLE_DECODER_GUIDANCE_FACTOR[style] if style is not None else 1.0,
        prior_steps=options.prior_steps,
        prior_guidance=options.prior_guidance_scale,
        decoder_steps=options.decoder_steps,
        decoder_guidance=options.decoder_guidance_scale,
        decoder_guidance_min_timestep=options.decoder_guidance_min_timestep,
    )
    first_seed = options.seed if options.seed is not None else secrets.randbelow(RANDOM_SEED_RANGE)
    width, height = info.native_size_for(options.size.width, options.size.height)
    return ImageJob(
        task=task,
        n=options.n,
        width=width,
        height=height,
        seeds=[first_seed + i for i in range(options.n)],
        preset=preset,
        prompt=prompt,
        negative_prompt=options.negative_prompt,
        image=image,
        mask=mask,
        preview_count=options.partial_images,  # non-zero only when streaming
    )


# -- answers -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FinishedImage:
    data: bytes  # encoded file
    seed: int
    url: str | None = None  # set when response_format is url


def output_image_tokens(native_width: int, native_height: int, n: int) -> int:
    """8x8-pixel patches of the image as generated (before resizing), times ``n``.

    For Kandinsky 2.2 that is exactly its number of latent positions. Ceiling
    division: a partial patch at an edge still costs a patch.
    """
    per_image = -(-native_width // OUTPUT_TOKEN_PATCH) * -(-native_height // OUTPUT_TOKEN_PATCH)
    return per_image * n


def usage(input_text_tokens: int, output_tokens: int, input_image_tokens: int = 0) -> dict[str, Any]:
    input_tokens = input_text_tokens + input_image_tokens
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"text_tokens": input_text_tokens, "image_tokens": input_image_tokens},
        "output_tokens": output_tokens,
        "output_tokens_details": {"image_tokens": output_tokens, "text_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def job_usage(job: ImageJob, prompt_tokens: int) -> dict[str, Any]:
    """A finished job's usage: the prompt's tokens, the input image's patches (edits, variations), n outputs'."""
    input_image_tokens = output_image_tokens(job.width, job.height, 1) if job.image is not None else 0
    return usage(prompt_tokens, output_image_tokens(job.width, job.height, job.n), input_image_tokens)


def images_response(
    *,
    created: int,
    images: list[FinishedImage],
    api_style: ApiStyle,
    prompt: str | None,
    options: ImageOptions,
    usage_block: dict[str, Any] | None,
) -> dict[str, Any]:
    """The JSON answer, in the style of the model name asked for; ``seed`` on each item is Easel's extension."""
    revised_prompt = prompt if api_style == "dall-e-3" else None  # Easel does not rewrite prompts
    body: dict[str, Any] = {"created": created, "data": [_image_item(image, revised_prompt) for image in images]}
    if api_style == "gpt-image":
        body.update(
            background="opaque",
            output_format=options.output_format,
            quality=GPT_IMAGE_QUALITY[options.quality],
            size=options.size.label,
            usage=usage_block,
        )
    return body


def _image_item(image: FinishedImage, revised_prompt: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {}
    if image.url is not None:
        item["url"] = image.url
    else:
        item["b64_json"] = base64_text(image.data)
    if revised_prompt is not None:
        item["revised_prompt"] = revised_prompt
    item["seed"] = image.seed
    return item


def base64_text(data: bytes) -> str:
    """``data`` as the base64 text of a ``b64_json`` field."""
    return base64.b64encode(data).decode("ascii")
