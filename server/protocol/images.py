"""The image endpoints' shared fields, the generation request, the job it becomes, what its answer may cost, and
the answer bodies.

``parse`` checks what needs no model (types, ranges, values, one field against another); once the serving layer knows
the model, ``to_job`` checks what depends on it and builds the :class:`ImageJob` a backend runs. Each field is read by
its row in :mod:`server.protocol.tables`; edits and variations are :mod:`server.protocol.edits`. The name a client
asks for decides the answer's style (:data:`ApiStyle`): ``dall-e-2``, ``dall-e-3``, GPT image names, or ``easel``
for everything else (local names, custom aliases), which answers like ``dall-e-2`` and accepts every field. The
fields are listed in docs/api.md and docs/reference/fields.md.
"""

from __future__ import annotations

import base64
import math
import re
import secrets
from dataclasses import dataclass, replace
from typing import Any, Literal

from PIL import Image

from pipelines.base import ImageJob, ModelInfo, Task
from pipelines.presets import STYLE_DECODER_GUIDANCE_FACTOR, Complexity, Quality, Style

from ..http.errors import invalid
from . import tables as t
from .fields import FieldReader, RequestedSize, parse_size, read_prompt, require_object

ApiStyle = Literal["dall-e-2", "dall-e-3", "gpt-image", "easel"]

RANDOM_SEED_RANGE = 2**31
# Any current or future OpenAI image model name: gpt-image-2.6-flare, chatgpt-image-latest, a dated snapshot.
OPENAI_IMAGE_NAME = re.compile(r"(gpt-image|chatgpt-image)(-[a-z0-9][a-z0-9.]*){1,6}")
GENERATION_FIELDS = t.names(t.GENERATION)


def api_style_for(name: str) -> ApiStyle:
    if name == "dall-e-2":
        return "dall-e-2"
    if name == "dall-e-3":
        return "dall-e-3"
    if name.startswith(("gpt-image", "chatgpt-image")):
        return "gpt-image"
    return "easel"


def is_openai_image_name(name: str) -> bool:
    """Whether ``name`` is an OpenAI image model name by its form, known today or not."""
    return len(name) <= 64 and OPENAI_IMAGE_NAME.fullmatch(name) is not None


@dataclass(frozen=True)
class ImageOptions:
    """Fields every image endpoint shares: which model, how many, what size, how to return them."""

    model: str | None
    n: int
    size: RequestedSize
    quality: Quality
    complexity: Complexity | None  # None: the quality preset's prior settings
    response_format: t.ResponseFormat | None  # None: the model name's default (url, or b64_json for GPT image names)
    output_format: t.OutputFormat
    output_compression: int  # 0-100; 100 for png, gif and svg
    frames: int  # gif: frames per image; 1 otherwise
    frame_duration_ms: int  # gif: each frame's delay, a multiple of 10
    trace_detail: str | None  # svg: the tracing effort; None otherwise
    background: t.Background
    user: str | None  # user, or the safety identifier when no user was sent (logs)
    safety_identifier: str | None  # OpenAI's rule: a non-empty safety_identifier, else a non-empty user
    stream: bool
    partial_images: int
    seed: int | None  # None: a random seed per request
    negative_prompt: str | None
    prior_steps: int | None
    prior_guidance_scale: float | None
    decoder_steps: int | None
    decoder_guidance_scale: float | None
    decoder_guidance_min_timestep: int | None
    decoder_step_cache: int | None  # None: the model's own (--step-cache)


