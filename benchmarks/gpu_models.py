"""Kandinsky 2.2 and Karlo pipelines with random weights, at the real published shapes or the project's tiny ones.

The real configurations are those of the published checkpoints
(kandinsky-community/kandinsky-2-2-prior and -decoder, kakaobrain/karlo-v1-alpha),
as diffusers' conversion scripts and the checkpoints' config files give them;
``PUBLISHED_PARAMETERS`` holds the published sizes they must match
(tests/benchmarks/test_gpu_models.py counts them on the ``meta`` device).
Nothing is downloaded: weights are random, so the FLOPs are real and the
images are noise.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from diffusers import (
    DDPMScheduler,
    KandinskyV22CombinedPipeline,
    PriorTransformer,
    UnCLIPScheduler,
    UNet2DConditionModel,
    UNet2DModel,
    VQModel,
)
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPVisionConfig, CLIPVisionModelWithProjection

from patches.diffusers import register_unclip
from pipelines.clip_tokenizer import make_clip_tokenizer
from pipelines.tiny import CLIPImageProcessor, build_tiny_kandinsky, build_tiny_karlo
from pipelines.unclip_compat import UnCLIPPipeline, UnCLIPTextProjModel

# Published sizes (/work/shared/reference/prior-decoder-notes.md, from the model cards): 3 significant figures.
PUBLISHED_PARAMETERS = {
    "kandinsky22": {
        "text_encoder": 695e6,  # CLIP ViT-bigG/14 text tower
        "image_encoder": 1.85e9,  # CLIP ViT-bigG/14 vision tower
        "prior": 1.03e9,
        "unet": 1.25e9,
        "movq": 68e6,
    },
    "karlo": {
        "text_encoder": 124e6,  # CLIP ViT-L/14 text tower
        "prior": 1.02e9,
        "decoder": 885e6,
        "super_res_first": 692e6,
        "super_res_last": 692e6,
    },
}
SEED = 0


def _added_kv_unet(**config: object) -> UNet2DConditionModel:
    """The UNet shape both families share (GLIDE's): added-KV attention in the three deeper levels."""
    return UNet2DConditionModel(
        sample_size=64,
        down_block_types=("ResnetDownsampleBlock2D",) + ("SimpleCrossAttnDownBlock2D",) * 3,
        up_block_types=("SimpleCrossAttnUpBlock2D",) * 3 + ("ResnetUpsampleBlock2D",),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        layers_per_block=3,
        attention_head_dim=64,
        resnet_time_scale_shift="scale_shift",
        **config,
    )


def kandinsky22_unet() -> UNet2DConditionModel:
    """kandinsky-2-2-decoder/unet: Kandinsky 2.1's UNet conditioned on the image embedding alone."""
    return _added_kv_unet(
        in_channels=4,
        out_channels=8,  # 4 latent channels + 4 learned-variance channels
        block_out_channels=(384, 768, 1152, 1536),
        cross_attention_dim=768,
        encoder_hid_dim=1280,
        encoder_hid_dim_type="image_proj",
        addition_embed_type="image",
        addition_embed_type_num_heads=64,
    )


def kandinsky22_movq() -> VQModel:
    return VQModel(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 3 + ("AttnDownEncoderBlock2D",),
        up_block_types=("AttnUpDecoderBlock2D",) + ("UpDecoderBlock2D",) * 3,
        block_out_channels=(128, 256, 256, 512),
        layers_per_block=2,
        norm_type="spatial",
        num_vq_embeddings=16384,
        vq_embed_dim=4,
    )


def kandinsky22_prior() -> PriorTransformer:
    return PriorTransformer(
        num_attention_heads=32,
        attention_head_dim=64,
        num_layers=20,
        embedding_dim=1280,
        num_embeddings=77,
        additional_embeddings=4,
        time_embed_act_fn="silu",
        encoder_hid_proj_type="linear",
        added_emb_type="prd",
    )


def clip_text(width: int, layers: int, heads: int, projection: int, eos_token_id: int) -> CLIPTextModelWithProjection:
    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        projection_dim=projection,
        max_position_embeddings=77,
        hidden_act="gelu" if width > 1024 else "quick_gelu",  # bigG (open_clip) uses gelu, OpenAI's ViT-L quick_gelu
        eos_token_id=eos_token_id,  # pool where Easel's tokenizer puts end-of-text
    )
    return CLIPTextModelWithProjection(config)


def clip_vision_bigg() -> CLIPVisionModelWithProjection:
    config = CLIPVisionConfig(
        hidden_size=1664,
        intermediate_size=8192,
        num_hidden_layers=48,
        num_attention_heads=16,
        projection_dim=1280,
        patch_size=14,
        image_size=224,
        hidden_act="gelu",
    )
    return CLIPVisionModelWithProjection(config)


def karlo_decoder() -> UNet2DConditionModel:
    """karlo-v1-alpha/decoder: a 64 px pixel-space UNet conditioned on text tokens and the image embedding."""
    return _added_kv_unet(
        in_channels=3,
        out_channels=6,  # mean and learned variance
        block_out_channels=(320, 640, 960, 1280),
        cross_attention_dim=1536,
        class_embed_type="identity",
    )


