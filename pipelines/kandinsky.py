"""Kandinsky 2.2 backend: CLIP prior + MoVQ latent decoder (the combined pipeline, or its inpaint variant).

A batch is one prior call per kind of negative prompt and one decoder call for all jobs. Each image's own seeded
``torch.Generator`` makes its noise: image i depends on ``seeds[i]`` alone (up to rounding between batch sizes). Edits:
diffusers' inpaint decoder with inpaint weights, else blended latents; whole-image edits start from noised latents.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch
from diffusers import KandinskyV22InpaintPipeline, KandinskyV22Pipeline, KandinskyV22PriorPipeline
from PIL import Image

from patches.diffusers import check_tested, prepare_inpaint_masks_with, stop_guidance

from . import kandinsky_mask
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
    keep_rows,
    raise_if_cancelled,
    report_progress,
    run_alone,
    seeded_generators,
    wants_to_stop,
)
from .device import dtype_name, one_cpu_thread
from .errors import Cancelled
from .img2img import ImageStart, image_start, starting_at
from .inpaint import LatentBlend, composite_unmasked, inpaint_inputs, latent_blend, resized_original
from .memory import parameter_counts
from .model_config import EaselConfig, kandinsky_native_size
from .presets import complexities_for, presets_for
from .scheduler_hooks import after_each_step
from .step_cache import step_caching
from .tasks import Task
from .walks import animate, mix_in_images

INPAINT_UNET_CHANNELS = 9


class KandinskyBackend:
    """An :class:`pipelines.base.ImageBackend` for Kandinsky 2.2-format models."""

    def __init__(self, name: str, combined: Any, config: EaselConfig, *, presets: str, device: torch.device):
        """``combined``: a (possibly inpaint) combined pipeline on ``device``, as :mod:`pipelines.loader` loads it."""
        self.device = device
        self.prior_pipe: KandinskyV22PriorPipeline = combined.prior_pipe
        self.decoder_pipe: KandinskyV22Pipeline | KandinskyV22InpaintPipeline = combined.decoder_pipe
        self.inpaint_weights = self.decoder_pipe.unet.config.in_channels == INPAINT_UNET_CHANNELS
        check_tested()  # the diffusers internals patched here and in _GuidanceInterval
        if self.inpaint_weights:
            prepare_inpaint_masks_with(kandinsky_mask.shrink_kept_region)
        self.movq_scale_factor = self.decoder_pipe.movq_scale_factor
        self._zero_image_embed = self._encode_zero_image()
        # Without a negative prompt the prior pipeline re-encodes an all-zero image on
        # every call to get the negative embedding; hand it the cached one instead.
        self.prior_pipe.get_zero_embed = self._zero_embeds
        self._stages = {  # the modules each pipeline stage runs, timed for metrics
            "text_encoder": self.prior_pipe.text_encoder,
            "image_encoder": self.prior_pipe.image_encoder,
            "prior": self.prior_pipe.prior,
            "decoder": self.decoder_pipe.unet,
            "image_decode": self.decoder_pipe.movq.decoder,
        }
        native_w, native_h = kandinsky_native_size(
            config, self.decoder_pipe.unet.config.sample_size, len(self.decoder_pipe.movq.config.block_out_channels)
        )
        self.info = ModelInfo(
            name=name,
            family="kandinsky22",
            native_area=native_w * native_h,
            size_multiple=self.movq_scale_factor**2,
            min_side=config.min_side,
            max_side=config.max_side,
            fixed_native_size=None,
            tasks=frozenset(Task),
            presets=presets_for(presets),
            parameter_counts=parameter_counts(_components(combined)),
            device=str(device),
            dtype=dtype_name(self.decoder_pipe.unet.dtype),
            supports_negative_prompt=True,
            created=config.created,
            complexities=complexities_for(presets),
            supports_animation=True,
        )

    # -- ImageBackend ----------------------------------------------------------------

    def count_tokens(self, prompt: str) -> int:
        return len(self.prior_pipe.tokenizer(prompt, add_special_tokens=False).input_ids)

    def batch_key(self, job: ImageJob) -> Hashable | None:
        if job.frames > 1:
            return None  # an animation is many decoder calls of its own
        if job.task == Task.EDIT and job.mask is None:  # whole-image edits share a schedule cut by strength
            return (job.task, job.width, job.height, job.preset, job.strength)
        if job.task == Task.EDIT and self.inpaint_weights:
            return None  # diffusers' inpaint decoder applies the first row's image and mask to every row
        return (job.task, job.width, job.height, job.preset)

    def run(self, job: ImageJob, control: JobControl = JobControl()) -> list[Image.Image]:
        return run_alone(self, job, control)

    @torch.inference_mode()
    def run_batch(self, tickets: Sequence[Ticket]) -> BatchResult:
        outcomes: dict[Ticket, JobOutcome] = {}
        live = []
        for ticket in tickets:
            try:
                check_job(ticket.job, self.info)
                raise_if_cancelled(ticket.control)
            except (ValueError, Cancelled) as error:
                outcomes[ticket] = error
            else:
                live.append(ticket)
        watch = StageWatch(self.device, self.info.name)
        if live:
            with watch.watching(self._stages):
                if live[0].job.frames > 1:  # alone in its batch (batch_key)
                    outcomes[live[0]] = self._animate(live[0])
                else:
                    outcomes.update(self._run_live(live))
        return BatchResult([outcomes[ticket] for ticket in tickets], watch.seconds)

    # -- stages -----------------------------------------------------------------------

    def _run_live(self, tickets: list[Ticket]) -> dict[Ticket, JobOutcome]:
        """The jobs' images, or Cancelled for those that left; the jobs share one task, size and preset."""
        if tickets[0].job.task == Task.VARIATION:
            embeds = {ticket: self._variation_embeds(ticket.job) for ticket in tickets}
            left: dict[Ticket, JobOutcome] = {}
        else:
            embeds, left = self._text_to_embeds(tickets)
        rows = BatchRows([ticket for ticket in tickets if ticket not in left])
        if not rows.tickets:
            return left
        image_embeds = torch.cat([embeds[ticket][0] for ticket in rows.tickets])
        negative = torch.cat([embeds[ticket][1] for ticket in rows.tickets])
        generators = [generator for job in rows.jobs for generator in seeded_generators(self.device, job.seeds)]
        if rows.jobs[0].task == Task.EDIT:
            left.update(self._edit(rows, image_embeds, negative, generators))
        else:
            left.update(self._decode(rows, image_embeds, negative, generators))
        return left

    def _animate(self, ticket: Ticket) -> JobOutcome:
        """Frames walking between two prior samples, each decoded from the image's own initial noise."""
        return animate(ticket, self._text_to_embeds, self._decode, self.device)

    def _text_to_embeds(self, tickets: list[Ticket]) -> tuple[dict[Ticket, tuple[torch.Tensor, torch.Tensor]], dict]:
        """Prior: each job's ``n`` image embeddings and ``n`` negative ones; and the jobs that left meanwhile.

        Jobs with and without a negative prompt take separate prior calls: the
        negative prompt is also the prior's unconditional input.
        """
        embeds: dict[Ticket, tuple[torch.Tensor, torch.Tensor]] = {}
        left: dict[Ticket, JobOutcome] = {}
        for group in (
            [t for t in tickets if t.job.negative_prompt is None],
            [t for t in tickets if t.job.negative_prompt is not None],
        ):
            if not group:
                continue
            try:
                output = self._prior_call(group)
            except Cancelled:  # every job of the call left
                left.update({ticket: Cancelled() for ticket in group})
                continue
            start = 0
            for ticket in group:
                rows = slice(start, start + ticket.job.n)
                embeds[ticket] = (output.image_embeds[rows], output.negative_image_embeds[rows])
                start += ticket.job.n
        return embeds, left

    def _prior_call(self, tickets: list[Ticket]) -> Any:
        # The prior's own generators: the decoder's must start unused. Negative prompts are extra
        # batch rows after the prompts'; those rows get their own generators from the same seeds.
        jobs = [ticket.job for ticket in tickets]
        with_negative = jobs[0].negative_prompt is not None
        generators = [
            g for _ in range(1 + with_negative) for job in jobs for g in seeded_generators(self.device, job.seeds)
        ]
        prompt: str | list[str] = jobs[0].prompt
        negative: str | list[str] | None = jobs[0].negative_prompt
        per_prompt = jobs[0].n
        if len(jobs) > 1:  # one job keeps the very call a request alone has always made
            prompt = [job.prompt for job in jobs for _ in range(job.n)]
            negative = [job.negative_prompt or "" for job in jobs for _ in range(job.n)] if with_negative else None
            per_prompt = 1
        return self.prior_pipe(
            prompt=prompt,
            negative_prompt=negative,
            num_images_per_prompt=per_prompt,
            num_inference_steps=jobs[0].preset.prior_steps,
            guidance_scale=jobs[0].preset.prior_guidance,
            generator=generators,
            callback_on_step_end=_stop_when_all_left(tickets),
        )

    def _variation_embeds(self, job: ImageJob) -> tuple[torch.Tensor, torch.Tensor]:
        assert job.image is not None  # check_job
        return self._image_to_embed(job.image).repeat(job.n, 1), self._zero_embeds(job.n)

    def _image_to_embed(self, image: Image.Image) -> torch.Tensor:
        processor = self.prior_pipe.image_processor
        pixels = processor(image.convert("RGB"), return_tensors="pt").pixel_values
        encoder = self.prior_pipe.image_encoder
        return encoder(pixels.to(self.device, encoder.dtype)).image_embeds

    def _encode_zero_image(self) -> torch.Tensor:
        encoder = self.prior_pipe.image_encoder
        side = encoder.config.image_size
        with torch.inference_mode(), one_cpu_thread(self.device):
            zeros = torch.zeros(1, 3, side, side, device=self.device, dtype=encoder.dtype)
            return encoder(zeros).image_embeds

    def _zero_embeds(self, batch_size: int = 1, device: torch.device | None = None) -> torch.Tensor:
        return self._zero_image_embed.repeat(batch_size, 1).to(device or self.device)

    def _decode(
        self,
        rows: BatchRows,
        embeds: torch.Tensor,
        negative: torch.Tensor,
        generators: list[torch.Generator],
        start: ImageStart | None = None,
    ) -> dict[Ticket, JobOutcome]:
        """Decoder from image embeddings (from noise, or ``start``); inpaint weights get an all-repaint mask."""
        extra: dict[str, Any] = {}
        if self.inpaint_weights:
            # Everything repainted: the UNet sees no masked image, i.e. plain generation.
            size = (rows.jobs[0].width, rows.jobs[0].height)
            extra = inpaint_inputs(Image.new("RGB", size), Image.new("L", size, 255), rows.size)
        return self._run_decoder(rows, embeds, negative, generators, extra, start=start)

    def _run_decoder(
        self,
        rows: BatchRows,
        embeds: torch.Tensor,
        negative: torch.Tensor,
        generators: list[torch.Generator],
        extra: dict[str, Any],
        blend: LatentBlend | None = None,
        start: ImageStart | None = None,
    ) -> dict[Ticket, JobOutcome]:
        first = rows.jobs[0]
        steps = first.preset.decoder_steps
        run = start.steps if start is not None else steps  # a whole-image edit runs the schedule's end only
        previews = self._previews(rows, run, blend)
        scheduler = self.decoder_pipe.scheduler
        interval = _GuidanceInterval(first.preset.decoder_guidance_min_timestep, inpaint=self.inpaint_weights)
        guidance = interval.first_step_guidance(first.preset.decoder_guidance, scheduler, steps)

        def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict) -> dict:
            keep = rows.drop_leaving()  # raises Cancelled when no job is left
            updates = {}
            if keep is not None:
                updates = {name: keep_rows(tensor, keep) for name, tensor in tensors.items()}
                # In place: the pipeline passes this very list to every scheduler step.
                generators[:] = [g for g, kept in zip(generators, keep.tolist(), strict=True) if kept]
                for follower in filter(None, (previews, blend)):
                    follower.keep_rows(keep)
            for ticket in rows.tickets:
                report_progress(ticket.control, "decoder", step + 1, run)
            if previews is not None:
                previews.emit(step)
            next_timestep = scheduler.timesteps[step + 1] if step + 1 < len(scheduler.timesteps) else None
            current = {**tensors, **updates}
            updates.update(interval.maybe_stop(pipe, next_timestep, current))
            if blend is not None:
                updates["latents"] = blend.apply(current["latents"], next_timestep, scheduler)
            return updates

        recording = after_each_step(scheduler, previews.record) if previews is not None else contextlib.nullcontext()
        with recording, self._step_caching(first.preset.decoder_step_cache):
            output = self.decoder_pipe(
                image_embeds=embeds,
                negative_image_embeds=negative,
                num_images_per_prompt=1,  # the batch is already one row per image (the notes' size-mismatch pitfall)
                height=first.height,
                width=first.width,
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=generators,
                latents=blend.initial_noise if blend is not None else start.latents if start is not None else None,
                callback_on_step_end=on_step_end,
                callback_on_step_end_tensor_inputs=["latents", *interval.doubled],
                **extra,
            )
        return rows.outcomes(output.images)

    def _step_caching(self, interval: int | None) -> contextlib.AbstractContextManager:
        """The decoder call's step cache; the stock UNet, untouched, when neither the model nor the job has one."""
        if interval is None and getattr(self.decoder_pipe.unet, "step_cache", None) is None:
            return contextlib.nullcontext()
        return step_caching(self.decoder_pipe.unet, self.decoder_pipe.scheduler, interval)

    def _previews(self, rows: BatchRows, steps: int, blend: LatentBlend | None) -> Any:
        """Partial images for the jobs that asked for them (streams only: a plain request never loads previews)."""
        if not any(job.preview_count > 0 for job in rows.jobs):
            return None
        from .previews import Previews

        def decode(latents: torch.Tensor, rows: slice) -> torch.Tensor:
            clean = blend.clean(latents, rows) if blend is not None else latents
            return self.decoder_pipe.movq.decode(clean, force_not_quantize=True).sample

        return Previews(rows, steps, decode)

    def _edit(
        self, rows: BatchRows, embeds: torch.Tensor, negative: torch.Tensor, generators: list[torch.Generator]
    ) -> dict[Ticket, JobOutcome]:
        embeds = mix_in_images(rows, embeds, self._image_to_embed)  # input_fidelity
        originals = {ticket: resized_original(ticket.job) for ticket in rows.tickets}
        if rows.jobs[0].mask is None:  # whole-image edits: batch_key keeps them apart from masked ones
            scheduler = self.decoder_pipe.scheduler
            start = image_start(rows, originals, generators, self.decoder_pipe.movq, scheduler, self.device)
            with starting_at(scheduler, rows.jobs[0].preset.decoder_steps, rows.jobs[0].strength):
                return self._decode(rows, embeds, negative, generators, start)
        if self.inpaint_weights:  # one job: batch_key keeps inpaint-weight edits apart
            (ticket,) = rows.tickets
            job = ticket.job
            assert job.mask is not None  # check_job
            mask = job.mask.convert("L").resize((job.width, job.height), Image.Resampling.BILINEAR)
            extra = inpaint_inputs(originals[ticket], mask, job.n)
            outcomes = self._run_decoder(rows, embeds, negative, generators, extra)
        else:
            blend = latent_blend(rows, originals, generators, self.decoder_pipe.movq, self.device)
            outcomes = self._run_decoder(rows, embeds, negative, generators, {}, blend)
        for ticket in rows.tickets + rows.left:
            images, repaint = outcomes[ticket], ticket.job.mask
            if isinstance(images, list):
                assert repaint is not None  # check_job
                outcomes[ticket] = [composite_unmasked(originals[ticket], image, repaint) for image in images]
        return outcomes


