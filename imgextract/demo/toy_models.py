"""The toy's two denoisers, kept as data: what each builds, how it learns, what pipeline it saves as.

Both share the toy's latent VAE (trained first, by ``demo.toy.train``) and its training loop; an
architecture says only what differs:

- ``unet``: a Stable Diffusion 1-style UNet with one CLIP text encoder, DDPM noise, x0-prediction
  (memorizes far sooner than ε at this size), saved as a ``StableDiffusionPipeline``.
- ``dit``: an SD3-style MMDiT (``SD3Transformer2DModel``: text and image tokens in joint attention)
  with two CLIP text encoders and no T5, trained with rectified flow (x_t = (1 − σ)·x0 + σ·n, the
  transformer predicts n − x0; the loss is taken on the x0 it implies, the weighting that lets a toy
  memorize within minutes), saved as a ``StableDiffusion3Pipeline``: the architecture of SD3, Flux
  and PixArt's line, audited through the sd3 family like any real checkpoint.

Each draws its random numbers in the same order (batch, caption dropout, noise, time), so a run is
reproducible and resumes to the same weights.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from imgextract.demo.tiny import TinyArch, assemble_pipeline, tiny_components, tiny_vae, write_clip_tokenizer


class UnetToy:
    """SD 1's layout: UNet + one CLIP text encoder, x0-prediction under DDPM noise."""

    recipe = "latent 32x32 -> 16x16x4, UNet, x0-prediction, AdamW, warm-up, grad clip 1, caption dropout"

    def __init__(self, size: int, seed: int):
        import torch
        torch.manual_seed(seed)
        comps = tiny_components(TinyArch(image_size=size), seed)
        self.vae, self.tokenizer = comps["vae"], comps["tokenizer"]
        self.modules = {"unet": comps["unet"], "text": comps["text_encoder"]}
        self.comps = comps
        from diffusers import DDPMScheduler
        self.noise = DDPMScheduler.from_config(comps["scheduler"].config)

    def conditions(self, captions: list[str]):
        ids = self.tokenizer(captions, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        return self.modules["text"](ids)[0]

    def loss(self, x0, captions, gen):
        import torch
        import torch.nn.functional as F
        n = x0.shape[0]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, self.noise.config.num_train_timesteps, (n,), generator=gen)
        pred = self.modules["unet"](self.noise.add_noise(x0, noise, t), t,
                                    encoder_hidden_states=self.conditions(captions)).sample
        return F.mse_loss(pred, x0)

    def latents(self, raw):
        """The VAE's latents as the denoiser sees them, and the factors the pipeline decodes with."""
        scaling = float(1.0 / raw.std())
        return raw * scaling, {"scaling_factor": scaling}

    def pipeline(self):
        return assemble_pipeline({**self.comps, "vae": self.vae, "unet": self.modules["unet"],
                                  "text_encoder": self.modules["text"]})


@dataclass(frozen=True)
class DitArch:
    """Sizes of the toy MMDiT: 64 image tokens (16×16 latents in 2×2 patches) and 2 × 16 text tokens."""

    layers: int = 4
    heads: int = 4
    head_dim: int = 16
    patch: int = 2
    text_hidden: int = 32
    text_layers: int = 2
    max_tokens: int = 16


class DitToy:
    """SD3's layout: an MMDiT and two CLIP text encoders (no T5), rectified flow, loss on the implied x0."""

    recipe = ("latent 32x32 -> 16x16x4, SD3-style MMDiT (joint attention), rectified flow (predicts noise - x0, "
              "loss on the implied x0, sigma uniform), two CLIP text encoders, AdamW, warm-up, grad clip 1, "
              "caption dropout")

    def __init__(self, size: int, seed: int, arch: DitArch = DitArch()):
        import torch
        from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
        from transformers import CLIPTextConfig, CLIPTextModelWithProjection
        torch.manual_seed(seed)
        self.vae = tiny_vae(TinyArch(image_size=size))
        latent = size // 2
        self.transformer = SD3Transformer2DModel(
            sample_size=latent, patch_size=arch.patch, in_channels=4, out_channels=4, num_layers=arch.layers,
            attention_head_dim=arch.head_dim, num_attention_heads=arch.heads,
            joint_attention_dim=2 * arch.text_hidden, caption_projection_dim=arch.heads * arch.head_dim,
            pooled_projection_dim=2 * arch.text_hidden, pos_embed_max_size=max(latent // arch.patch, 8))
        with tempfile.TemporaryDirectory(prefix="imgextract-tok-") as tok_dir:
            self.tokenizer = write_clip_tokenizer(Path(tok_dir), model_max_length=arch.max_tokens)
        tok = self.tokenizer

        def clip():
            return CLIPTextModelWithProjection(CLIPTextConfig(
                vocab_size=len(tok), hidden_size=arch.text_hidden, intermediate_size=2 * arch.text_hidden,
                num_hidden_layers=arch.text_layers, num_attention_heads=4, max_position_embeddings=arch.max_tokens,
                projection_dim=arch.text_hidden, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id))
        self.modules = {"transformer": self.transformer, "text": clip(), "text_2": clip()}
        self.scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
        self._pipe = None

    def pipeline(self):
        """The pipeline around the modules being trained: its encode_prompt is the one sampling uses."""
        if self._pipe is None:
            from diffusers import StableDiffusion3Pipeline
            self._pipe = StableDiffusion3Pipeline(
                transformer=self.transformer, scheduler=self.scheduler, vae=self.vae,
                text_encoder=self.modules["text"], tokenizer=self.tokenizer, text_encoder_2=self.modules["text_2"],
                tokenizer_2=self.tokenizer, text_encoder_3=None, tokenizer_3=None)
        return self._pipe

    def loss(self, x0, captions, gen):
        import torch
        import torch.nn.functional as F
        n = x0.shape[0]
        noise = torch.randn(x0.shape, generator=gen)
        sigma = torch.rand((n,), generator=gen).clamp(1e-3, 1 - 1e-3)
        s = sigma.view(-1, 1, 1, 1)
        xt = (1 - s) * x0 + s * noise
        emb, _, pooled, _ = self.pipeline().encode_prompt(prompt=captions, prompt_2=None, prompt_3=None,
                                                          device=torch.device("cpu"),
                                                          do_classifier_free_guidance=False)
        v = self.transformer(hidden_states=xt, timestep=sigma * self.scheduler.config.num_train_timesteps,
                             encoder_hidden_states=emb, pooled_projections=pooled).sample
        return F.mse_loss(xt - s * v, x0)

    def latents(self, raw):
        shift = float(raw.mean())
        scaling = float(1.0 / (raw - shift).std())
        return (raw - shift) * scaling, {"scaling_factor": scaling, "shift_factor": shift}


TOY_ARCHS = {"unet": UnetToy, "dit": DitToy}
