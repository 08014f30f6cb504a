"""One adapter per family: how each encodes prompts, lays out latents and calls its denoiser."""

from __future__ import annotations

import numpy as np

from imgextract.models.denoisers.base import Cond, Denoiser


class UNetDenoiser(Denoiser):
    """Stable Diffusion 1.x / 2.x: CLIP text through cross-attention, ε / v / x0 objectives."""

    def _encode(self, prompts):
        emb, _ = self.pipe.encode_prompt(list(prompts), self.device, 1, False)
        return Cond(emb)

    def predict(self, x, t, cond, size, guidance):
        return self.module(x, t, encoder_hidden_states=cond.embeds.to(self.dtype)).sample


class XLDenoiser(UNetDenoiser):
    """SDXL: two CLIP encoders (hidden states concatenated), the second's pooled output, and the size /
    crop micro-conditioning (``text_time``)."""

    def _encode(self, prompts):
        emb, _, pooled, _ = self.pipe.encode_prompt(prompt=list(prompts), device=self.device,
                                                    num_images_per_prompt=1, do_classifier_free_guidance=False)
        return Cond(emb, pooled)

    def _unconditional(self, n):
        _, neg, _, neg_pooled = self.pipe.encode_prompt(prompt=[""] * n, device=self.device, num_images_per_prompt=1,
                                                        do_classifier_free_guidance=True)
        return Cond(neg, neg_pooled)

    def predict(self, x, t, cond, size, guidance):
        torch = self._torch
        time_ids = torch.tensor([[size[0], size[1], 0, 0, size[0], size[1]]], device=self.device, dtype=self.dtype)
        return self.module(x, t, encoder_hidden_states=cond.embeds.to(self.dtype),
                           added_cond_kwargs={"text_embeds": cond.pooled.to(self.dtype),
                                              "time_ids": time_ids.expand(x.shape[0], -1)}).sample

    def embed_kwargs(self, cond, uncond):
        return {"prompt_embeds": cond.embeds, "negative_prompt_embeds": uncond.embeds,
                "pooled_prompt_embeds": cond.pooled, "negative_pooled_prompt_embeds": uncond.pooled}


