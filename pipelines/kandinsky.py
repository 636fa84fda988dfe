"""Kandinsky 2.2 backend: CLIP prior + MoVQ latent decoder, from a combined-pipeline directory.

The directory is what ``KandinskyV22CombinedPipeline.save_pretrained`` writes
(decoder components plus ``prior_*`` sub-folders), or the inpaint variant
(``KandinskyV22InpaintCombinedPipeline``, a decoder UNet with 9 input
channels). An optional ``easel.json`` declares the native size
(see :mod:`pipelines.model_config`).

Each job is one batched prior call and one batched decoder call. Every image
has its own ``torch.Generator`` seeded from its seed, used for its initial
noise and its scheduler noise, so image i depends on ``seeds[i]`` alone (up to
floating-point differences between batch sizes).

Edits: with inpaint weights, diffusers' inpaint decoder. With a standard
4-channel decoder (as easel-mini has), blended latents: after every step the
latents outside the mask are replaced by the original image's latents noised
to the same step, and the result is composited so unmasked pixels are the
original's (:mod:`pipelines.inpaint`). Loading inpaint weights swaps diffusers'
per-pixel mask-preparation loop for :mod:`pipelines.kandinsky_mask`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    KandinskyV22CombinedPipeline,
    KandinskyV22InpaintCombinedPipeline,
    KandinskyV22InpaintPipeline,
    KandinskyV22Pipeline,
    KandinskyV22PriorPipeline,
)
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from . import kandinsky_mask
from .base import (
    ImageJob,
    ModelInfo,
    after_each_step,
    check_job,
    parameter_counts,
    predicted_clean,
    preview_steps,
    raise_if_cancelled,
    report_progress,
    seeded_generators,
    to_pil,
)
from .device import dtype_name, from_pretrained_dtype
from .inpaint import binary_repaint_mask, composite_unmasked
from .model_config import read_easel_config
from .presets import presets_for

REAL_KANDINSKY_NATIVE_SIDE = 512
INPAINT_UNET_CHANNELS = 9


class KandinskyBackend:
    """An :class:`pipelines.base.ImageBackend` for Kandinsky 2.2-format models."""

    def __init__(self, name: str, model_dir: Path, *, presets: str, device: torch.device, dtype: torch.dtype):
        config = read_easel_config(model_dir)
        combined = _load_combined(model_dir, dtype)
        self.device = device
        self.dtype = dtype
        self.prior_pipe: KandinskyV22PriorPipeline = combined.prior_pipe.to(device)
        self.decoder_pipe: KandinskyV22Pipeline | KandinskyV22InpaintPipeline = combined.decoder_pipe.to(device)
        for pipe in (self.prior_pipe, self.decoder_pipe):
            pipe.set_progress_bar_config(disable=True)
        _pin_noise_schedule(self.decoder_pipe.scheduler, device)
        self.inpaint_weights = self.decoder_pipe.unet.config.in_channels == INPAINT_UNET_CHANNELS
        if self.inpaint_weights:
            kandinsky_mask.install()
        self.movq_scale_factor = self.decoder_pipe.movq_scale_factor
        self._zero_image_embed = self._encode_zero_image()
        # Without a negative prompt the prior pipeline re-encodes an all-zero image on
        # every call to get the negative embedding; hand it the cached one instead.
        self.prior_pipe.get_zero_embed = self._zero_embeds
        native_w, native_h = config.native_size or (REAL_KANDINSKY_NATIVE_SIDE, REAL_KANDINSKY_NATIVE_SIDE)
        self.info = ModelInfo(
            name=name,
            family="kandinsky22",
            native_area=native_w * native_h,
            size_multiple=self.movq_scale_factor**2,
            min_side=config.min_side,
            max_side=config.max_side,
            fixed_native_size=None,
            tasks=frozenset({"generate", "variation", "edit"}),
            presets=presets_for(presets),
            parameter_counts=parameter_counts(_components(combined)),
            device=str(device),
            dtype=dtype_name(dtype),
            supports_negative_prompt=True,
            created=config.created,
        )

    # -- ImageBackend ----------------------------------------------------------------

    def count_tokens(self, prompt: str) -> int:
        return len(self.prior_pipe.tokenizer(prompt, add_special_tokens=False).input_ids)

    @torch.inference_mode()
    def run(self, job: ImageJob) -> list[Image.Image]:
        check_job(job, self.info)
        raise_if_cancelled(job)
        generators = seeded_generators(self.device, job.seeds)
        if job.task == "generate":
            embeds, negative = self._text_to_embeds(job)
            return self._decode(job, embeds, negative, generators)
        if job.task == "variation":
            assert job.image is not None  # check_job
            embeds = self._image_to_embed(job.image).repeat(job.n, 1)
            return self._decode(job, embeds, self._zero_embeds(job.n), generators)
        embeds, negative = self._text_to_embeds(job)
        return self._edit(job, embeds, negative, generators)

    # -- stages -----------------------------------------------------------------------

    def _text_to_embeds(self, job: ImageJob) -> tuple[torch.Tensor, torch.Tensor]:
        """Prior: ``n`` image embeddings for the prompt and ``n`` negative ones."""
        # The prior's own generators: the decoder's must start unused.
        generators = seeded_generators(self.device, job.seeds)
        if job.negative_prompt is not None:
            # The prior embeds the negative prompt as extra batch rows after the
            # prompt's; give those rows their own generators from the same seeds.
            generators += seeded_generators(self.device, job.seeds)
        output = self.prior_pipe(
            prompt=job.prompt,
            negative_prompt=job.negative_prompt,
            num_images_per_prompt=job.n,
            num_inference_steps=job.preset.prior_steps,
            guidance_scale=job.preset.prior_guidance,
            generator=generators,
            callback_on_step_end=_cancel_check(job),
        )
        return output.image_embeds, output.negative_image_embeds

    def _image_to_embed(self, image: Image.Image) -> torch.Tensor:
        processor = self.prior_pipe.image_processor
        pixels = processor(image.convert("RGB"), return_tensors="pt").pixel_values
        encoder = self.prior_pipe.image_encoder
        return encoder(pixels.to(self.device, encoder.dtype)).image_embeds

    def _encode_zero_image(self) -> torch.Tensor:
        encoder = self.prior_pipe.image_encoder
        side = encoder.config.image_size
        with torch.inference_mode():
            zeros = torch.zeros(1, 3, side, side, device=self.device, dtype=encoder.dtype)
            return encoder(zeros).image_embeds

    def _zero_embeds(self, batch_size: int = 1, device: torch.device | None = None) -> torch.Tensor:
        return self._zero_image_embed.repeat(batch_size, 1).to(device or self.device)

    def _decode(
        self,
        job: ImageJob,
        embeds: torch.Tensor,
        negative: torch.Tensor,
        generators: list[torch.Generator],
    ) -> list[Image.Image]:
        """Decoder from image embeddings; inpaint weights get an all-repaint mask."""
        extra: dict[str, Any] = {}
        if self.inpaint_weights:
            # Everything repainted: the UNet sees no masked image, i.e. plain generation.
            blank = Image.new("RGB", (job.width, job.height))
            everything = Image.new("L", (job.width, job.height), 255)
            extra = _inpaint_inputs(blank, everything, job.n)
        return self._run_decoder(job, embeds, negative, generators, extra)

    def _run_decoder(
        self,
        job: ImageJob,
        embeds: torch.Tensor,
        negative: torch.Tensor,
        generators: list[torch.Generator],
        extra: dict[str, Any],
        blend: _LatentBlend | None = None,
    ) -> list[Image.Image]:
        steps = job.preset.decoder_steps
        previews = _Previews(job, self.decoder_pipe.movq, preview_steps(steps, job.preview_count), blend)
        scheduler = self.decoder_pipe.scheduler
        interval = _GuidanceInterval(job.preset.decoder_guidance_min_timestep, inpaint=self.inpaint_weights)
        guidance = interval.first_step_guidance(job.preset.decoder_guidance, scheduler, steps)

        def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict) -> dict:
            raise_if_cancelled(job)
            report_progress(job, "decoder", step + 1, steps)
            previews.maybe_emit(step)
            next_timestep = scheduler.timesteps[step + 1] if step + 1 < len(scheduler.timesteps) else None
            updates = interval.maybe_stop(pipe, next_timestep, tensors)
            if blend is not None:
                updates["latents"] = blend.apply(tensors["latents"], next_timestep, scheduler)
            return updates

        with after_each_step(scheduler, previews.record):
            output = self.decoder_pipe(
                image_embeds=embeds,
                negative_image_embeds=negative,
                num_images_per_prompt=1,  # the batch is already n rows (see the notes' size-mismatch pitfall)
                height=job.height,
                width=job.width,
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=generators,
                latents=blend.initial_noise if blend is not None else None,
                callback_on_step_end=on_step_end,
                callback_on_step_end_tensor_inputs=["latents", *interval.tensors],
                **extra,
            )
        return output.images

    def _edit(
        self, job: ImageJob, embeds: torch.Tensor, negative: torch.Tensor, generators: list[torch.Generator]
    ) -> list[Image.Image]:
        assert job.image is not None and job.mask is not None  # check_job
        size = (job.width, job.height)
        original = job.image.convert("RGB").resize(size, Image.Resampling.BICUBIC)
        if self.inpaint_weights:
            mask = job.mask.convert("L").resize(size, Image.Resampling.BILINEAR)
            extra = _inpaint_inputs(original, mask, job.n)
            images = self._run_decoder(job, embeds, negative, generators, extra)
        else:
            blend = self._latent_blend(job, original, generators)
            images = self._run_decoder(job, embeds, negative, generators, {}, blend)
        return [composite_unmasked(original, image, job.mask) for image in images]

    def _latent_blend(self, job: ImageJob, original: Image.Image, generators: list[torch.Generator]) -> _LatentBlend:
        movq = self.decoder_pipe.movq
        pixels = torch.from_numpy(np.asarray(original, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
        original_latents = movq.encode(pixels.to(self.device, movq.dtype)).latents
        latent_size = original_latents.shape[-2:]
        assert job.mask is not None  # check_job
        repaint = torch.from_numpy(binary_repaint_mask(job.mask, (job.width, job.height)))[None, None]
        # A latent cell is regenerated if any of its pixels is to be repainted.
        repaint = F.adaptive_max_pool2d(repaint, latent_size).to(self.device, original_latents.dtype)
        noise_shape = (job.n, original_latents.shape[1], *latent_size)
        noise = randn_tensor(noise_shape, generator=generators, device=self.device, dtype=original_latents.dtype)
        return _LatentBlend(original_latents, keep=1 - repaint, initial_noise=noise)


class _LatentBlend:
    """Blended-latent inpainting state: the original's latents, what to keep, the noise used."""

    def __init__(self, original_latents: torch.Tensor, keep: torch.Tensor, initial_noise: torch.Tensor):
        self.original_latents = original_latents
        self.keep = keep
        self.initial_noise = initial_noise

    def apply(self, latents: torch.Tensor, next_timestep: torch.Tensor | None, scheduler: Any) -> torch.Tensor:
        """Latents with the kept area reset to the original at the noise level of ``next_timestep``."""
        if next_timestep is None:
            target = self.original_latents
        else:
            timesteps = torch.tensor([int(next_timestep)], device=latents.device)
            target = scheduler.add_noise(self.original_latents, self.initial_noise, timesteps)
        return self.keep * target + (1 - self.keep) * latents

    def clean(self, predicted: torch.Tensor) -> torch.Tensor:
        return self.keep * self.original_latents + (1 - self.keep) * predicted