def read_image_options(reader: FieldReader) -> ImageOptions:
    """Read and check the shared fields; checks that need the model come later (:func:`check_for_model`)."""
    model = reader.read(t.MODEL)
    if model is not None and not model.strip():
        raise invalid("model", "Invalid 'model': must not be empty.", code="invalid_value")
    n = reader.read(t.N)
    output_format = reader.read(t.OUTPUT_FORMAT)
    compression = reader.read(t.OUTPUT_COMPRESSION)
    if output_format in t.FORMAT_NOTES and compression != 100:
        raise invalid(
            "output_compression",
            f"output_compression applies to 'jpeg' and 'webp' only; {t.FORMAT_NOTES[output_format]}, "
            "so leave it unset (or 100).",
            code="invalid_value",
        )
    stream = reader.read(t.STREAM)
    partial_images = reader.read(t.PARTIAL_IMAGES)
    if partial_images and not stream:
        raise invalid("partial_images", "partial_images needs stream: true.", code="invalid_value")
    if stream and output_format in ("gif", "svg"):
        message = f"output_format '{output_format}' cannot be streamed: streams send png, jpeg or webp images."
        raise invalid("stream", message, code="unsupported_value")
    for field in (t.FRAME_COUNT, t.FRAME_DURATION_MS):
        if reader.given(field.name) and output_format != "gif":
            raise invalid(field.name, f"{field.name} applies to output_format 'gif' only.", code="invalid_value")
    svg = reader.read(t.SVG)
    if svg is not None and output_format != "svg":
        raise invalid("svg", "svg applies to output_format 'svg' only.", code="invalid_value")
    if output_format == "svg" and n > 1:
        raise invalid("n", "SVG output makes one image per request: n must be 1.", code="invalid_value")
    user = reader.read(t.USER)
    safety_identifier = reader.read(t.SAFETY_IDENTIFIER)
    seed = reader.read(t.SEED)
    if seed is not None and seed + n - 1 > t.MAX_SEED:
        raise invalid("seed", f"seed + n - 1 must be at most {t.MAX_SEED}.", code="invalid_value")
    return ImageOptions(
        model=model,
        n=n,
        size=parse_size(reader.read(t.SIZE)),
        quality=reader.read(t.QUALITY),
        complexity=reader.read(t.COMPLEXITY),
        response_format=reader.read(t.RESPONSE_FORMAT),
        output_format=output_format,
        output_compression=compression,
        frames=reader.read(t.FRAME_COUNT) if output_format == "gif" else 1,
        frame_duration_ms=frame_delay(reader.read(t.FRAME_DURATION_MS)),
        trace_detail=_trace_detail(svg) if output_format == "svg" else None,
        background=reader.read(t.BACKGROUND),
        user=user if user is not None else safety_identifier,
        safety_identifier=safety_identifier or user or None,
        stream=stream,
        partial_images=partial_images,
        seed=seed,
        negative_prompt=reader.read(t.NEGATIVE_PROMPT),
        prior_steps=reader.read(t.PRIOR_STEPS),
        prior_guidance_scale=reader.read(t.PRIOR_GUIDANCE),
        decoder_steps=reader.read(t.DECODER_STEPS),
        decoder_guidance_scale=reader.read(t.DECODER_GUIDANCE),
        decoder_guidance_min_timestep=reader.read(t.GUIDANCE_MIN_TIMESTEP),
        decoder_step_cache=reader.read(t.DECODER_STEP_CACHE),
    )


