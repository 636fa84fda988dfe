"""The contract between the engine and a model backend, and the steps every backend shares.

The engine (in ``server/``) only ever sees the types here: it never imports
diffusers. A backend only ever sees these types: it never sees HTTP.

A backend produces images at a *native* resolution it chooses with :meth:`ModelInfo.native_size_for`;
the server fits them to the size the client asked for. torch is imported inside the shared steps, not
at the top, so the server can start listening before torch has loaded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, Union

from PIL import Image

from .errors import Cancelled, NonFiniteOutput
from .tasks import Task

if TYPE_CHECKING:
    import torch


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
    decoder_step_cache: int | None = None  # Kandinsky only: pipelines.step_cache's interval; None: the model's own

    def adjusted(self, *, decoder_guidance_factor: float = 1.0, **overrides: int | float | None) -> StagePreset:
        """This preset with decoder guidance scaled (``style``), then the given non-None fields replaced."""
        scaled = replace(self, decoder_guidance=self.decoder_guidance * decoder_guidance_factor)
        given: dict[str, Any] = {name: value for name, value in overrides.items() if value is not None}
        return replace(scaled, **given)


@dataclass(frozen=True)
class PriorPreset:
    """The prior stage's steps and guidance: what ``complexity`` chooses, apart from the decoder's ``quality``."""

    prior_steps: int
    prior_guidance: float


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
    tasks: frozenset[Task]
    presets: dict[str, StagePreset]  # quality name -> preset
    parameter_counts: dict[str, int]  # component -> number of parameters
    device: str
    dtype: str  # the weights' in memory
    supports_negative_prompt: bool = True
    supports_guidance_interval: bool = True  # honours StagePreset.decoder_guidance_min_timestep
    supports_step_cache: bool = False  # honours StagePreset.decoder_step_cache (not when compiled)
    created: int = 0  # unix time the weights were written
    complexities: dict[str, PriorPreset] = field(default_factory=dict)  # complexity name -> prior preset
    supports_animation: bool = False  # runs jobs with frames > 1 (an embedding walk per image)
    optimizations: dict[str, Any] = field(default_factory=dict)  # what pipelines.optimize turned on at load
    edit_modes: tuple[str, ...] = ("masked", "whole_image")  # with "edit" in tasks: the edits it can make
    edit_strength: bool = True  # whole-image edits start the decoder from the noised input (False: from noise)
    compute_dtype: str | None = None  # what layers compute in, where not ``dtype`` (pipelines.compute_dtype)

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
    mask: Image.Image | None = None  # edit: mode "L", image's size, 255 = repaint; None: whole image (strength)
    references: list[Image.Image] = field(default_factory=list)  # edit: more inputs, for their embeddings only
    image_weights: tuple[float, ...] | None = None  # edit: relative weight of image, then references; None: equal
    strength: float = 1.0  # whole-image edit: share (0-1] of the decoder's schedule run from the noised input
    preview_count: int = 0  # partial images wanted, decoded at evenly spaced decoder steps
    # Edits: the share (0-1) of the input images' own CLIP image embedding (several: combined, walks.combine_embeds)
    # mixed into the prompt's before decoding (input_fidelity); 0 leaves the prompt's embedding alone.
    input_image_weight: float = 0.0
    # > 1: each image is an animation of this many frames, a walk through image-embedding space with the
    # image's initial noise held (pipelines.walks); run returns n * frames images, image i's frames together.
    frames: int = 1


@dataclass(frozen=True)
class JobControl:
    """How whoever submitted a job follows it and stops it while it runs; a backend only calls these.

    The engine makes one per submitted job; ``easel generate`` one with a progress bar.
    """

    on_preview: Callable[[int, list[Image.Image]], None] | None = None  # (index, images)
    should_cancel: Callable[[], bool] | None = None  # true once the job's client has gone
    # (stage, steps done, steps in the stage) after each denoising step; stages are "prior", "decoder" and,
    # for Karlo, "super_res".
    on_progress: Callable[[str, int, int], None] | None = None


@dataclass(frozen=True, eq=False)
class Ticket:
    """A job in a backend call: the request, as a plain value, and its control.

    Equal only to itself, so a backend keys each job's state in a batch by its ticket.
    """

    job: ImageJob
    control: JobControl = JobControl()


JobOutcome = Union[list[Image.Image], BaseException]  # noqa: UP007 (a runtime alias: Python 3.10 has no list[...] | type)
# A job's images, or why it has none.


@dataclass
class BatchResult:
    """What one pipeline call made: an outcome per job, in order, and the seconds each stage took."""

    outcomes: list[JobOutcome]
    stage_seconds: dict[str, float] = field(default_factory=dict)


class ImageBackend(Protocol):
    """A loaded model. ``run_batch`` is called from a worker thread, one call at a time per backend."""

    info: ModelInfo

    def batch_key(self, job: ImageJob) -> Hashable | None:
        """Jobs with equal keys may share one pipeline call; None: this job always runs alone."""
        ...

    def run_batch(self, tickets: Sequence[Ticket]) -> BatchResult:
        """Run jobs of one batch key together; each gets ``job.n`` RGB images at its native size, in seed order.

        A job's own failure is its outcome, not an exception: Cancelled when it left (its
        control's ``should_cancel`` turned true; it stops costing work at the next denoising
        step), MissingComponent or ValueError when the model cannot do it.
        """
        ...

    def run(self, job: ImageJob, control: JobControl = JobControl()) -> list[Image.Image]:
        """One job alone: its images, or its outcome raised."""
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
    if job.preset.decoder_step_cache is not None and not info.supports_step_cache:
        raise ValueError(f"{info.name!r} has no decoder step cache")
    if job.task in (Task.VARIATION, Task.EDIT) and job.image is None:
        raise ValueError(f"task {job.task!r} needs an image")
    if job.image_weights is not None and len(job.image_weights) != 1 + len(job.references):
        raise ValueError(f"need one weight per input image: {1 + len(job.references)} images, {job.image_weights}")
    if not 0 < job.strength <= 1:
        raise ValueError(f"strength must be in (0, 1], not {job.strength}")
    if job.frames > 1 and (job.task != Task.GENERATE or not info.supports_animation):
        raise ValueError(f"{info.name!r} cannot animate a {job.task!r} job")


def use_cpu_threads(count: int) -> None:
    """How many CPU threads the calling thread's pipeline calls use from now on (the engine sets it per batch).

    OpenMP keeps the setting per thread, so two worker threads can each run on
    their own share of the cores without oversubscribing them. Set every time, even
    when ``get_num_threads`` already says ``count``: it reads this thread's OpenMP
    value, while MKL's count is process-wide and may have been changed from another
    thread, and a different MKL thread count changes the pixels' last bits.
    """
    import torch

    torch.set_num_threads(count)


def wants_to_stop(control: JobControl) -> bool:
    return control.should_cancel is not None and control.should_cancel()


def raise_if_cancelled(control: JobControl) -> None:
    if wants_to_stop(control):
        raise Cancelled()


def report_progress(control: JobControl, stage: str, done: int, total: int) -> None:
    if control.on_progress is not None:
        control.on_progress(stage, done, total)


def seeded_generators(device: torch.device, seeds: list[int]) -> list[torch.Generator]:
    """One generator per image, so image i depends on ``seeds[i]`` alone."""
    import torch

    return [torch.Generator(device).manual_seed(seed) for seed in seeds]


def run_alone(backend: ImageBackend, job: ImageJob, control: JobControl) -> list[Image.Image]:
    """``job`` as a batch of one: its images, or its outcome raised."""
    outcome = backend.run_batch([Ticket(job, control)]).outcomes[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def run_isolated(backend: ImageBackend, tickets: list[Ticket]) -> BatchResult:
    """The batch's outcomes; when a shared call fails as a whole, each job runs alone so one bad job fails alone."""
    try:
        return backend.run_batch(tickets)
    except BaseException as error:  # reported to the requests that own the jobs
        if len(tickets) == 1 or isinstance(error, Cancelled):
            return BatchResult([error] * len(tickets))
        outcomes: list[JobOutcome] = []
        for ticket in tickets:
            try:
                outcomes.extend(backend.run_batch([ticket]).outcomes)
            except BaseException as alone:
                outcomes.append(alone)
        return BatchResult(outcomes)