class _GuidanceInterval:
    """Classifier-free guidance only at high noise: at timesteps below ``min_timestep`` the decoder runs unguided.

    Guidance decides what is drawn while the latents are mostly noise; applied
    at low noise too it over-pushes details that are already settled (figures
    for easel-mini in the README; Kynkaenniemi et al. 2024 report the same on
    large models). Stopping means what diffusers' dynamic-guidance recipe does:
    guidance scale 1 and the conditional half of every doubled batch input, so
    the remaining steps also cost half as much.
    """

    def __init__(self, min_timestep: int | None, *, inpaint: bool):
        self.min_timestep = min_timestep
        # The pipeline inputs that carry an unconditional and a conditional half.
        doubled = ["image_embeds", "masked_image", "mask_image"] if inpaint else ["image_embeds"]
        self.tensors = doubled if min_timestep is not None else []

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
        pipe._guidance_scale = 1.0  # read by the pipeline's loop (and its do_classifier_free_guidance) each step
        # Unconditional rows come first (negative embeddings; the mask inputs are two equal copies).
        return {name: tensors[name].chunk(2)[1] for name in self.tensors}


class _Previews:
    """Decodes the scheduler's clean-sample estimate at the chosen steps and hands it to the job."""

    def __init__(self, job: ImageJob, movq: Any, steps: list[int], blend: _LatentBlend | None):
        self.job = job
        self.movq = movq
        self.steps = steps if job.on_preview is not None else []
        self.blend = blend
        self.latest: torch.Tensor | None = None

    def record(self, step: int, output: Any) -> None:
        if step in self.steps:
            self.latest = predicted_clean(output)

    def maybe_emit(self, step: int) -> None:
        if step not in self.steps or self.latest is None or self.job.on_preview is None:
            return
        latents = self.blend.clean(self.latest) if self.blend is not None else self.latest
        decoded = self.movq.decode(latents, force_not_quantize=True).sample
        self.job.on_preview(self.steps.index(step), to_pil(decoded))
        self.latest = None


