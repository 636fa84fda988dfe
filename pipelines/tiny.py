"""Tiny random-weight Kandinsky 2.2 and Karlo pipelines, built offline, for tests and demos.

They have the real pipelines' architecture and on-disk layout (what
``save_pretrained`` writes), with a few thousand parameters per component,
so loading and generating exercise exactly the code paths the real models do,
in well under a second. Weights come from a fixed torch seed: the same call
writes the same files.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import (
    DDPMScheduler,
    KandinskyV22CombinedPipeline,
    KandinskyV22InpaintCombinedPipeline,
    PriorTransformer,
    UnCLIPScheduler,
    UNet2DConditionModel,
    UNet2DModel,
    VQModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModelWithProjection,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

try:  # transformers 5: the PIL-backed processor, which needs no torchvision
    from transformers import CLIPImageProcessorPil as CLIPImageProcessor
except ImportError:  # transformers 4
    from transformers import CLIPImageProcessor

from patches.diffusers import register_unclip

from .clip_tokenizer import make_clip_tokenizer
from .model_config import EASEL_CONFIG_NAME
from .unclip_compat import UnCLIPPipeline, UnCLIPTextProjModel

SEED = 0
EMBED_DIM = 32  # CLIP text/image embedding width, shared by prior, decoder and text projection
CLIP_IMAGE_SIZE = 32
TINY_MOVQ_SCALE = 2  # 2 ** (MoVQ blocks - 1): latents at half the image side


def _text_encoder(vocab_size: int, eos_token_id: int, bos_token_id: int) -> CLIPTextModelWithProjection:
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=EMBED_DIM,
        intermediate_size=37,
        projection_dim=EMBED_DIM,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        # Pool at the real end-of-text id (the legacy default 2 would pool at the largest id).
        eos_token_id=eos_token_id,
        bos_token_id=bos_token_id,
        pad_token_id=eos_token_id,
    )
    return CLIPTextModelWithProjection(config).eval()


def _image_encoder() -> CLIPVisionModelWithProjection:
    config = CLIPVisionConfig(
        hidden_size=EMBED_DIM,
        intermediate_size=37,
        projection_dim=EMBED_DIM,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=CLIP_IMAGE_SIZE,
        patch_size=8,
        num_channels=3,
    )
    return CLIPVisionModelWithProjection(config).eval()


def _image_processor() -> CLIPImageProcessor:
    return CLIPImageProcessor(
        crop_size=CLIP_IMAGE_SIZE,
        size=CLIP_IMAGE_SIZE,
        do_center_crop=True,
        do_normalize=True,
        do_resize=True,
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
        resample=3,
    )


def _prior() -> PriorTransformer:
    prior = PriorTransformer(num_attention_heads=2, attention_head_dim=12, embedding_dim=EMBED_DIM, num_layers=1)
    # A real prior stores the CLIP image-embedding statistics; zeros collapse its output to a constant.
    with torch.no_grad():
        prior.clip_mean.copy_(torch.randn(1, EMBED_DIM) * 0.1)
        prior.clip_std.copy_(torch.rand(1, EMBED_DIM) * 0.5 + 0.75)
    return prior.eval()


def _prior_scheduler() -> UnCLIPScheduler:
    return UnCLIPScheduler(
        variance_type="fixed_small_log",
        prediction_type="sample",
        num_train_timesteps=1000,
        clip_sample=True,
        clip_sample_range=10.0,
    )


def _kandinsky_unet(in_channels: int, native_size: int) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=native_size // TINY_MOVQ_SCALE,  # in latent pixels, as the real decoder's config declares it
        in_channels=in_channels,
        out_channels=8,  # 4 latent channels + 4 learned-variance channels, as the real decoder
        addition_embed_type="image",
        encoder_hid_dim=EMBED_DIM,
        encoder_hid_dim_type="image_proj",
        cross_attention_dim=EMBED_DIM,
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        block_out_channels=(16, 32),
        layers_per_block=1,
        attention_head_dim=4,
        norm_num_groups=8,
        resnet_time_scale_shift="scale_shift",
        class_embed_type=None,
    ).eval()


def _movq() -> VQModel:
    # Two blocks (TINY_MOVQ_SCALE): latents at 1/2 resolution, so sizes must be multiples of 2**2 = 4.
    # SpatialNorm (MoVQ's decoder norm) always uses 32 groups, hence 32 channels at least.
    return VQModel(
        block_out_channels=(32, 32),
        down_block_types=("DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
        up_block_types=("AttnUpDecoderBlock2D", "UpDecoderBlock2D"),
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=32,
        norm_type="spatial",
        num_vq_embeddings=12,
        vq_embed_dim=4,
    ).eval()


def _decoder_scheduler() -> DDPMScheduler:
    # Kandinsky 2.2 decoder's scheduler settings.
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        steps_offset=1,
        prediction_type="epsilon",
        thresholding=False,
    )


def build_tiny_kandinsky(path: Path | str, *, inpaint: bool = False, native_size: int = 64) -> Path:
    """Write a tiny KandinskyV22CombinedPipeline (or the inpaint variant, 9-channel UNet) to ``path``.

    ``native_size`` goes into the directory's ``easel.json``: the side of the
    square the model is meant to generate at. The UNet's config declares it too
    (as ``sample_size``, in latent pixels), as a real decoder's does, so a copy
    without ``easel.json`` (the hub's 2023 layout) keeps it.
    """
    path = Path(path)
    torch.manual_seed(SEED)
    tokenizer = make_clip_tokenizer()
    pipeline_class = KandinskyV22InpaintCombinedPipeline if inpaint else KandinskyV22CombinedPipeline
    pipe = pipeline_class(
        unet=_kandinsky_unet(in_channels=9 if inpaint else 4, native_size=native_size),
        scheduler=_decoder_scheduler(),
        movq=_movq(),
        prior_prior=_prior(),
        prior_image_encoder=_image_encoder(),
        prior_text_encoder=_text_encoder(len(tokenizer), tokenizer.eos_token_id, tokenizer.bos_token_id),
        prior_tokenizer=tokenizer,
        prior_scheduler=_prior_scheduler(),
        prior_image_processor=_image_processor(),
    )
    pipe.save_pretrained(path)
    (path / EASEL_CONFIG_NAME).write_text(json.dumps({"native_size": native_size}, indent=2) + "\n")
    return path


def _unclip_decoder() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=16,
        in_channels=3,  # pixel space
        out_channels=6,  # mean and learned variance
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        block_out_channels=(16, 32),
        layers_per_block=1,
        cross_attention_dim=EMBED_DIM,
        attention_head_dim=4,
        norm_num_groups=8,
        resnet_time_scale_shift="scale_shift",
        class_embed_type="identity",
    ).eval()


def _super_res(sample_size: int) -> UNet2DModel:
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=6,  # noisy image + upscaled low-resolution image
        out_channels=3,
        down_block_types=("ResnetDownsampleBlock2D", "ResnetDownsampleBlock2D"),
        up_block_types=("ResnetUpsampleBlock2D", "ResnetUpsampleBlock2D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
    ).eval()


def _decoder_pixel_scheduler() -> UnCLIPScheduler:
    return UnCLIPScheduler(variance_type="learned_range", prediction_type="epsilon", num_train_timesteps=1000)


def _super_res_scheduler() -> UnCLIPScheduler:
    # The super-resolution UNets predict noise only (3 channels), no variance.
    return UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="epsilon", num_train_timesteps=1000)


def build_tiny_karlo(path: Path | str, *, with_image_encoder: bool = True) -> Path:
    """Write a tiny UnCLIPPipeline (16 px decoder, 64 px super-resolution) to ``path``.

    With ``with_image_encoder`` the directory also holds ``image_encoder/`` and
    ``feature_extractor/``, the two components UnCLIPImageVariationPipeline adds.
    """
    register_unclip()  # before the pipeline is built: its index then names the published layout's "unclip" module
    path = Path(path)
    torch.manual_seed(SEED)
    tokenizer = make_clip_tokenizer()
    decoder = _unclip_decoder()
    text_encoder = _text_encoder(len(tokenizer), tokenizer.eos_token_id, tokenizer.bos_token_id)
    text_proj = UnCLIPTextProjModel(
        clip_extra_context_tokens=4,
        clip_embeddings_dim=EMBED_DIM,
        time_embed_dim=decoder.config.block_out_channels[0] * 4,
        cross_attention_dim=EMBED_DIM,
    ).eval()
    super_res_first, super_res_last = _super_res(64), _super_res(64)
    pipe = UnCLIPPipeline(
        prior=_prior(),
        decoder=decoder,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_proj=text_proj,
        super_res_first=super_res_first,
        super_res_last=super_res_last,
        prior_scheduler=_prior_scheduler(),
        decoder_scheduler=_decoder_pixel_scheduler(),
        super_res_scheduler=_super_res_scheduler(),
    )
    pipe.save_pretrained(path)
    if with_image_encoder:
        _image_encoder().save_pretrained(path / "image_encoder")
        _image_processor().save_pretrained(path / "feature_extractor")
    return path
