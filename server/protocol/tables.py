"""The field tables: every field each image endpoint takes, declared once.

Validation (:class:`server.protocol.fields.FieldReader`) reads each field by
its row here, and ``/openapi.json`` (:mod:`server.protocol.openapi`) is built
from the same rows, so the document cannot drift from what the server checks.
A row holds only data; what the fields mean at length is docs/api.md's, and
docs/reference/fields.md is generated from these rows (``scripts/gen_docs.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pipelines.presets import COMPLEXITIES, QUALITIES, STYLES

FieldKind = Literal["string", "integer", "number", "boolean", "enum", "size", "object", "file", "numbers"]

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
TASK_ENDPOINTS = {"generate": "image generations", "edit": "image edits", "variation": "image variations"}
QUALITY_REPORTED = {"standard": "medium", "auto": "medium", "hd": "high"}  # GPT-image answers; others as asked
FORMAT_NOTES = {"png": "PNG is lossless", "gif": "GIF frames are palette images", "svg": "SVG is traced vectors"}
INPUT_FIDELITY_WEIGHTS = {"low": 0.0, "high": 0.5}  # masked edits: share of the input's own embedding (docs/edits.md)
# Whole-image edits (no mask): (strength, mix) per input_fidelity, chosen by benchmarks/bench_edit_quality.py.
WHOLE_EDIT_FIDELITY = {"low": (0.9, 0.0), "high": (0.8, 0.0)}
# Whole-image edits on a model that decodes from noise (Karlo): the mix alone, chosen, not measured (docs/edits.md).
MIX_ONLY_EDIT_FIDELITY = {"low": 0.3, "high": 0.6}


@dataclass(frozen=True)
class Field:
    """One request field: its type, its bounds or values, and what it means to Easel (one line)."""

    name: str
    kind: FieldKind
    meaning: str
    low: float | None = None  # integer, number: inclusive bounds
    high: float | None = None
    choices: tuple[str, ...] = ()  # enum: the values Easel takes
    refused: tuple[tuple[str, str], ...] = ()  # enum: values OpenAI has that Easel refuses, with the reason
    max_length: int | None = None  # string
    default: Any = None  # what null or absent means
    extension: bool = False  # Easel's own field, not OpenAI's
    required: bool = False
    properties: tuple[Field, ...] = ()  # object: its fields
    many: bool = False  # file: a list of files is accepted too
    plain_text: bool = False  # string: text for the model, so control characters are refused
    aliases: tuple[str, ...] = ()  # other names for it that peer servers' clients send (one per request)


PROMPT = Field("prompt", "string", "What to draw.", max_length=MAX_PROMPT_LENGTH, required=True, plain_text=True)
MODEL = Field(
    "model",
    "string",
    "A local model, an alias, or any OpenAI image model name (gpt-image-*, chatgpt-image-*, dall-e-*): "
    "the OpenAI names resolve to the default model and answer in their family's shape.",
)
N = Field("n", "integer", "Images per request, made in one batched pipeline call.", low=1, high=MAX_N, default=1)
SIZE = Field(
    "size",
    "size",
    "An OpenAI size, auto (1024x1024; edits and variations: the input's size) or any WIDTHxHEIGHT within the "
    "model's bounds; generated at the nearest native size with that aspect ratio, then resized exactly.",
    default="auto",
)
QUALITY = Field(
    "quality",
    "enum",
    "The decoder's effort: per-model presets of steps and guidance (pipelines/presets.py, listed in /v1/models).",
    choices=QUALITIES,
    default="auto",
)
COMPLEXITY = Field(
    "complexity",
    "enum",
    "The prior's effort (planning the image embedding): its steps and guidance, independent of quality. "
    "Absent: the quality preset's prior settings.",
    choices=COMPLEXITIES,
)
STYLE = Field("style", "enum", "natural: 0.75x the preset's decoder guidance.", choices=STYLES, default="vivid")
RESPONSE_FORMAT = Field(
    "response_format",
    "enum",
    "url or b64_json; GPT image names always answer b64_json.",
    choices=("url", "b64_json"),
)
OUTPUT_FORMAT = Field(
    "output_format",
    "enum",
    "png, jpeg, webp; gif: an animation walking through image-embedding space; svg: the image traced to vectors.",
    choices=("png", "jpeg", "webp", "gif", "svg"),
    default="png",
)
OUTPUT_COMPRESSION = Field(
    "output_compression", "integer", "Encoder quality for jpeg and webp.", low=0, high=100, default=100
)
FRAME_COUNT = Field(
    "frame_count",
    "integer",
    "gif only: frames of the animation.",
    low=MIN_FRAMES,
    high=MAX_FRAMES,
    default=DEFAULT_FRAMES,
)
FRAME_DURATION_MS = Field(
    "frame_duration_ms",
    "integer",
    f"gif only: each frame's delay, rounded to 10 ms and capped at {MAX_FRAME_MS} ms.",
    low=1,
    high=2**31 - 1,
    default=DEFAULT_FRAME_MS,
)
SVG = Field(
    "svg",
    "object",
    "svg only: the SVG author and its effort. Easel traces the raster with vtracer; effort sets the tracing detail.",
    properties=(
        Field("model", "enum", "The SVG author.", choices=(SVG_AUTHOR,), default=SVG_AUTHOR),
        Field(
            "reasoning",
            "object",
            "The author's effort.",
            properties=(Field("effort", "enum", "Tracing detail.", choices=SVG_EFFORTS, default=SVG_EFFORT_DEFAULT),),
        ),
    ),
)
BACKGROUND = Field(
    "background",
    "enum",
    "auto or opaque.",
    choices=("opaque", "auto"),
    refused=(("transparent", "Easel's models generate opaque images. Use 'opaque' or 'auto'."),),
    default="auto",
)
MODERATION = Field(
    "moderation", "enum", "Accepted; Easel runs no moderation model.", choices=("low", "auto"), default="auto"
)
USER = Field("user", "string", "Logged; the safety identifier when none is given.", max_length=MAX_USER_LENGTH)
SAFETY_IDENTIFIER = Field(
    "safety_identifier",
    "string",
    "Logged and echoed in GPT-image answers; takes precedence over user when not empty.",
    max_length=MAX_USER_LENGTH,
)
STREAM = Field("stream", "boolean", "Answer Server-Sent Events.", default=False)
PARTIAL_IMAGES = Field(
    "partial_images",
    "integer",
    "With stream: previews decoded from intermediate denoising states.",
    low=0,
    high=MAX_PARTIAL_IMAGES,
    default=0,
)
INPUT_FIDELITY = Field(
    "input_fidelity",
    "enum",
    "How much of the input survives. Whole-image edits (no mask): high keeps more of the picture "
    "(the decoder starts from less noise); masked edits: high mixes the input's own CLIP embedding half into "
    "the prompt's, low uses the prompt's alone; Karlo (whole-image edits from noise): the mix alone, "
    "low 0.3, high 0.6 (docs/edits.md).",
    choices=("low", "high"),
    default="low",
)
IMAGE = Field("image", "file", "The input image (PNG, JPEG or WebP).", required=True)
EDIT_IMAGE = Field(
    "image",
    "file",
    f"The image to edit (PNG, JPEG or WebP), or a list of up to {MAX_EDIT_IMAGES}: the first is edited (and is the "
    "one a mask applies to), all are mixed into the prompt's image embedding as references.",
    required=True,
    many=True,
)
MASK = Field("mask", "file", "Its fully transparent pixels mark the area to repaint.")
MARKUP = Field(
    "markup",
    "file",
    "A transparent PNG of the image's size: the pixels drawn on it mark the area to repaint (not with mask).",
)

SEED = Field("seed", "integer", "Image i uses seed + i; same seed, same bytes.", low=0, high=MAX_SEED, extension=True)
NEGATIVE_PROMPT = Field(
    "negative_prompt",
    "string",
    "What to steer away from.",
    max_length=MAX_PROMPT_LENGTH,
    extension=True,
    plain_text=True,
)
PRIOR_STEPS = Field("prior_steps", "integer", "The prior's steps.", low=MIN_STEPS, high=MAX_STEPS, extension=True)
PRIOR_GUIDANCE = Field(
    "prior_guidance_scale", "number", "The prior's guidance.", low=0.0, high=MAX_GUIDANCE, extension=True
)
# The aliases are the names vLLM-Omni, SGLang and Open WebUI's IMAGES_OPENAI_API_PARAMS send (docs/compatibility.md).
DECODER_STEPS = Field(
    "decoder_steps",
    "integer",
    "The decoder's steps.",
    low=MIN_STEPS,
    high=MAX_STEPS,
    extension=True,
    aliases=("num_inference_steps", "steps"),
)
DECODER_GUIDANCE = Field(
    "decoder_guidance_scale",
    "number",
    "The decoder's guidance.",
    low=0.0,
    high=MAX_GUIDANCE,
    extension=True,
    aliases=("guidance_scale",),
)
GUIDANCE_MIN_TIMESTEP = Field(
    "decoder_guidance_min_timestep",
    "integer",
    "Guide the decoder only at timesteps from this one up.",
    low=0,
    high=MAX_TIMESTEP,
    extension=True,
)
STRENGTH = Field(
    "strength",
    "number",
    "Whole-image edits (no mask): the share of the decoder's schedule run from the input noised to it; "
    "1 starts from noise. Above 0. Default: input_fidelity's. Refused for Karlo, which decodes edits from noise.",
    low=0.0,
    high=1.0,
    extension=True,
)
INPUT_IMAGE_WEIGHT = Field(
    "input_image_weight",
    "number",
    "Edits: the share (spherical interpolation) of the input images' own CLIP embedding mixed into the prompt's. "
    "Default: input_fidelity's.",
    low=0.0,
    high=1.0,
    extension=True,
)
IMAGE_WEIGHTS = Field(
    "image_weights",
    "numbers",
    "Edits: one relative weight (0-100) per input image, in order, for their embedding mix; default equal.",
    low=0.0,
    high=MAX_IMAGE_WEIGHT,
    extension=True,
)

_SHARED = (MODEL, N, SIZE, QUALITY, RESPONSE_FORMAT, OUTPUT_FORMAT, OUTPUT_COMPRESSION, USER)
_OUTPUT_EXTRAS = (BACKGROUND, FRAME_COUNT, FRAME_DURATION_MS, SVG, COMPLEXITY, MODERATION, SAFETY_IDENTIFIER, STREAM)
_EXTENSIONS = (SEED, NEGATIVE_PROMPT, PRIOR_STEPS, PRIOR_GUIDANCE, DECODER_STEPS, DECODER_GUIDANCE)

GENERATION = (PROMPT, *_SHARED, *_OUTPUT_EXTRAS, STYLE, PARTIAL_IMAGES, *_EXTENSIONS, GUIDANCE_MIN_TIMESTEP)
# Multipart edits; JSON edits send images/mask as {"image_url": ...} references instead (protocol.openapi).
EDIT = (
    EDIT_IMAGE, PROMPT, MASK, MARKUP, INPUT_FIDELITY, *_SHARED, *_OUTPUT_EXTRAS, PARTIAL_IMAGES, *_EXTENSIONS,
    GUIDANCE_MIN_TIMESTEP, STRENGTH, INPUT_IMAGE_WEIGHT, IMAGE_WEIGHTS,
)  # fmt: skip
VARIATION = (
    IMAGE, *_SHARED, SAFETY_IDENTIFIER, SEED, DECODER_STEPS, DECODER_GUIDANCE, GUIDANCE_MIN_TIMESTEP,
)  # fmt: skip


def names(table: tuple[Field, ...], *, without_files: bool = True) -> frozenset[str]:
    """The field names of a table, aliases included (its text fields by default: files arrive apart)."""
    return frozenset(name for f in table if not (without_files and f.kind == "file") for name in (f.name, *f.aliases))
