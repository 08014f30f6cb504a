"""The real architectures of the model families, from their published config values, built with random weights.

Nothing is downloaded: each component is made from its config (the values of the hub repositories'
``config.json`` files) directly on the device, in the family's usual precision, so a GPU check measures
the real compute and memory of SD 1.5, SDXL, SD 3 medium and FLUX.1 dev. The tokenizers are offline
stand-ins (CLIP's real BPE from open_clip's file; a small T5 vocabulary): the token ids they give are
valid for the encoders, which is all that compute needs.

    from architectures import build_full
    pipe = build_full("sdxl", "cuda")
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_generate import SD15_SCHEDULER, SD15_TEXT, SD15_UNET, SD15_VAE  # noqa: E402

CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768)
CLIP_G = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
              max_position_embeddings=77, hidden_act="gelu", projection_dim=1280)
T5_XXL = dict(vocab_size=32128, d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24,
              feed_forward_proj="gated-gelu", decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
VAE_1024 = dict(SD15_VAE, sample_size=1024)
SDXL_UNET = dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                 transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
                 use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
                 projection_class_embeddings_input_dim=2816, norm_num_groups=32)
SD3_TRANSFORMER = dict(sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
                       num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                       pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=192)
FLUX_TRANSFORMER = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                        num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
                        guidance_embeds=True, axes_dims_rope=(16, 56, 56))
VAE_16 = dict(VAE_1024, latent_channels=16, use_quant_conv=False, use_post_quant_conv=False)

# family: (title, native side, precision, images per call)
FULL = {"sd1": ("Stable Diffusion 1.5", 512, "float16", 8), "sdxl": ("Stable Diffusion XL", 1024, "float16", 2),
        "sd3": ("Stable Diffusion 3 medium", 1024, "bfloat16", 2), "flux-dev": ("FLUX.1 dev", 1024, "bfloat16", 1)}


def build_full(family: str, device: str):
    """The family's pipeline at its real size, random weights, every component made on ``device`` in its
    precision (a 12-billion-parameter transformer is never held in float32 on the host)."""
    import diffusers
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    from imgextract.demo.families import t5_tokenizer
    from imgextract.demo.tiny import write_clip_tokenizer

    dtype = getattr(torch, FULL[family][2])

    def made(cls, *args, **kwargs):
        with torch.device(device):
            return cls(*args, **kwargs).to(dtype)

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="imgextract-gpu-check-") as tok:
        clip_tok = write_clip_tokenizer(Path(tok))
    if family == "sd1":
        return diffusers.StableDiffusionPipeline(
            vae=made(diffusers.AutoencoderKL, **SD15_VAE), text_encoder=made(CLIPTextModel, CLIPTextConfig(**SD15_TEXT)),
            tokenizer=clip_tok, unet=made(diffusers.UNet2DConditionModel, **SD15_UNET),
            scheduler=diffusers.PNDMScheduler(**SD15_SCHEDULER), safety_checker=None, feature_extractor=None,
            requires_safety_checker=False)
    if family == "sdxl":
        return diffusers.StableDiffusionXLPipeline(
            vae=made(diffusers.AutoencoderKL, **VAE_1024, scaling_factor=0.13025),
            text_encoder=made(CLIPTextModel, CLIPTextConfig(**CLIP_L)),
            text_encoder_2=made(CLIPTextModelWithProjection, CLIPTextConfig(**CLIP_G)), tokenizer=clip_tok,
            tokenizer_2=clip_tok, unet=made(diffusers.UNet2DConditionModel, **SDXL_UNET),
            scheduler=diffusers.EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                                       steps_offset=1, timestep_spacing="leading"))
    t5_tok = t5_tokenizer()
    t5 = made(T5EncoderModel, T5Config(**T5_XXL))
    if family == "sd3":
        return diffusers.StableDiffusion3Pipeline(
            transformer=made(diffusers.SD3Transformer2DModel, **SD3_TRANSFORMER),
            scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0),
            vae=made(diffusers.AutoencoderKL, **VAE_16, scaling_factor=1.5305, shift_factor=0.0609),
            text_encoder=made(CLIPTextModelWithProjection, CLIPTextConfig(**CLIP_L)), tokenizer=clip_tok,
            text_encoder_2=made(CLIPTextModelWithProjection, CLIPTextConfig(**CLIP_G)), tokenizer_2=clip_tok,
            text_encoder_3=t5, tokenizer_3=t5_tok)
    if family == "flux-dev":
        return diffusers.FluxPipeline(
            transformer=made(diffusers.FluxTransformer2DModel, **FLUX_TRANSFORMER),
            scheduler=diffusers.FlowMatchEulerDiscreteScheduler(
                shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                max_image_seq_len=4096),
            vae=made(diffusers.AutoencoderKL, **VAE_16, scaling_factor=0.3611, shift_factor=0.1159),
            text_encoder=made(CLIPTextModel, CLIPTextConfig(**CLIP_L)), tokenizer=clip_tok,
            text_encoder_2=t5, tokenizer_2=t5_tok)
    raise ValueError(f"no full build of family {family!r}")