class FlowDenoiser(Denoiser):
    """Shared by the flow-matching families: x_t = (1 − σ)·x0 + σ·n, the target n − x0, σ from 1 down."""

    def init_sigma(self, sched=None) -> float:
        return 1.0

    def model_input(self, sched, latents, t):
        return latents

    def _shifted(self, size):
        """The pipeline's timestep shift for this image size (``use_dynamic_shifting``), or None."""
        cfg = self.pipe.scheduler.config
        if not cfg.get("use_dynamic_shifting"):
            return None
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift
        return calculate_shift(self.image_tokens(size), cfg.get("base_image_seq_len", 256),
                               cfg.get("max_image_seq_len", 4096), cfg.get("base_shift", 0.5),
                               cfg.get("max_shift", 1.15))

    def image_tokens(self, size) -> int:
        _, h, w = self.latent_shape(size)
        p = self.module.config.get("patch_size", 1) * self.packing
        return (h // p) * (w // p)

    def score_space(self, pred, x, t, sched):
        return pred

    def jump(self, sched, x, t, pred, noise, t_to):
        """Rectified flow's straight path: x0 = x_t − σ v, then x_s = (1 − s) x0 + s n."""
        scale = float(self.pipe.scheduler.config.num_train_timesteps)
        s, s_to = float(t) / scale, float(t_to) / scale
        return (1 - s_to) * (x - s * pred) + s_to * noise

    def loss_times(self, generator, n):
        """σ uniform in (0, 1): every noise level weighed alike (SD3 trains on a logit-normal σ)."""
        return self._torch.rand((n,), generator=generator).clamp(1e-3, 1 - 1e-3)

    def times_at(self, fractions):
        return self._torch.tensor([min(1 - 1e-3, max(1e-3, float(f))) for f in fractions])

    def _clean_noise(self, pred, x):
        return pred + x     # at σ = 0 the velocity n − x0 points from the clean latents to the noise

    def noised(self, x0, noise, sigma):
        s = sigma.view(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
        return (1 - s) * x0 + s * noise, noise - x0, sigma * self.pipe.scheduler.config.num_train_timesteps


class SD3Denoiser(FlowDenoiser):
    """SD 3 / 3.5: CLIP-L and CLIP-G (padded to T5's width) then T5 tokens in the MMDiT's joint attention."""

    def _encode(self, prompts):
        emb, _, pooled, _ = self.pipe.encode_prompt(prompt=list(prompts), prompt_2=None, prompt_3=None,
                                                    device=self.device, do_classifier_free_guidance=False,
                                                    max_sequence_length=self.max_length)
        return Cond(emb, pooled)

    def _unconditional(self, n):
        _, neg, _, neg_pooled = self.pipe.encode_prompt(prompt=[""] * n, prompt_2=None, prompt_3=None,
                                                        device=self.device, do_classifier_free_guidance=True,
                                                        max_sequence_length=self.max_length)
        return Cond(neg, neg_pooled)

    def set_timesteps(self, sched, steps, size):
        mu = self._shifted(size)
        sched.set_timesteps(steps, device=self.device, **({"mu": mu} if mu is not None else {}))
        return sched.timesteps

    def predict(self, x, t, cond, size, guidance):
        t = t.expand(x.shape[0]) if t.dim() == 0 else t
        return self.module(hidden_states=x, timestep=t, encoder_hidden_states=cond.embeds.to(self.dtype),
                           pooled_projections=cond.pooled.to(self.dtype)).sample

    def text_positions(self, caption, tokens):
        clip_len = self.pipe.tokenizer_max_length
        start, prompt = np.zeros(tokens, bool), np.zeros(tokens, bool)
        ids = self._ids(self.pipe.tokenizer, caption, clip_len)
        start[0] = True
        prompt[1:len(ids) - 1] = True
        if getattr(self.pipe, "tokenizer_3", None) is not None and getattr(self.pipe, "text_encoder_3", None) is not None:
            t5 = self._ids(self.pipe.tokenizer_3, caption, self.max_length)
            prompt[clip_len:clip_len + len(t5) - 1] = True
        return start, prompt

    def embed_kwargs(self, cond, uncond):
        return XLDenoiser.embed_kwargs(self, cond, uncond)


class FluxDenoiser(FlowDenoiser):
    """FLUX.1: T5 tokens and CLIP's pooled vector; latents packed 2×2; dev embeds the guidance scale and
    has no unconditional branch, so its 'unconditional' is the prediction under the empty prompt."""

    free_start = 0        # T5 has no start token
    packing = 2

    def _encode(self, prompts):
        emb, pooled, _ = self.pipe.encode_prompt(prompt=list(prompts), prompt_2=None, device=self.device,
                                                 num_images_per_prompt=1, max_sequence_length=self.max_length)
        return Cond(emb, pooled)

    def latent_shape(self, size):
        f = self.vae_factor * 2
        return (self.module.config.in_channels // 4, 2 * (size[0] // f), 2 * (size[1] // f))

    def from_model(self, latents, size):
        n, _, c4 = latents.shape
        _, h, w = self.latent_shape(size)
        x = latents.view(n, h // 2, w // 2, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(n, c4 // 4, h, w)

    def to_model(self, latents):
        n, c, h, w = latents.shape
        return latents.view(n, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(n, (h // 2) * (w // 2), c * 4)

    def set_timesteps(self, sched, steps, size):
        sigmas = None if sched.config.get("use_flow_sigmas") else np.linspace(1.0, 1 / steps, steps)
        mu = self._shifted(size)
        sched.set_timesteps(sigmas=sigmas, device=self.device, **({"mu": mu} if mu is not None else {}))
        return sched.timesteps

    def _ids_for(self, size, text_tokens: int):
        torch = self._torch
        _, h, w = self.latent_shape(size)
        img = torch.zeros(h // 2, w // 2, 3)
        img[..., 1] += torch.arange(h // 2)[:, None]
        img[..., 2] += torch.arange(w // 2)[None, :]
        return (torch.zeros(text_tokens, 3, device=self.device, dtype=self.dtype),
                img.reshape(-1, 3).to(self.device, self.dtype))

    def predict(self, x, t, cond, size, guidance):
        torch = self._torch
        t = t.expand(x.shape[0]) if t.dim() == 0 else t
        txt_ids, img_ids = self._ids_for(size, cond.embeds.shape[1])
        g = torch.full((x.shape[0],), float(guidance), device=self.device, dtype=torch.float32) \
            if self.module.config.guidance_embeds else None
        return self.module(hidden_states=x, timestep=(t.to(x.dtype) / 1000), guidance=g,
                           pooled_projections=cond.pooled.to(self.dtype),
                           encoder_hidden_states=cond.embeds.to(self.dtype), txt_ids=txt_ids, img_ids=img_ids).sample

    def text_positions(self, caption, tokens):
        return self._t5_positions(self.pipe.tokenizer_2, caption, tokens)

    def embed_kwargs(self, cond, uncond):
        return {"prompt_embeds": cond.embeds, "pooled_prompt_embeds": cond.pooled}


class PixArtDenoiser(Denoiser):
    """PixArt-α/Σ: T5 tokens (with their padding mask) through cross-attention; ε with a learned variance
    (the second half of the output channels, dropped)."""

    free_start = 0

    def __init__(self, loaded):
        super().__init__(loaded)
        self.max_length = self.max_length or 300

    def _encode(self, prompts):
        emb, mask, _, _ = self.pipe.encode_prompt(list(prompts), do_classifier_free_guidance=False,
                                                  device=self.device, clean_caption=False,
                                                  max_sequence_length=self.max_length)
        return Cond(emb, None, mask)

    def _unconditional(self, n):
        _, _, neg, neg_mask = self.pipe.encode_prompt([""] * n, do_classifier_free_guidance=True, negative_prompt="",
                                                      device=self.device, clean_caption=False,
                                                      max_sequence_length=self.max_length)
        return Cond(neg, None, neg_mask)

    def predict(self, x, t, cond, size, guidance):
        torch = self._torch
        t = t.expand(x.shape[0]) if t.dim() == 0 else t
        added = {"resolution": None, "aspect_ratio": None}
        if self.module.config.sample_size == 128 and type(self.pipe).__name__ == "PixArtAlphaPipeline":
            added = {"resolution": torch.tensor([[size[0], size[1]]], device=self.device,
                                                dtype=self.dtype).expand(x.shape[0], -1),
                     "aspect_ratio": torch.tensor([[size[0] / size[1]]], device=self.device,
                                                  dtype=self.dtype).expand(x.shape[0], -1)}
        out = self.module(x, encoder_hidden_states=cond.embeds.to(self.dtype), encoder_attention_mask=cond.mask,
                          timestep=t, added_cond_kwargs=added).sample
        if self.module.config.out_channels // 2 == self.module.config.in_channels:
            out = out.chunk(2, dim=1)[0]
        return out

    def text_positions(self, caption, tokens):
        return self._t5_positions(self.pipe.tokenizer, caption, tokens)

    def embed_kwargs(self, cond, uncond):
        return {"prompt_embeds": cond.embeds, "prompt_attention_mask": cond.mask, "negative_prompt": None,
                "negative_prompt_embeds": uncond.embeds, "negative_prompt_attention_mask": uncond.mask}
