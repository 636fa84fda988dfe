"""Token usage in the shape GPT image answers carry it: the prompt's tokens, input image patches, output patches."""

from __future__ import annotations

from typing import Any

from pipelines.base import ImageJob

OUTPUT_TOKEN_PATCH = 8


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
    """A finished job's usage: the prompt's tokens, the input image's patches (edits, variations), every frame's."""
    input_image_tokens = output_image_tokens(job.width, job.height, 1) if job.image is not None else 0
    return usage(prompt_tokens, output_image_tokens(job.width, job.height, job.n * job.frames), input_image_tokens)
