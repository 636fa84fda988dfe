"""The shapes of easel-mini's components: one function per Kandinsky 2.2 component.

Everything is sized for a 64x64 scene world and a 2-core CPU: the text and
image encoders are 4-layer, 128-wide CLIP towers; the prior is a 4-layer
PriorTransformer over those 128-d embeddings; MoVQ maps 64x64x3 to 16x16x4;
the decoder UNet denoises those latents. The configurations mirror the real
Kandinsky 2.2 ones (prior with ``prd`` token and linear text projection,
UNet with ``addition_embed_type="image"`` / ``encoder_hid_dim_type="image_proj"``
and simple cross-attention blocks), only smaller.
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, PriorTransformer, UnCLIPScheduler, UNet2DConditionModel, VQModel
from transformers import (
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

IMAGE_SIZE = 64  # native resolution of the whole model
EMBED_DIM = 128  # CLIP text width = projection width = prior embedding = decoder condition
LATENT_CHANNELS = 4
MOVQ_BLOCKS = (16, 32, 64)  # three blocks: 64x64 -> 16x16 latents
LATENT_SIZE = IMAGE_SIZE // 2 ** (len(MOVQ_BLOCKS) - 1)
TEXT_MAX_LENGTH = 77

# OpenAI CLIP's normalisation, as every Kandinsky image processor uses.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModelWithProjection:
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=EMBED_DIM,  # the prior projects these hidden states with a Linear(EMBED_DIM, ...)
        intermediate_size=4 * EMBED_DIM,
        projection_dim=EMBED_DIM,
        num_hidden_layers=4,
        num_attention_heads=4,
        max_position_embeddings=TEXT_MAX_LENGTH,
        hidden_act="gelu",
        # Pool at our end-of-text id (the legacy default 2 pools at the largest id instead).
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModelWithProjection(config)


def image_encoder() -> CLIPVisionModelWithProjection:
    config = CLIPVisionConfig(
        hidden_size=EMBED_DIM,
        intermediate_size=4 * EMBED_DIM,
        projection_dim=EMBED_DIM,
        num_hidden_layers=4,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=8,
        num_channels=3,
        hidden_act="gelu",
    )
    model = CLIPVisionModelWithProjection(config)
    with torch.no_grad():
        embedding = model.vision_model.embeddings.position_embedding.weight
        embedding[1:] = 0.5 * sincos_2d(IMAGE_SIZE // config.patch_size, config.hidden_size)
        embedding[0] = 0.0  # the class token
    return model


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """(grid*grid, dim) fixed 2-D sine-cosine position codes, rows in patch order (row-major).

    CLIP's learned position embeddings start as small noise, and a short
    training never made them carry position: the image embedding ended up not
    knowing where anything was. Starting from these codes it does from step one.
    """
    quarter = dim // 4
    # From a quarter turn across the whole grid to a quarter turn per patch.
    frequencies = torch.linspace(torch.pi / (2 * grid), torch.pi / 2, quarter)
    coords = torch.arange(grid, dtype=torch.float32)
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    angles_y = ys.reshape(-1, 1) * frequencies
    angles_x = xs.reshape(-1, 1) * frequencies
    return torch.cat([angles_y.sin(), angles_y.cos(), angles_x.sin(), angles_x.cos()], dim=1)


def image_processor() -> CLIPImageProcessor:
    return CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_resize=True,
        do_center_crop=True,
        do_normalize=True,
        do_convert_rgb=True,
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
        resample=3,  # bicubic, like CLIP
    )


def prior() -> PriorTransformer:
    return PriorTransformer(
        num_attention_heads=4,
        attention_head_dim=32,
        num_layers=4,
        embedding_dim=EMBED_DIM,
        num_embeddings=TEXT_MAX_LENGTH,
        additional_embeddings=4,
        dropout=0.0,
        time_embed_act_fn="silu",
        encoder_hid_proj_type="linear",
        added_emb_type="prd",
    )


def prior_scheduler() -> UnCLIPScheduler:
    # Kandinsky 2.2's prior scheduler: the model predicts the clean (normalised) embedding.
    return UnCLIPScheduler(
        num_train_timesteps=1000,
        variance_type="fixed_small_log",
        clip_sample=True,
        clip_sample_range=5.0,
        prediction_type="sample",
    )


def movq() -> VQModel:
    return VQModel(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(MOVQ_BLOCKS),
        up_block_types=("UpDecoderBlock2D",) * len(MOVQ_BLOCKS),
        block_out_channels=MOVQ_BLOCKS,
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        num_vq_embeddings=256,
        norm_num_groups=8,
        vq_embed_dim=LATENT_CHANNELS,
        norm_type="group",
        mid_block_add_attention=True,
        sample_size=IMAGE_SIZE,
    )


def unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=LATENT_CHANNELS,
        # Noise and (unused) variance halves, as Kandinsky's decoder pipeline splits them.
        out_channels=2 * LATENT_CHANNELS,
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        up_block_types=("SimpleCrossAttnUpBlock2D", "SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        block_out_channels=(32, 64, 128),
        layers_per_block=2,
        attention_head_dim=32,
        norm_num_groups=8,
        cross_attention_dim=EMBED_DIM,
        encoder_hid_dim=EMBED_DIM,
        encoder_hid_dim_type="image_proj",
        addition_embed_type="image",
        class_embed_type=None,
        resnet_time_scale_shift="scale_shift",
    )


def scheduler() -> DDIMScheduler:
    """Kandinsky 2.2's decoder noise schedule, rescaled to zero terminal SNR, with v-prediction.

    The stock schedule leaves 7% of the image in the last training step's input
    (alphas_cumprod[-1] = 0.0047). On 16x16 latents that is enough to read the
    layout off the noise, so a decoder trained on it took shape and position
    from the sampling noise rather than from the image embedding (with the true
    embedding of a held-out scene: shape 23%, position 30%). At zero terminal
    SNR the first step sees pure noise and must draw the layout from the
    embedding; epsilon is undefined there, so the UNet predicts v. DDIM with
    trailing spacing starts exactly at that step and samples well in 15-25 steps.
    """
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=0,
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        timestep_spacing="trailing",
    )