class _GuidanceInterval:
    """Classifier-free guidance only at high noise: at timesteps below ``min_timestep`` the decoder runs unguided.

    Guidance decides what is drawn while the latents are mostly noise; at low noise it over-pushes
    settled details (docs/easel-mini.md, "Guidance at high noise only"). Stopping is diffusers'
    dynamic-guidance recipe: scale 1 and the conditional half of every doubled input, so the remaining
    steps cost half as much.
    """

    def __init__(self, min_timestep: int | None, *, inpaint: bool):
        self.min_timestep = min_timestep
        # The pipeline inputs that carry an unconditional and a conditional half.
        self.doubled = ["image_embeds", "masked_image", "mask_image"] if inpaint else ["image_embeds"]

    def first_step_guidance(self, guidance: float, scheduler: Any, steps: int) -> float:
        """The scale to start with: none at all if even the first step is below the interval."""
        if self.min_timestep is None:
            return guidance
        scheduler.set_timesteps(steps)  # the pipeline sets the same ones again when it starts
        return 1.0 if int(scheduler.timesteps[0]) < self.min_timestep else guidance

    def maybe_stop(self, pipe: Any, next_timestep: Any, tensors: dict) -> dict:
        if self.min_timestep is None or next_timestep is None or not pipe.do_classifier_free_guidance:
            return {}
        if int(next_timestep) >= self.min_timestep:
            return {}
        stop_guidance(pipe)
        # Unconditional rows come first (negative embeddings; the mask inputs are two equal copies).
        return {name: tensors[name].chunk(2)[1] for name in self.doubled}


def _stop_when_all_left(tickets: list[Ticket]) -> Callable[..., dict]:
    """A prior step callback: each job's progress, and the end of the call once every job in it asked to stop.

    Rows are not dropped one job at a time: the prior is a small share of the work (leavers go before the decoder).
    """

    def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict) -> dict:
        if all(wants_to_stop(ticket.control) for ticket in tickets):
            raise Cancelled()
        for ticket in tickets:
            report_progress(ticket.control, "prior", step + 1, ticket.job.preset.prior_steps)
        return {}

    return on_step_end


def _components(combined: Any) -> dict[str, Any]:
    names = {"text_encoder": "prior_text_encoder", "image_encoder": "prior_image_encoder", "prior": "prior_prior"}
    return {name: getattr(combined, attribute) for name, attribute in {**names, "unet": "unet", "movq": "movq"}.items()}
