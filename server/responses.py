"""Response bodies, as plain dicts: the wire format, kept apart from serving logic.

Image responses follow the style of the model name the client asked for:

- ``dall-e-2`` and local names: ``{"created", "data": [{"url"|"b64_json", "seed"}]}``
- ``dall-e-3``: the same, each item with ``revised_prompt`` (Easel does not
  rewrite prompts, so it is the prompt as used).
- GPT image names: items carry ``b64_json``; the body adds ``background``
  (always ``opaque``), ``output_format``, ``quality`` (``low``/``medium``/``high``),
  ``size`` and ``usage``.

``seed`` on every item is an Easel extension: the seed that image was made
from (send it back as ``seed`` with ``n=1`` to get the same image).

Usage: ``input_tokens`` are the prompt's tokens from the model's own
tokenizer; ``output_tokens`` count 8x8-pixel patches of the image as the model
generated it (before resizing), times ``n``; for Kandinsky 2.2 that is exactly
its number of latent positions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pipelines.base import ModelInfo

from .catalog import ApiStyle, ModelEntry
from .encoding import base64_text

OUTPUT_TOKEN_PATCH = 8
GPT_IMAGE_QUALITY = {"low": "low", "medium": "medium", "high": "high", "standard": "medium", "auto": "medium", "hd": "high"}


@dataclass(frozen=True)
class FinishedImage:
    data: bytes  # encoded file
    seed: int
    url: str | None = None  # set when response_format is url


def output_image_tokens(native_width: int, native_height: int, n: int) -> int:
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


def image_item(image: FinishedImage, revised_prompt: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {}
    if image.url is not None:
        item["url"] = image.url
    else:
        item["b64_json"] = base64_text(image.data)
    if revised_prompt is not None:
        item["revised_prompt"] = revised_prompt
    item["seed"] = image.seed
    return item


def images_response(
    *,
    created: int,
    images: list[FinishedImage],
    api_style: ApiStyle,
    prompt: str | None,
    size_label: str,
    quality: str,
    output_format: str,
    usage_block: dict[str, Any] | None,
) -> dict[str, Any]:
    revised_prompt = prompt if api_style == "dall-e-3" else None
    body: dict[str, Any] = {"created": created, "data": [image_item(image, revised_prompt) for image in images]}
    if api_style == "gpt-image":
        body.update(
            background="opaque",
            output_format=output_format,
            quality=GPT_IMAGE_QUALITY[quality],
            size=size_label,
            usage=usage_block,
        )
    return body


def capabilities(info: ModelInfo) -> dict[str, Any]:
    square = info.native_size_for(1, 1)
    endpoints = ["generations"] + [name for task, name in (("edit", "edits"), ("variation", "variations")) if task in info.tasks]
    return {
        "family": info.family,
        "native_size": f"{square[0]}x{square[1]}",
        "fixed_native_size": None if info.fixed_native_size is None else "{}x{}".format(*info.fixed_native_size),
        "size_multiple": info.size_multiple,
        "size_bounds": {"min_side": info.min_side, "max_side": info.max_side},
        "endpoints": endpoints,
        "supports_negative_prompt": info.supports_negative_prompt,
        "supports_guidance_interval": info.supports_guidance_interval,
        "quality_presets": {name: asdict(preset) for name, preset in info.presets.items()},
        "parameter_counts": dict(info.parameter_counts),
        "device": info.device,
        "dtype": info.dtype,
    }


def model_object(entry: ModelEntry, model_id: str | None = None, max_n: int = 10) -> dict[str, Any]:
    """An OpenAI model object; aliases add ``alias_of``. ``capabilities`` is null until loaded."""
    body: dict[str, Any] = {
        "id": model_id or entry.name,
        "object": "model",
        "created": entry.created(),
        "owned_by": entry.spec.owned_by,
    }
    if model_id is not None and model_id != entry.name:
        body["alias_of"] = entry.name
    body["status"] = entry.status
    if entry.error is not None:
        body["error"] = entry.error
    if entry.backend is not None:
        body["capabilities"] = {**capabilities(entry.backend.info), "max_n": max_n}
    else:
        body["capabilities"] = None
    return body


def model_list(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "list", "data": objects}