class BatchRows:
    """Which rows of a batched pipeline call belong to which job, as jobs leave it.

    Rows are in ticket order, ``job.n`` each. A job whose control's ``should_cancel``
    turns true leaves at the next step: its rows are dropped from every batched
    tensor, so it stops costing work and the others go on undisturbed.
    """

    def __init__(self, tickets: Sequence[Ticket]) -> None:
        self.tickets = list(tickets)  # the jobs still in the batch, in row order
        self.left: list[Ticket] = []

    @property
    def jobs(self) -> list[ImageJob]:
        return [ticket.job for ticket in self.tickets]

    @property
    def size(self) -> int:
        return sum(ticket.job.n for ticket in self.tickets)

    def spans(self) -> list[tuple[Ticket, slice]]:
        spans, start = [], 0
        for ticket in self.tickets:
            spans.append((ticket, slice(start, start + ticket.job.n)))
            start += ticket.job.n
        return spans

    def drop_leaving(self) -> torch.Tensor | None:
        """Remove the jobs that asked to stop; the boolean mask of rows kept, or None if none left.

        Raises Cancelled when no job is left, which ends the pipeline call.
        """
        leaving = [ticket for ticket in self.tickets if wants_to_stop(ticket.control)]
        if not leaving:
            return None
        if len(leaving) == len(self.tickets):
            raise Cancelled()
        import torch

        keep = torch.tensor([ticket not in leaving for ticket in self.tickets for _ in range(ticket.job.n)])
        self.tickets = [ticket for ticket in self.tickets if ticket not in leaving]
        self.left.extend(leaving)
        return keep

    def outcomes(self, images: Sequence[Image.Image]) -> dict[Ticket, JobOutcome]:
        """Each job's outcome: its slice of the call's images, or Cancelled if it left."""
        done: dict[Ticket, JobOutcome] = {ticket: list(images[rows]) for ticket, rows in self.spans()}
        done.update({ticket: Cancelled() for ticket in self.left})
        return done