def _inpaint_inputs(image: Image.Image, mask: Image.Image, n: int) -> dict[str, Any]:
    # The inpaint decoder sizes its masked-image batch from these lists, not from
    # the embeddings: one copy per image, or the batch sizes disagree.
    return {"image": [image] * n, "mask_image": [mask] * n}


def _cancel_check(job: ImageJob):
    """After each prior step: stop if the job was cancelled, else report progress."""

    def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict) -> dict:
        raise_if_cancelled(job)
        report_progress(job, "prior", step + 1, job.preset.prior_steps)
        return {}

    return on_step_end


def _pin_noise_schedule(scheduler: Any, device: torch.device) -> None:
    """Keep the scheduler's noise schedule on ``device`` from the start.

    ``add_noise`` (used by inpainting) moves ``alphas_cumprod`` to the latents'
    device as a side effect, after which ``step`` computes on the GPU instead of
    the CPU and rounds differently: the first edit after loading would differ
    from every later one with the same seed. Moving it once, up front, makes
    every call compute the same way.
    """
    schedule = getattr(scheduler, "alphas_cumprod", None)
    if isinstance(schedule, torch.Tensor):
        scheduler.alphas_cumprod = schedule.to(device)


def _load_combined(model_dir: Path, dtype: torch.dtype):
    index = json.loads((model_dir / "model_index.json").read_text())
    inpaint = index.get("_class_name") == KandinskyV22InpaintCombinedPipeline.__name__
    pipeline_class = KandinskyV22InpaintCombinedPipeline if inpaint else KandinskyV22CombinedPipeline
    return pipeline_class.from_pretrained(model_dir, local_files_only=True, **from_pretrained_dtype(dtype))


def _components(combined: Any) -> dict[str, Any]:
    return {
        "text_encoder": combined.prior_text_encoder,
        "image_encoder": combined.prior_image_encoder,
        "prior": combined.prior_prior,
        "unet": combined.unet,
        "movq": combined.movq,
    }
