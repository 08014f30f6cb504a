"""Tiny random-weight pipelines of every registered model family, built offline.

Each is the family's real diffusers pipeline class with its real component classes (UNet or
transformer, VAE, CLIP and T5 text encoders, tokenizers, scheduler) at toy sizes, saved with
``save_pretrained`` (safetensors), so a test loads it exactly as it would load a hub checkpoint.
The CLIP tokenizer comes from open_clip's BPE file; the T5 tokenizer is a Unigram model over a small
vocabulary (words of the toy captions, letters and digits), built by transformers without
sentencepiece. Sizes are chosen so each family draws at its own native size in well under a second
per image on a CPU.
"""

from __future__ import annotations

import string
import tempfile
from pathlib import Path

from imgextract.demo.tiny import write_clip_tokenizer

TEXT = 32            # CLIP hidden size
T5_DIM = 64          # T5 d_model (SD3 pads the two CLIP encoders' 64 channels to it)


def t5_tokenizer(max_length: int = 512):
    """A T5 tokenizer (Unigram, ``▁`` word starts) over the toy captions' words plus single characters."""
    from transformers import T5Tokenizer

    from imgextract.demo.toy import DEFAULT_IMAGES, FAMILY_BACKGROUNDS
    words = sorted({w.strip(",.'").lower() for _, cap, _ in DEFAULT_IMAGES for w in cap.split()}
                   | {w.strip(",.'").lower() for _, cap, _ in FAMILY_BACKGROUNDS for w in cap.split()}
                   | {"a", "photo", "picture", "with", "the", "middle"})
    pieces: dict[str, float] = {}
    for w in words:
        if w:
            pieces.setdefault("▁" + w, -2.0 - 0.01 * len(w))
    pieces.setdefault("▁", -4.0)
    for c in string.ascii_letters + string.digits + string.punctuation:
        pieces.setdefault(c, -6.0)
        pieces.setdefault("▁" + c, -6.5)
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + sorted(pieces.items())
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=max_length)


def _t5(tokenizer, layers: int = 1):
    from transformers import T5Config, T5EncoderModel
    return T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=T5_DIM, d_ff=2 * T5_DIM, d_kv=16,
                                   num_layers=layers, num_heads=4, decoder_start_token_id=0, pad_token_id=0,
                                   eos_token_id=1))


def _clip(tokenizer, projection: bool = False, act: str = "quick_gelu"):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
    cfg = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=TEXT, intermediate_size=2 * TEXT, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=tokenizer.model_max_length,
                         projection_dim=TEXT, hidden_act=act, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return CLIPTextModelWithProjection(cfg) if projection else CLIPTextModel(cfg)


def _vae(latent_channels: int = 4, blocks: int = 2, shift: float | None = None, scaling: float = 0.18215):
    from diffusers import AutoencoderKL
    extra = {"shift_factor": shift} if shift is not None else {}
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=latent_channels,
                         block_out_channels=(16, 32)[:blocks], layers_per_block=1, norm_num_groups=8,
                         down_block_types=("DownEncoderBlock2D",) * blocks, up_block_types=("UpDecoderBlock2D",) * blocks,
                         sample_size=32, scaling_factor=scaling, **extra)


def _unet(cross: int, xl: bool = False):
    from diffusers import UNet2DConditionModel
    extra = dict(addition_embed_type="text_time", addition_time_embed_dim=8,
                 projection_class_embeddings_input_dim=6 * 8 + TEXT, use_linear_projection=True) if xl else {}
    return UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                                layers_per_block=1, norm_num_groups=8,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                                cross_attention_dim=cross, attention_head_dim=8, **extra)


def _ddim(prediction: str = "epsilon"):
    from diffusers import DDIMScheduler
    return DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                         clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type=prediction)


def _clip_tokenizer(folder: str, length: int = 77):
    return write_clip_tokenizer(Path(folder), model_max_length=length)