def keep_rows(tensor: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``tensor`` without the dropped rows; a classifier-free-guidance input (two halves, each one row per
    image: unconditional then conditional) loses the rows in both halves."""
    if tensor.shape[0] == 2 * keep.shape[0]:
        return tensor[keep.repeat(2).to(tensor.device)]
    return tensor[keep.to(tensor.device)]


class StageWatch:
    """Each pipeline stage's forward passes, watched: their seconds summed (for metrics), their outputs checked.

    On a GPU the watch waits for the device at every boundary, so the figures are the
    stage's own work rather than the time to queue it. An output with NaN or
    infinite values raises :class:`NonFiniteOutput` at once: without the check
    it would be clamped into an all-black image and answered 200.
    """

    def __init__(self, device: torch.device, model: str) -> None:
        self.seconds: dict[str, float] = {}
        self.model = model
        self._sync = device.type == "cuda"

    def _now(self) -> float:
        if self._sync:
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()

    def _finished(self, name: str, started: float, output: Any) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + self._now() - started
        import torch

        tensor = _first_tensor(output)
        if tensor is not None and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise NonFiniteOutput(self.model, name)

    @contextmanager
    def watching(self, stages: dict[str, Any]) -> Iterator[None]:
        """Inside the block, time and check every forward pass of each ``stages`` module (by stage name)."""
        handles = []
        for name, module in stages.items():
            started: list[float] = []
            handles.append(module.register_forward_pre_hook(lambda *_, started=started: started.append(self._now())))
            handles.append(
                module.register_forward_hook(
                    lambda _module, _args, output, name=name, started=started: self._finished(
                        name, started.pop(), output
                    )
                )
            )
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


def _first_tensor(output: Any) -> torch.Tensor | None:
    """A module's main output: itself, or the first tensor of its tuple or ``ModelOutput``."""
    import torch

    values = output.values() if isinstance(output, dict) else output if isinstance(output, tuple) else (output,)
    return next((value for value in values if isinstance(value, torch.Tensor)), None)
