"""Karlo (unCLIP) backend: CLIP prior, 64 px pixel decoder, two-stage super-resolution.

The directory is what ``UnCLIPPipeline.save_pretrained`` writes. Variations
need two more sub-folders, ``image_encoder/`` (CLIPVisionModelWithProjection)
and ``feature_extractor/`` (CLIPImageProcessor), the components
UnCLIPImageVariationPipeline adds; without them the task raises
MissingComponent.

Whole-image edits (no mask) have no image-to-image start: Karlo's decoder
works in pixels from noise. The prompt goes through the prior as for a
generation, and the input images' CLIP image embedding is mixed into the
prior's sample (walks.mix_in_image) before the decoder is conditioned on it.

The output size is fixed by the super-resolution UNet's ``sample_size`` (256
for Karlo v1 alpha). Karlo has no negative prompt and no step callback: the
schedulers' ``step`` is observed instead, for cancellation at every step of
every stage and for previews, which are the decoder's clean-image estimate
(pixels, so no decode is needed) upscaled to the output size.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

from patches.diffusers import register_unclip

from .base import (
    BatchResult,
    BatchRows,
    ImageJob,
    JobControl,
    JobOutcome,
    ModelInfo,
    StageWatch,
    Ticket,
    check_job,
    raise_if_cancelled,
    report_progress,
    run_alone,
    seeded_generators,
)
from .device import dtype_name, from_pretrained_options
from .errors import Cancelled, MissingComponent, NonFiniteOutput
from .memory import parameter_counts
from .model_config import read_easel_config
from .presets import complexities_for, presets_for
from .scheduler_hooks import after_each_step
from .tasks import Task
from .unclip_compat import UnCLIPImageVariationPipeline, UnCLIPPipeline
from .walks import combine_embeds, mix_in_image

VARIATION_COMPONENTS = ("image_encoder", "feature_extractor")
DEFAULT_SUPER_RES_STEPS = 7  # Karlo's own default, for presets that do not set it


class KarloBackend:
    """An :class:`pipelines.base.ImageBackend` for UnCLIP (Karlo) models."""

    def __init__(
        self,
        name: str,
        model_dir: Path,
        *,
        presets: str,
        device: torch.device,
        dtype: torch.dtype,
        compute_dtype: torch.dtype | None = None,
    ):
        """``compute_dtype``: what the layers will compute in, where the loader makes it differ from ``dtype``
        (bfloat16 weights computing in float32: :mod:`pipelines.compute_dtype`)."""
        if device.type == "cpu" and (compute_dtype or dtype) in (torch.float16, torch.bfloat16):
            # The super-resolution stage's antialiased bicubic upscale has no CPU half kernel.
            raise ValueError(f"Karlo cannot run in {dtype_name(dtype)} on the CPU: use float32")
        register_unclip()
        config = read_easel_config(model_dir)
        self.device = device
        self.dtype = dtype
        self.pipe: UnCLIPPipeline = UnCLIPPipeline.from_pretrained(model_dir, **from_pretrained_options(dtype)).to(
            device
        )
        self.pipe.set_progress_bar_config(disable=True)
        self.missing_for_variation = [c for c in VARIATION_COMPONENTS if not (model_dir / c).is_dir()]
        self.variation_pipe = None if self.missing_for_variation else self._load_variation(model_dir)
        side_w, side_h = _square(self.pipe.super_res_first.config.sample_size)
        components = self._components()
        self._stages = {name: module for name, module in components.items() if name != "text_proj"}  # for metrics
        self.info = ModelInfo(
            name=name,
            family="karlo",
            native_area=side_w * side_h,
            size_multiple=side_w,
            min_side=config.min_side,
            max_side=config.max_side,
            fixed_native_size=(side_w, side_h),
            # Variation and edit stay listed without the image encoder, so a request for
            # them gets MissingComponent's explanation rather than "unsupported task".
            tasks=frozenset(Task),
            edit_modes=("whole_image",),
            edit_strength=False,
            presets=presets_for(presets),
            parameter_counts=parameter_counts(components),
            device=str(device),
            dtype=dtype_name(dtype),
            supports_negative_prompt=False,
            supports_guidance_interval=False,
            created=config.created,
            complexities=complexities_for(presets),
            # No animations: UnCLIPPipeline runs prior and decoder in one call, so no embedding can be walked.
        )

    def _load_variation(self, model_dir: Path) -> UnCLIPImageVariationPipeline:
        # Loaded in the serving dtype: the 2023 repositories store this encoder in float16.
        image_encoder = CLIPVisionModelWithProjection.from_pretrained(
            model_dir / "image_encoder", local_files_only=True, dtype=self.dtype
        )
        image_encoder = image_encoder.to(self.device, self.dtype).eval()
        feature_extractor = CLIPImageProcessor.from_pretrained(model_dir / "feature_extractor", local_files_only=True)
        pipe = self.pipe
        variation = UnCLIPImageVariationPipeline(
            decoder=pipe.decoder,
            text_encoder=pipe.text_encoder,
            tokenizer=pipe.tokenizer,
            text_proj=pipe.text_proj,
            feature_extractor=feature_extractor,
            image_encoder=image_encoder,
            super_res_first=pipe.super_res_first,
            super_res_last=pipe.super_res_last,
            decoder_scheduler=pipe.decoder_scheduler,
            super_res_scheduler=pipe.super_res_scheduler,
        )
        variation.set_progress_bar_config(disable=True)
        return variation

    def modules_by_folder(self) -> dict[str, Any]:
        """The loaded components by the model directory's folder names."""
        folders = dict(self.pipe.components)
        if self.variation_pipe is not None:
            folders["image_encoder"] = self.variation_pipe.image_encoder
        return folders

    def _components(self) -> dict[str, Any]:
        """The pipeline's modules by name; all but ``text_proj`` (a few matrix products) are timed as stages."""
        pipe = self.pipe
        components: dict[str, Any] = {
            "text_encoder": pipe.text_encoder,
            "prior": pipe.prior,
            "text_proj": pipe.text_proj,
            "decoder": pipe.decoder,
            "super_res_first": pipe.super_res_first,
            "super_res_last": pipe.super_res_last,
        }
        if self.variation_pipe is not None:
            components["image_encoder"] = self.variation_pipe.image_encoder
        return components

    # -- ImageBackend ----------------------------------------------------------------

    def count_tokens(self, prompt: str) -> int:
        return len(self.pipe.tokenizer(prompt, add_special_tokens=False).input_ids)

    def batch_key(self, job: ImageJob) -> Hashable | None:
        return None  # UnCLIP has no step callback: one job's rows could not leave a shared call

    def run(self, job: ImageJob, control: JobControl = JobControl()) -> list[Image.Image]:
        return run_alone(self, job, control)

    def run_batch(self, tickets: Sequence[Ticket]) -> BatchResult:
        watch = StageWatch(self.device, self.info.name)
        outcomes: list[JobOutcome] = []
        with watch.watching(self._stages):
            for ticket in tickets:  # one at a time (batch_key): the engine sends batches of one
                try:
                    outcomes.append(self._run_one(ticket))
                except (Cancelled, MissingComponent, NonFiniteOutput, ValueError) as error:
                    outcomes.append(error)
        return BatchResult(outcomes, watch.seconds)

    @torch.inference_mode()
    def _run_one(self, ticket: Ticket) -> list[Image.Image]:
        job = ticket.job
        self._check_job(job)
        raise_if_cancelled(ticket.control)
        generators = seeded_generators(self.device, job.seeds)
        steps = {
            "decoder_num_inference_steps": job.preset.decoder_steps,
            "super_res_num_inference_steps": job.preset.super_res_steps or DEFAULT_SUPER_RES_STEPS,
            "decoder_guidance_scale": job.preset.decoder_guidance,
        }
        with self._observed(ticket), self._mixed_in(job):
            if job.task in (Task.GENERATE, Task.EDIT):
                output = self.pipe(
                    prompt=job.prompt,
                    num_images_per_prompt=job.n,
                    prior_num_inference_steps=job.preset.prior_steps,
                    prior_guidance_scale=job.preset.prior_guidance,
                    generator=generators,
                    **steps,
                )
            else:
                assert self.variation_pipe is not None and job.image is not None  # _check_job
                output = self.variation_pipe(
                    image=job.image.convert("RGB"), num_images_per_prompt=job.n, generator=generators, **steps
                )
        return output.images

    # -- edits ------------------------------------------------------------------------

    def _mixed_in(self, job: ImageJob) -> ExitStack:
        """For an edit, while the pipeline runs: the prior's image embeddings mixed with the input images' own.

        ``text_proj`` receives the prior's samples, the conditional rows only (it prepends its own learned
        unconditional embedding for guidance), so replacing its ``image_embeddings`` changes what the decoder
        and the guidance see and nothing else. Each row's prior sample still comes from its own seed.
        """
        stack = ExitStack()
        if job.task != Task.EDIT or job.input_image_weight <= 0:
            return stack
        assert job.image is not None  # _check_job
        combined = combine_embeds(
            [self._image_embed(image) for image in (job.image, *job.references)], job.image_weights
        )

        def mix(module: Any, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
            prior = kwargs["image_embeddings"]
            mixed = mix_in_image(prior, combined.to(prior.dtype), job.input_image_weight)
            return args, {**kwargs, "image_embeddings": mixed}

        handle = self.pipe.text_proj.register_forward_pre_hook(mix, with_kwargs=True)
        stack.callback(handle.remove)
        return stack

    def _image_embed(self, image: Image.Image) -> torch.Tensor:
        """One image's CLIP image embedding (one row), as the variation pipeline computes it."""
        assert self.variation_pipe is not None  # _check_job
        pixels = self.variation_pipe.feature_extractor(images=image.convert("RGB"), return_tensors="pt").pixel_values
        return self.variation_pipe.image_encoder(pixels.to(self.device, self.dtype)).image_embeds

    # -- step observation ---------------------------------------------------------------

    def _observed(self, ticket: Ticket) -> ExitStack:
        """Cancellation and progress after every scheduler step of every stage; previews from decoder steps."""
        stack = ExitStack()
        pipe, job = self.pipe, ticket.job
        decoder_scheduler = pipe.decoder_scheduler
        if ticket.control.on_preview is not None and job.preview_count > 0:
            stack.enter_context(after_each_step(decoder_scheduler, self._preview_observer(ticket)))
        stages = {
            "prior": (pipe.prior_scheduler, job.preset.prior_steps),
            "decoder": (decoder_scheduler, job.preset.decoder_steps),
            "super_res": (pipe.super_res_scheduler, job.preset.super_res_steps or DEFAULT_SUPER_RES_STEPS),
        }
        observed: set[int] = set()
        for stage, (scheduler, total) in stages.items():
            if id(scheduler) not in observed:  # a scheduler shared by two stages is observed once
                observed.add(id(scheduler))
                stack.enter_context(after_each_step(scheduler, _step_observer(ticket.control, stage, total)))
        return stack

    def _preview_observer(self, ticket: Ticket) -> Callable[[int, Any], None]:
        from .previews import Previews

        size = self.info.fixed_native_size
        assert size is not None  # Karlo's output size is fixed

        def decode(pixels: torch.Tensor, rows: slice) -> torch.Tensor:
            # The decoder's estimate is already pixels, at 64 px: upscaled to the output size.
            return F.interpolate(
                pixels.float().clamp(-1, 1), size=(size[1], size[0]), mode="bicubic", align_corners=False
            )

        previews = Previews(BatchRows([ticket]), ticket.job.preset.decoder_steps, decode)

        def observe(step: int, output: Any) -> None:
            previews.record(step, output)
            previews.emit(step)

        return observe

    # -- checks -----------------------------------------------------------------------

    def _check_job(self, job: ImageJob) -> None:
        check_job(job, self.info)
        if job.task == Task.EDIT and job.mask is not None:
            raise ValueError(f"{self.info.name!r} repaints the whole image only: an edit with a mask is not supported")
        if job.task == Task.EDIT and job.strength != 1:
            raise ValueError(f"{self.info.name!r} edits decode from noise: strength must be 1, not {job.strength}")
        if job.task in (Task.VARIATION, Task.EDIT) and self.variation_pipe is None:
            what = "make variations" if job.task == Task.VARIATION else "edit images"
            raise MissingComponent(
                f"model {self.info.name!r} cannot {what}: its directory lacks "
                f"{', '.join(self.missing_for_variation)}. Save CLIPVisionModelWithProjection and "
                "CLIPImageProcessor (from kakaobrain/karlo-v1-alpha-image-variations) into the sub-folders "
                "image_encoder/ and feature_extractor/ of the model directory."
            )


def _step_observer(control: JobControl, stage: str, total: int):
    def after_step(step: int, output: Any) -> None:
        raise_if_cancelled(control)
        report_progress(control, stage, step + 1, total)

    return after_step


def _square(sample_size: int | list[int] | tuple[int, int]) -> tuple[int, int]:
    if isinstance(sample_size, int):
        return sample_size, sample_size
    height, width = sample_size
    return width, height