def build(family: str, seed: int = 0):
    """The pipeline object of a registered family's tiny build (random weights, seeded)."""
    import diffusers
    import torch
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory(prefix="imgextract-tok-") as tmp:
        clip_tok = _clip_tokenizer(tmp)
    if family in ("sd1", "sd2"):
        pred, act = ("epsilon", "quick_gelu") if family == "sd1" else ("v_prediction", "gelu")
        return diffusers.StableDiffusionPipeline(
            vae=_vae(), text_encoder=_clip(clip_tok, act=act), tokenizer=clip_tok, unet=_unet(TEXT),
            scheduler=_ddim(pred), safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if family == "sdxl":
        from diffusers import EulerDiscreteScheduler
        sched = EulerDiscreteScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                                       beta_end=0.012, steps_offset=1, timestep_spacing="leading")
        return diffusers.StableDiffusionXLPipeline(
            vae=_vae(scaling=0.13025), text_encoder=_clip(clip_tok), text_encoder_2=_clip(clip_tok, projection=True),
            tokenizer=clip_tok, tokenizer_2=clip_tok, unet=_unet(2 * TEXT, xl=True), scheduler=sched,
            force_zeros_for_empty_prompt=True)
    from diffusers import FlowMatchEulerDiscreteScheduler
    t5_tok = t5_tokenizer()
    if family == "sd3":
        transformer = diffusers.SD3Transformer2DModel(
            sample_size=16, patch_size=2, in_channels=16, num_layers=2, attention_head_dim=8, num_attention_heads=4,
            joint_attention_dim=T5_DIM, caption_projection_dim=32, pooled_projection_dim=2 * TEXT, out_channels=16,
            pos_embed_max_size=16)
        return diffusers.StableDiffusion3Pipeline(
            transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
            vae=_vae(16, shift=0.0609, scaling=1.5305), text_encoder=_clip(clip_tok, projection=True),
            tokenizer=clip_tok, text_encoder_2=_clip(clip_tok, projection=True), tokenizer_2=clip_tok,
            text_encoder_3=_t5(t5_tok), tokenizer_3=t5_tok)
    if family in ("flux-dev", "flux-schnell"):
        dev = family == "flux-dev"
        transformer = diffusers.FluxTransformer2DModel(
            patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=T5_DIM, pooled_projection_dim=TEXT, guidance_embeds=dev,
            axes_dims_rope=(4, 6, 6))
        sched = FlowMatchEulerDiscreteScheduler(
            **(dict(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                    max_image_seq_len=4096) if dev else dict(shift=1.0, use_dynamic_shifting=False)))
        return diffusers.FluxPipeline(
            scheduler=sched, vae=_vae(4, blocks=1, shift=0.1159, scaling=0.3611), text_encoder=_clip(clip_tok),
            tokenizer=clip_tok, text_encoder_2=_t5(t5_tok), tokenizer_2=t5_tok, transformer=transformer)
    if family in ("pixart-alpha", "pixart-sigma"):
        from diffusers import DPMSolverMultistepScheduler
        transformer = diffusers.PixArtTransformer2DModel(
            sample_size=16, num_layers=2, patch_size=2, attention_head_dim=8, num_attention_heads=4,
            caption_channels=T5_DIM, in_channels=4, out_channels=8, cross_attention_dim=32,
            use_additional_conditions=False)
        cls = diffusers.PixArtSigmaPipeline if family == "pixart-sigma" else diffusers.PixArtAlphaPipeline
        return cls(tokenizer=t5_tok, text_encoder=_t5(t5_tok), vae=_vae(), transformer=transformer,
                   scheduler=DPMSolverMultistepScheduler())
    raise ValueError(f"no tiny build of family {family!r}")


TINY = ("sd1", "sd2", "sdxl", "sd3", "flux-dev", "flux-schnell", "pixart-alpha", "pixart-sigma")


def save_tiny_family(family: str, out_dir: Path, seed: int = 0) -> Path:
    """A registered family's tiny pipeline saved as a normal diffusers folder (safetensors)."""
    out_dir = Path(out_dir)
    build(family, seed).save_pretrained(out_dir, safe_serialization=True)
    return out_dir