def karlo_super_res() -> UNet2DModel:
    """karlo-v1-alpha/super_res_first and super_res_last (same shape): 64 -> 256 px, no attention."""
    return UNet2DModel(
        sample_size=256,
        in_channels=6,  # noisy image + upscaled low-resolution image
        out_channels=3,
        down_block_types=("ResnetDownsampleBlock2D",) * 4,
        up_block_types=("ResnetUpsampleBlock2D",) * 4,
        block_out_channels=(320, 640, 960, 1280),
        layers_per_block=3,
        add_attention=False,
    )


def real_kandinsky_models(eos_token_id: int) -> dict[str, torch.nn.Module]:
    return {
        "text_encoder": clip_text(1280, 32, 20, 1280, eos_token_id),
        "image_encoder": clip_vision_bigg(),
        "prior": kandinsky22_prior(),
        "unet": kandinsky22_unet(),
        "movq": kandinsky22_movq(),
    }


def real_karlo_models(eos_token_id: int) -> dict[str, torch.nn.Module]:
    decoder = karlo_decoder()
    return {
        "text_encoder": clip_text(768, 12, 12, 768, eos_token_id),
        "prior": PriorTransformer(),  # diffusers' defaults are Karlo's prior (embedding_dim 768)
        "decoder": decoder,
        "super_res_first": karlo_super_res(),
        "super_res_last": karlo_super_res(),
        "text_proj": UnCLIPTextProjModel(
            clip_extra_context_tokens=4, clip_embeddings_dim=768, time_embed_dim=1280, cross_attention_dim=1536
        ),
    }


def _random_clip_statistics(prior: PriorTransformer) -> None:
    # Zeros (the constructor's) would collapse the prior's output to a constant.
    with torch.no_grad():
        prior.clip_mean.normal_(0.0, 0.1)
        prior.clip_std.uniform_(0.75, 1.25)


def _prior_scheduler() -> UnCLIPScheduler:
    return UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="sample", clip_sample_range=10.0)


def build_real_kandinsky(device: torch.device, dtype: torch.dtype) -> KandinskyV22CombinedPipeline:
    torch.manual_seed(SEED)
    tokenizer = make_clip_tokenizer()
    with torch.device(device):  # initialise on the GPU: seconds instead of minutes for 4.9 B parameters
        models = real_kandinsky_models(tokenizer.eos_token_id)
    _random_clip_statistics(models["prior"])
    pipe = KandinskyV22CombinedPipeline(
        unet=models["unet"],
        scheduler=DDPMScheduler(
            beta_schedule="linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, steps_offset=1
        ),
        movq=models["movq"],
        prior_prior=models["prior"],
        prior_image_encoder=models["image_encoder"],
        prior_text_encoder=models["text_encoder"],
        prior_tokenizer=tokenizer,
        prior_scheduler=_prior_scheduler(),
        prior_image_processor=CLIPImageProcessor(crop_size=224, size=224, resample=3),
    )
    return pipe.to(device, dtype)


def build_real_karlo(device: torch.device, dtype: torch.dtype) -> UnCLIPPipeline:
    torch.manual_seed(SEED)
    tokenizer = make_clip_tokenizer()
    with torch.device(device):
        models = real_karlo_models(tokenizer.eos_token_id)
    _random_clip_statistics(models["prior"])
    pipe = UnCLIPPipeline(
        tokenizer=tokenizer,
        prior_scheduler=_prior_scheduler(),
        decoder_scheduler=UnCLIPScheduler(variance_type="learned_range", prediction_type="epsilon"),
        super_res_scheduler=UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="epsilon"),
        **models,
    )
    return pipe.to(device, dtype)


_TINY_DIRS: dict[str, Path] = {}
_TINY_ROOT = tempfile.TemporaryDirectory(prefix="easel-bench-gpu-")  # removed, with the models, when the process ends


def tiny_dir(family: str) -> Path:
    """The project's tiny model of ``family``, written once per process."""
    if family not in _TINY_DIRS:
        builder = build_tiny_kandinsky if family == "kandinsky22" else build_tiny_karlo
        _TINY_DIRS[family] = builder(Path(_TINY_ROOT.name) / family)
    return _TINY_DIRS[family]


def build_pipeline(family: str, tiny: bool, device: torch.device, dtype: torch.dtype):
    """A fresh pipeline with the same random weights on every call (same seed, or the same tiny files)."""
    if not tiny:
        return build_real_kandinsky(device, dtype) if family == "kandinsky22" else build_real_karlo(device, dtype)
    if family == "kandinsky22":
        pipe = KandinskyV22CombinedPipeline.from_pretrained(tiny_dir(family), local_files_only=True)
    else:
        register_unclip()
        pipe = UnCLIPPipeline.from_pretrained(tiny_dir(family), local_files_only=True)
    return pipe.to(device, dtype)