def frame_delay(milliseconds: int) -> int:
    """A GIF frame's delay as encoded: to the nearest 10 ms (at least 10), at most the format's maximum."""
    return min(t.MAX_FRAME_MS, max(10, (milliseconds + 5) // 10 * 10))


def _trace_detail(svg: dict[str, Any] | None) -> str:
    reasoning = (svg or {}).get("reasoning") or {}
    return str(reasoning.get("effort") or t.SVG_EFFORT_DEFAULT)


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    style: Style
    moderation: t.Moderation
    options: ImageOptions

    @classmethod
    def parse(cls, body: Any) -> GenerationRequest:
        """Check a ``POST /v1/images/generations`` JSON body."""
        reader = FieldReader(require_object(body))
        reader.reject_unknown(GENERATION_FIELDS)
        return cls(
            prompt=read_prompt(reader),
            style=reader.read(t.STYLE),
            moderation=reader.read(t.MODERATION),
            options=read_image_options(reader),
        )

    def to_job(self, info: ModelInfo, api_style: ApiStyle) -> ImageJob:
        check_for_model(self.options, self.prompt, api_style, info)
        check_stream_options(self.options)
        return build_job(Task.GENERATE, self.options, info, prompt=self.prompt, style=self.style)


def max_n_for(api_style: ApiStyle) -> int:
    """The most images one request may ask for under this model name (dall-e-3, like OpenAI's: one)."""
    return 1 if api_style == "dall-e-3" else t.MAX_N


def check_task(info: ModelInfo, task: Task) -> None:
    if task not in info.tasks:
        raise invalid(
            "model", f"Model '{info.name}' does not support {t.TASK_ENDPOINTS[task]}.", code="unsupported_model"
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
    limit = t.PROMPT_LIMITS[api_style]
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
    _check_features(options, info)


def _check_features(options: ImageOptions, info: ModelInfo) -> None:
    if options.negative_prompt is not None and not info.supports_negative_prompt:
        message = f"Model '{info.name}' does not support negative_prompt."
        raise invalid("negative_prompt", message, code="unsupported_value")
    if options.decoder_guidance_min_timestep is not None and not info.supports_guidance_interval:
        raise invalid(
            "decoder_guidance_min_timestep",
            f"Model '{info.name}' guides every decoder step; it does not support decoder_guidance_min_timestep.",
            code="unsupported_value",
        )
    if options.decoder_step_cache is not None and not info.supports_step_cache:
        raise invalid(
            "decoder_step_cache",
            f"Model '{info.name}' ({info.family}) has no decoder step cache: decoder_step_cache works on Kandinsky "
            "2.2-family models that are not compiled (see /v1/models, capabilities.supports_step_cache).",
            code="unsupported_value",
        )
    if options.quality not in info.presets:
        message = f"Model '{info.name}' has no '{options.quality}' quality preset."
        raise invalid("quality", message, code="unsupported_value")
    if options.complexity is not None and options.complexity not in info.complexities:
        message = f"Model '{info.name}' has no '{options.complexity}' complexity preset."
        raise invalid("complexity", message, code="unsupported_value")
    if options.frames > 1 and not info.supports_animation:
        raise invalid(
            "output_format",
            f"Model '{info.name}' ({info.family}) cannot make GIF animations: its pipeline runs prior and decoder "
            "in one call, so Easel cannot walk between image embeddings. Use a Kandinsky-family model.",
            code="unsupported_value",
        )


def check_stream_options(options: ImageOptions) -> None:
    if options.stream and options.response_format == "url":
        raise invalid(
            "response_format",
            "Streamed images are always sent as b64_json; omit response_format or set it to b64_json.",
            code="unsupported_value",
        )


def build_job(
    task: Task,
    options: ImageOptions,
    info: ModelInfo,
    *,
    prompt: str = "",
    style: Style | None = None,
    image: Image.Image | None = None,
    mask: Image.Image | None = None,
    input_image_weight: float = 0.0,
) -> ImageJob:
    preset = info.presets[options.quality]
    if options.complexity is not None:  # the prior's effort, chosen apart from the decoder's
        prior = info.complexities[options.complexity]
        preset = replace(preset, prior_steps=prior.prior_steps, prior_guidance=prior.prior_guidance)
    preset = preset.adjusted(
        decoder_guidance_factor=STYLE_DECODER_GUIDANCE_FACTOR[style] if style is not None else 1.0,
        prior_steps=options.prior_steps,
        prior_guidance=options.prior_guidance_scale,
        decoder_steps=options.decoder_steps,
        decoder_guidance=options.decoder_guidance_scale,
        decoder_guidance_min_timestep=options.decoder_guidance_min_timestep,
        decoder_step_cache=options.decoder_step_cache,
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
        input_image_weight=input_image_weight,
        frames=options.frames,
    )


# -- Memory per request (--max-request-mb; docs/limits.md). Files are fitted and encoded one at a time (one GIF frame
# at a time) and held until the answer is sent. The estimate takes incompressible pixels: it bounds an answer.
FILE_BYTES_PER_PIXEL = {"gif": 1.5}  # per frame: palette indices, which LZW may grow to 12-bit codes; others: RGB, 3
INLINE_COPIES = 1 + 2 * 4 / 3  # b64_json and streams: the file, its base64 text, and that text in the JSON body
MiB = 1024 * 1024


def answer_peak_bytes(n: int, frames: int, pixels: int, output_format: str, inline: bool) -> int:
    """The files held until sent, plus one frame at work (6 bytes a pixel: it and its resized copy) and, for a GIF,
    every frame so far as a palette image and its difference from the last (2 bytes a pixel each)."""
    per_file = FILE_BYTES_PER_PIXEL.get(output_format, 3.0) * pixels * frames
    working = 6.0 * pixels + (2.0 * pixels * frames if output_format == "gif" else 0.0)
    return math.ceil(n * per_file * (INLINE_COPIES if inline else 1.0) + working)


def check_answer_memory(n: int, frames: int, width: int, height: int, fmt: str, inline: bool, *, limit: int) -> None:
    """A 400 naming what to lower, and how far, when the answer could take more than ``limit`` bytes."""
    peak = answer_peak_bytes(n, frames, width * height, fmt, inline)
    if peak <= limit:
        return
    pixels = width * height
    fits_n = max((k for k in range(1, n) if answer_peak_bytes(k, frames, pixels, fmt, inline) <= limit), default=0)
    fits_frames = max((k for k in range(2, frames) if answer_peak_bytes(1, k, pixels, fmt, inline) <= limit), default=0)
    if fits_n:
        param, hint = "n", f"At most n={fits_n} fits at this size and format."
    elif fits_frames:
        param, hint = "frame_count", f"At most frame_count={fits_frames} fits with n=1 at this size."
    else:
        param, hint = "size", "Ask for a smaller size" + (" or response_format 'url'." if inline else ".")
    message = (
        f"This request's answer could take up to {math.ceil(peak / MiB):,} MiB of memory to encode and send ({n} x "
        f"{frames} frame(s) at {width}x{height}, {fmt}{', base64 in JSON' if inline else ''}); this server allows "
        f"{math.ceil(limit / MiB):,} MiB per request (--max-request-mb). {hint}"
    )
    raise invalid(param, message, code="answer_too_large")


# -- answers -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FinishedImage:
    data: bytes  # encoded file
    seed: int
    url: str | None = None  # set when response_format is url


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
            quality=gpt_image_quality(options.quality),
            size=options.size.label,  # any WIDTHxHEIGHT, as the SDK types it (docs/api.md)
            usage=usage_block,
        )
        if options.safety_identifier is not None:
            body["safety_identifier"] = options.safety_identifier
        if options.output_format == "svg":  # traced, not authored by a language model: no tokens spent
            body["svg_usage"] = {name: 0 for name in t.SVG_USAGE_COUNTS} | {"model": t.SVG_AUTHOR}
    return body


def gpt_image_quality(quality: str) -> str:
    """The quality a GPT-image answer reports: the deprecated and automatic names as the preset they choose."""
    return t.QUALITY_REPORTED.get(quality, quality)


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
