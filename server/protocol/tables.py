"""The field tables: every field each image endpoint takes, declared once.

Validation (:class:`server.protocol.fields.FieldReader`) reads each field by
its row here, and ``/openapi.json`` (:mod:`server.protocol.openapi`) is built
from the same rows, so the document cannot drift from what the server checks.
A row holds only data, typed by the value it reads as (:mod:`server.protocol.rows`); what the fields mean at
length is docs/api.md's, and docs/reference/fields.md is generated from these rows (``scripts/gen_docs.py``).
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pipelines.presets import COMPLEXITIES, QUALITIES, STYLES
from pipelines.tasks import Task

from .rows import Field, boolean, enum, file, integer, nested, number, numbers, size, string

# The values of the enum fields a job or an answer depends on: what their rows read as (mypy checks each use).
ResponseFormat = Literal["url", "b64_json"]
OutputFormat = Literal["png", "jpeg", "webp", "gif", "svg"]
Background = Literal["opaque", "auto"]
Moderation = Literal["low", "auto"]
InputFidelity = Literal["low", "high"]
RESPONSE_FORMATS: tuple[ResponseFormat, ...] = get_args(ResponseFormat)
OUTPUT_FORMATS: tuple[OutputFormat, ...] = get_args(OutputFormat)
BACKGROUNDS: tuple[Background, ...] = get_args(Background)
MODERATIONS: tuple[Moderation, ...] = get_args(Moderation)
INPUT_FIDELITIES: tuple[InputFidelity, ...] = get_args(InputFidelity)

STANDARD_SIZES = ("256x256", "512x512", "1024x1024", "1792x1024", "1024x1792", "1536x1024", "1024x1536")
MAX_N = 10
MAX_PARTIAL_IMAGES = 3
MAX_EDIT_IMAGES = 16  # OpenAI's limit for gpt-image edits
MAX_IMAGE_WEIGHT = 100.0
MAX_SEED = 2**53 - 1  # largest integer every JSON client round-trips exactly
MIN_STEPS = 2  # UnCLIPScheduler (every prior, Karlo's decoder) divides by steps - 1
MAX_STEPS = 200
MAX_GUIDANCE = 30.0
MAX_TIMESTEP = 1000  # every supported decoder schedule has 1000 training timesteps
MAX_USER_LENGTH = 256
MAX_PROMPT_LENGTH = 32000  # GPT image names and local names; dall-e names have their own (protocol.images)
MIN_FRAMES, MAX_FRAMES, DEFAULT_FRAMES = 2, 16, 9
DEFAULT_FRAME_MS = 200
MAX_FRAME_MS = 655_350  # GIF stores a frame's delay in 1/100 s, in 16 bits
SVG_AUTHOR = "vtracer"
SVG_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
SVG_EFFORT_DEFAULT = "medium"
SVG_USAGE_COUNTS = ("input_tokens", "output_tokens", "reasoning_tokens", "total_tokens")
PROMPT_LIMITS = {"dall-e-2": 1000, "dall-e-3": 4000, "gpt-image": MAX_PROMPT_LENGTH, "easel": MAX_PROMPT_LENGTH}
TASK_ENDPOINTS = {Task.GENERATE: "image generations", Task.EDIT: "image edits", Task.VARIATION: "image variations"}
QUALITY_REPORTED = {"standard": "medium", "auto": "medium", "hd": "high"}  # GPT-image answers; others as asked
FORMAT_NOTES: dict[OutputFormat, str] = {
    "png": "PNG is lossless",
    "gif": "GIF frames are palette images",
    "svg": "SVG is traced vectors",
}
INPUT_FIDELITY_WEIGHTS: dict[InputFidelity, float] = {
    "low": 0.0,
    "high": 0.5,
}  # masked edits: share of the input's own embedding (docs/edits.md)
# Whole-image edits (no mask): (strength, mix) per input_fidelity, chosen by benchmarks/bench_edit_quality.py.
WHOLE_EDIT_FIDELITY: dict[InputFidelity, tuple[float, float]] = {"low": (0.9, 0.0), "high": (0.8, 0.0)}
# Whole-image edits on a model that decodes from noise (Karlo): the mix alone, chosen, not measured (docs/edits.md).
MIX_ONLY_EDIT_FIDELITY: dict[InputFidelity, float] = {"low": 0.3, "high": 0.6}


PROMPT = string("prompt", "What to draw.", max_length=MAX_PROMPT_LENGTH, required=True, plain_text=True)
MODEL = string(
    "model",
    "A local model, an alias, or any OpenAI image model name (gpt-image-*, chatgpt-image-*, dall-e-*): "
    "the OpenAI names resolve to the default model and answer in their family's shape.",
)
N = integer("n", "Images per request, made in one batched pipeline call.", low=1, high=MAX_N, default=1)
SIZE = size(
    "size",
    "An OpenAI size, auto (1024x1024; edits and variations: the input's size) or any WIDTHxHEIGHT within the "
    "model's bounds; generated at the nearest native size with that aspect ratio, then resized exactly.",
    default="auto",
)
QUALITY = enum(
    "quality",
    "The decoder's effort: per-model presets of steps and guidance (pipelines/presets.py, listed in /v1/models).",
    choices=QUALITIES,
    default="auto",
)
COMPLEXITY = enum(
    "complexity",
    "The prior's effort (planning the image embedding): its steps and guidance, independent of quality. "
    "Absent: the quality preset's prior settings.",
    choices=COMPLEXITIES,
)
STYLE = enum("style", "natural: 0.75x the preset's decoder guidance.", choices=STYLES, default="vivid")
RESPONSE_FORMAT = enum(
    "response_format",
    "url or b64_json; GPT image names always answer b64_json.",
    choices=RESPONSE_FORMATS,
)
OUTPUT_FORMAT = enum(
    "output_format",
    "png, jpeg, webp; gif: an animation walking through image-embedding space; svg: the image traced to vectors.",
    choices=OUTPUT_FORMATS,
    default="png",
)
OUTPUT_COMPRESSION = integer("output_compression", "Encoder quality for jpeg and webp.", low=0, high=100, default=100)
FRAME_COUNT = integer(
    "frame_count",
    "gif only: frames of the animation.",
    low=MIN_FRAMES,
    high=MAX_FRAMES,
    default=DEFAULT_FRAMES,
)
FRAME_DURATION_MS = integer(
    "frame_duration_ms",
    f"gif only: each frame's delay, rounded to 10 ms and capped at {MAX_FRAME_MS} ms.",
    low=1,
    high=2**31 - 1,
    default=DEFAULT_FRAME_MS,
)
SVG = nested(
    "svg",
    "svg only: the SVG author and its effort. Easel traces the raster with vtracer; effort sets the tracing detail.",
    properties=(
        enum("model", "The SVG author.", choices=(SVG_AUTHOR,), default=SVG_AUTHOR),
        nested(
            "reasoning",
            "The author's effort.",
            properties=(enum("effort", "Tracing detail.", choices=SVG_EFFORTS, default=SVG_EFFORT_DEFAULT),),
        ),
    ),
)
BACKGROUND = enum(
    "background",
    "auto or opaque.",
    choices=BACKGROUNDS,
    refused=(("transparent", "Easel's models generate opaque images. Use 'opaque' or 'auto'."),),
    default="auto",
)
MODERATION = enum("moderation", "Accepted; Easel runs no moderation model.", choices=MODERATIONS, default="auto")
USER = string("user", "Logged; the safety identifier when none is given.", max_length=MAX_USER_LENGTH)
SAFETY_IDENTIFIER = string(
    "safety_identifier",
    "Logged and echoed in GPT-image answers; takes precedence over user when not empty.",
    max_length=MAX_USER_LENGTH,
)
STREAM = boolean("stream", "Answer Server-Sent Events.", default=False)
PARTIAL_IMAGES = integer(
    "partial_images",
    "With stream: previews decoded from intermediate denoising states.",
    low=0,
    high=MAX_PARTIAL_IMAGES,
    default=0,
)
INPUT_FIDELITY = enum(
    "input_fidelity",
    "How much of the input survives. Whole-image edits (no mask): high keeps more of the picture "
    "(the decoder starts from less noise); masked edits: high mixes the input's own CLIP embedding half into "
    "the prompt's, low uses the prompt's alone; Karlo (whole-image edits from noise): the mix alone, "
    "low 0.3, high 0.6 (docs/edits.md).",
    choices=INPUT_FIDELITIES,
    default="low",
)
IMAGE = file("image", "The input image (PNG, JPEG or WebP).", required=True)
EDIT_IMAGE = file(
    "image",
    f"The image to edit (PNG, JPEG or WebP), or a list of up to {MAX_EDIT_IMAGES}: the first is edited (and is the "
    "one a mask applies to), all are mixed into the prompt's image embedding as references.",
    required=True,
    many=True,
)
MASK = file("mask", "Its fully transparent pixels mark the area to repaint.")
MARKUP = file(
    "markup",
    "A transparent PNG of the image's size: the pixels drawn on it mark the area to repaint (not with mask).",
)

SEED = integer("seed", "Image i uses seed + i; same seed, same bytes.", low=0, high=MAX_SEED, extension=True)
NEGATIVE_PROMPT = string(
    "negative_prompt",
    "What to steer away from.",
    max_length=MAX_PROMPT_LENGTH,
    extension=True,
    plain_text=True,
)
PRIOR_STEPS = integer("prior_steps", "The prior's steps.", low=MIN_STEPS, high=MAX_STEPS, extension=True)
PRIOR_GUIDANCE = number("prior_guidance_scale", "The prior's guidance.", low=0.0, high=MAX_GUIDANCE, extension=True)
# The aliases are the names vLLM-Omni, SGLang and Open WebUI's IMAGES_OPENAI_API_PARAMS send (docs/compatibility.md).
DECODER_STEPS = integer(
    "decoder_steps",
    "The decoder's steps.",
    low=MIN_STEPS,
    high=MAX_STEPS,
    extension=True,
    aliases=("num_inference_steps", "steps"),
)
DECODER_GUIDANCE = number(
    "decoder_guidance_scale",
    "The decoder's guidance.",
    low=0.0,
    high=MAX_GUIDANCE,
    extension=True,
    aliases=("guidance_scale",),
)
GUIDANCE_MIN_TIMESTEP = integer(
    "decoder_guidance_min_timestep",
    "Guide the decoder only at timesteps from this one up.",
    low=0,
    high=MAX_TIMESTEP,
    extension=True,
)
DECODER_STEP_CACHE = integer(
    "decoder_step_cache",
    "Recompute the decoder UNet's deep blocks every N steps and reuse them between (1: every step, no caching). "
    "Default: the model's --step-cache. Kandinsky 2.2 family only, not when compiled.",
    low=1,
    high=MAX_STEPS,
    extension=True,
)
STRENGTH = number(
    "strength",
    "Whole-image edits (no mask): the share of the decoder's schedule run from the input noised to it; "
    "1 starts from noise. Above 0. Default: input_fidelity's. Refused for Karlo, which decodes edits from noise.",
    low=0.0,
    high=1.0,
    extension=True,
)
INPUT_IMAGE_WEIGHT = number(
    "input_image_weight",
    "Edits: the share (spherical interpolation) of the input images' own CLIP embedding mixed into the prompt's. "
    "Default: input_fidelity's.",
    low=0.0,
    high=1.0,
    extension=True,
)
IMAGE_WEIGHTS = numbers(
    "image_weights",
    "Edits: one relative weight (0-100) per input image, in order, for their embedding mix; default equal.",
    low=0.0,
    high=MAX_IMAGE_WEIGHT,
    extension=True,
)

_SHARED = (MODEL, N, SIZE, QUALITY, RESPONSE_FORMAT, OUTPUT_FORMAT, OUTPUT_COMPRESSION, USER)
_OUTPUT_EXTRAS = (BACKGROUND, FRAME_COUNT, FRAME_DURATION_MS, SVG, COMPLEXITY, MODERATION, SAFETY_IDENTIFIER, STREAM)
_EXTENSIONS = (SEED, NEGATIVE_PROMPT, PRIOR_STEPS, PRIOR_GUIDANCE, DECODER_STEPS, DECODER_GUIDANCE)

GENERATION = (
    PROMPT, *_SHARED, *_OUTPUT_EXTRAS, STYLE, PARTIAL_IMAGES, *_EXTENSIONS, GUIDANCE_MIN_TIMESTEP, DECODER_STEP_CACHE,
)  # fmt: skip
# Multipart edits; JSON edits send images/mask as {"image_url": ...} references instead (protocol.openapi).
EDIT = (
    EDIT_IMAGE, PROMPT, MASK, MARKUP, INPUT_FIDELITY, *_SHARED, *_OUTPUT_EXTRAS, PARTIAL_IMAGES, *_EXTENSIONS,
    GUIDANCE_MIN_TIMESTEP, DECODER_STEP_CACHE, STRENGTH, INPUT_IMAGE_WEIGHT, IMAGE_WEIGHTS,
)  # fmt: skip
VARIATION = (
    IMAGE, *_SHARED, SAFETY_IDENTIFIER, SEED, DECODER_STEPS, DECODER_GUIDANCE, GUIDANCE_MIN_TIMESTEP,
    DECODER_STEP_CACHE,
)  # fmt: skip


def names(table: tuple[Field[Any], ...], *, without_files: bool = True) -> frozenset[str]:
    """The field names of a table, aliases included (its text fields by default: files arrive apart)."""
    return frozenset(name for f in table if not (without_files and f.kind == "file") for name in (f.name, *f.aliases))
