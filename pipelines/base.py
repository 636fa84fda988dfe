"""The contract between the engine and a model backend.

The engine (in ``server/``) only ever sees these types: it never imports
diffusers. A backend only ever sees these types: it never sees HTTP.

A backend produces images at a *native* resolution it chooses with
:meth:`ModelInfo.native_size_for`; the engine resizes them to the size the
client asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Literal, Protocol

from PIL import Image

Task = Literal["generate", "variation", "edit"]


class Cancelled(Exception):
    """Raised inside a backend when ``ImageJob.should_cancel`` turns true between steps."""


class MissingComponent(Exception):
    """The model directory lacks something a task needs (e.g. Karlo's image encoder).

    The message says what is missing and how to get it; the server answers 400.
    """


@dataclass(frozen=True)
class StagePreset:
    """Steps and guidance for each stage of a prior+decoder pipeline."""

    prior_steps: int
    prior_guidance: float
    decoder_steps: int
    decoder_guidance: float
    super_res_steps: int | None = None  # Karlo only
    # Kandinsky only: guide the decoder at timesteps >= this, run it unguided below (None: every step).
    decoder_guidance_min_timestep: int | None = None


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded model can do; served under ``capabilities`` by /v1/models."""

    name: str
    family: str  # "kandinsky22" | "karlo"
    native_area: int  # pixels of the resolution the model was trained at (e.g. 64*64)
    size_multiple: int  # native width/height must be multiples of this
    min_side: int  # bounds for free WxH requests, in output pixels
    max_side: int
    fixed_native_size: tuple[int, int] | None  # Karlo: always 256x256
    tasks: frozenset[str]  # subset of {"generate", "variation", "edit"}
    presets: dict[str, StagePreset]  # quality name -> preset
    parameter_counts: dict[str, int]  # component -> number of parameters
    device: str
    dtype: str
    supports_negative_prompt: bool = True
    supports_guidance_interval: bool = True  # honours StagePreset.decoder_guidance_min_timestep
    created: int = 0  # unix time the weights were written

    def native_size_for(self, width: int, height: int) -> tuple[int, int]:
        """Nearest native resolution with the requested aspect ratio."""
        if self.fixed_native_size is not None:
            return self.fixed_native_size
        aspect = width / height
        m = self.size_multiple
        native_w = math.sqrt(self.native_area * aspect)
        native_h = native_w / aspect
        return max(m, round(native_w / m) * m), max(m, round(native_h / m) * m)


@dataclass
class ImageJob:
    """One pipeline call: ``n`` images for one prompt (or one input image)."""

    task: Task
    n: int
    width: int  # native width, from ModelInfo.native_size_for
    height: int
    seeds: list[int]  # one per image; image i is generated from seeds[i]
    preset: StagePreset  # resolved steps/guidance (quality preset + per-stage overrides)
    prompt: str = ""
    negative_prompt: str | None = None
    image: Image.Image | None = None  # variation / edit input, RGB, any size
    mask: Image.Image | None = None  # edit: mode "L", same size as image, 255 = repaint
    preview_count: int = 0  # partial images wanted, decoded at evenly spaced decoder steps
    on_preview: Callable[[int, list[Image.Image]], None] | None = None  # (index, images)
    should_cancel: Callable[[], bool] | None = None
    extras: dict = field(default_factory=dict)


class ImageBackend(Protocol):
    """A loaded model. ``run`` is called from a worker thread, one call at a time per device."""

    info: ModelInfo

    def run(self, job: ImageJob) -> list[Image.Image]:
        """Return ``job.n`` RGB images at (job.width, job.height), in seed order.

        Raises Cancelled, MissingComponent, or ValueError for a job the model cannot do.
        """
        ...

    def count_tokens(self, prompt: str) -> int:
        """Text tokens the model's tokenizer makes of ``prompt`` (for usage reporting)."""
        ...
