"""The contract between the engine and a model backend, and the steps every backend shares.

The engine (in ``server/``) only ever sees the types here: it never imports
diffusers. A backend only ever sees these types: it never sees HTTP.

A backend produces images at a *native* resolution it chooses with
:meth:`ModelInfo.native_size_for`; the server fits them to the size the client
asked for. torch is imported inside the shared steps, not at the top, so the
server can start listening before torch has loaded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

from PIL import Image

if TYPE_CHECKING:
    import torch

Task = Literal["generate", "variation", "edit"]

FAMILIES = ("kandinsky22", "karlo")

# Speed settings a backend can be loaded with (pipelines.optimize applies them; README "Fast on a GPU").
OPTIMIZATIONS = ("sdpa", "channels_last", "fused_qkv", "compile", "max_autotune", "cuda_graphs")


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

    def adjusted(self, *, decoder_guidance_factor: float = 1.0, **overrides: int | float | None) -> StagePreset:
        """This preset with decoder guidance scaled (``style``), then the given non-None fields replaced."""
        scaled = replace(self, decoder_guidance=self.decoder_guidance * decoder_guidance_factor)
        given: dict[str, Any] = {name: value for name, value in overrides.items() if value is not None}
        return replace(scaled, **given)


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
    # What pipelines.optimize turned on at load ("enabled") and which batch sizes it compiled ahead ("warmed_up").
    optimizations: dict[str, Any] = field(default_factory=dict)

    def native_size_for(self, width: int, height: int) -> tuple[int, int]:
        """Nearest native resolution with the requested aspect ratio."""
        if self.fixed_native_size is not None:
            return self.fixed_native_size
        aspect = width / height
        m = self.size_multiple
        native_w = math.sqrt(self.native_area * aspect)
        native_h = native_w / aspect
        return max(m, round(native_w / m) * m), max(m, round(native_h / m) * m)

    def size_for_input(self, width: int, height: int) -> tuple[int, int]:
        """An input image's own size, scaled (keeping its aspect ratio) into the model's side bounds where needed."""
        scale = 1.0
        if max(width, height) > self.max_side:
            scale = self.max_side / max(width, height)
        elif min(width, height) < self.min_side:
            scale = self.min_side / min(width, height)
        # An extreme aspect ratio may not fit both bounds; clamp each side then.
        fitted = [min(self.max_side, max(self.min_side, round(side * scale))) for side in (width, height)]
        return fitted[0], fitted[1]


@dataclass(frozen=True)
class SpeedOptions:
    """Load-time speed settings for a backend; :mod:`pipelines.optimize` resolves and applies them."""

    enabled: frozenset[str] | None = None  # names from OPTIMIZATIONS; None: the device's defaults
    compile_cache_dir: str | None = None  # torch.compile's persistent cache; None: ~/.cache/easel/torch-compile
    warmup_batches: tuple[int, ...] = (1, 2)  # with compile: images per job compiled at load, native square size

    @staticmethod
    def parse_enabled(text: str) -> frozenset[str] | None:
        """``auto`` (the device's defaults), ``none``, or a comma-separated list of OPTIMIZATIONS."""
        text = text.strip().lower()
        if text == "auto":
            return None
        if text == "none":
            return frozenset()
        names = frozenset(name.strip() for name in text.split(",") if name.strip())
        unknown = sorted(names - set(OPTIMIZATIONS))
        if unknown:
            raise ValueError(f"unknown optimization {', '.join(unknown)}: use auto, none or any of {OPTIMIZATIONS}")
        return names


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
    # Set by the engine: where previews go, and whether the job's client has gone.
    on_preview: Callable[[int, list[Image.Image]], None] | None = None  # (index, images)
    should_cancel: Callable[[], bool] | None = None


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


# -- steps every backend shares --------------------------------------------------------------


def check_job(job: ImageJob, info: ModelInfo) -> None:
    """Refuse a job this model cannot run (ValueError): the server checks first, this guards direct callers."""
    if job.task not in info.tasks:
        raise ValueError(f"task {job.task!r} is not supported by {info.name!r} (supported: {sorted(info.tasks)})")
    if len(job.seeds) != job.n or job.n < 1:
        raise ValueError(f"need one seed per image: n={job.n}, {len(job.seeds)} seeds")
    if info.fixed_native_size is not None:
        if (job.width, job.height) != info.fixed_native_size:
            w, h = info.fixed_native_size
            raise ValueError(f"{info.name!r} generates {w}x{h} only, not {job.width}x{job.height}")
    elif job.width % info.size_multiple or job.height % info.size_multiple:
        raise ValueError(f"{job.width}x{job.height} is not a multiple of {info.size_multiple}")
    if job.negative_prompt is not None and not info.supports_negative_prompt:
        raise ValueError(f"{info.name!r} does not support negative_prompt")
    if job.preset.decoder_guidance_min_timestep is not None and not info.supports_guidance_interval:
        raise ValueError(f"{info.name!r} cannot stop decoder guidance part-way")
    if job.task in ("variation", "edit") and job.image is None:
        raise ValueError(f"task {job.task!r} needs an image")
    if job.task == "edit" and job.mask is None:
        raise ValueError("task 'edit' needs a mask")


def raise_if_cancelled(job: ImageJob) -> None:
    if job.should_cancel is not None and job.should_cancel():
        raise Cancelled()


def seeded_generators(device: torch.device, seeds: list[int]) -> list[torch.Generator]:
    """One generator per image, so image i depends on ``seeds[i]`` alone."""
    import torch

    return [torch.Generator(device).manual_seed(seed) for seed in seeds]


def parameter_counts(components: dict[str, Any]) -> dict[str, int]:
    """Parameters per named ``torch.nn.Module``."""
    return {name: sum(p.numel() for p in module.parameters()) for name, module in components.items()}


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """Images in [-1, 1], shaped (N, 3, H, W), as RGB PIL images."""
    import torch

    array = ((images.float() * 0.5 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return [Image.fromarray(a) for a in array.permute(0, 2, 3, 1).cpu().numpy()]


def preview_steps(total_steps: int, count: int) -> list[int]:
    """``count`` step indices, evenly spaced, all strictly before the last step.

    At most ``total_steps - 1`` previews exist (one per step but the last);
    asking for more gives that many, as OpenAI's partial images may be fewer
    than requested when the image is finished sooner.
    """
    count = min(count, total_steps - 1)
    return [((j + 1) * total_steps) // (count + 1) - 1 for j in range(max(count, 0))]


_NOTHING = object()


@contextmanager
def after_each_step(scheduler: Any, observer: Callable[[int, Any], None]) -> Iterator[None]:
    """Call ``observer(step_index, step_output)`` after every ``scheduler.step`` inside the block.

    Pipelines expose the latents after each step but not the scheduler's
    estimate of the clean sample, which makes far better previews, and UnCLIP
    has no step callback at all. Wrapping the scheduler instance's ``step`` for
    one call gives both without copying any pipeline loop.
    """
    original_step = scheduler.step
    calls = 0

    def step(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        output = original_step(*args, **kwargs)
        observer(calls, output)
        calls += 1
        return output

    # An instance attribute shadows the class's method; hooks may nest, so put back
    # whatever was there before (an outer hook's wrapper, or nothing).
    shadowed = scheduler.__dict__.get("step", _NOTHING)
    scheduler.step = step
    try:
        yield
    finally:
        if shadowed is _NOTHING:
            del scheduler.step
        else:
            scheduler.step = shadowed


def predicted_clean(step_output: Any) -> Any:
    """The scheduler's estimate of the final sample, or the new sample if it gives none."""
    predicted = getattr(step_output, "pred_original_sample", None)
    return predicted if predicted is not None else step_output.prev_sample
