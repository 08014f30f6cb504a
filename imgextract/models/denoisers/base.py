"""The adapters' shared interface: conditioning, parameterisations, sampling, the noise scores' primitives,
and the text-attention recorder."""

from __future__ import annotations

import importlib
import inspect
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from imgextract.errors import InputError
from imgextract.models.families import Family

if TYPE_CHECKING:
    import torch


@dataclass
class Cond:
    """A batch of text conditioning as the family's denoiser takes it."""

    embeds: "torch.Tensor"                    # (n, tokens, dim)
    pooled: "torch.Tensor | None" = None      # (n, dim): SDXL, SD3, Flux
    mask: "torch.Tensor | None" = None        # (n, tokens), 1 = a token: PixArt's T5

    def __len__(self) -> int:
        return self.embeds.shape[0]

    def cat(self, other: "Cond") -> "Cond":
        import torch
        both = [torch.cat([a, b]) if a is not None else None for a, b in
                ((self.embeds, other.embeds), (self.pooled, other.pooled), (self.mask, other.mask))]
        return Cond(*both)

    def expand(self, n: int) -> "Cond":
        def grow(t):
            return None if t is None else t[:1].expand(n, *t.shape[1:])
        return Cond(grow(self.embeds), grow(self.pooled), grow(self.mask))

    def detach(self) -> "Cond":
        return Cond(*(None if t is None else t.detach() for t in (self.embeds, self.pooled, self.mask)))


def to_epsilon(kind: str, pred, x, t, sched):
    """A noise-predicting model's output ``pred`` at ``x`` (timestep ``t``) as ε, whatever it was trained
    to predict (``kind``: the scheduler's prediction_type)."""
    if kind == "epsilon":
        return pred
    a = sched.alphas_cumprod.to(x.device, x.dtype)[int(round(float(t)))]
    if kind == "sample":
        return (x - a.sqrt() * pred) / (1 - a).sqrt()
    return a.sqrt() * pred + (1 - a).sqrt() * x     # v_prediction


def _ones_at(mask, positions: slice):
    if mask is None:
        return None
    mask = mask.clone()
    mask[:, positions] = 1
    return mask


class Denoiser:
    """One loaded model's denoiser, as the stages use it (see the module docstring)."""

    free_start = 1            # where fitted conditioning vectors begin (after CLIP's start token)
    packing = 1               # latents are packed in patches of this side before the denoiser (Flux: 2)

    def __init__(self, loaded):
        import torch
        self.loaded = loaded
        self.pipe = loaded.pipe
        self.family: Family = loaded.family
        self.module = getattr(self.pipe, self.family.denoiser)
        self.device = self.module.device
        self.dtype = self.module.dtype
        self.vae_factor = int(getattr(self.pipe, "vae_scale_factor", 8))
        sched = self.pipe.scheduler
        self.objective = "flow" if type(sched).__name__.startswith("FlowMatch") else sched.config.prediction_type
        if self.objective not in self.family.objectives:
            raise InputError(f"{loaded.model}: a {self.family.title} model trained for '{self.objective}'",
                             f"imgextract scores {self.family.title} models trained for "
                             f"{' or '.join(self.family.objectives)}")
        self.max_length = self.family.call.get("max_sequence_length") or self._call_default("max_sequence_length")
        self._torch = torch

    def _call_default(self, name: str):
        p = inspect.signature(type(self.pipe).__call__).parameters.get(name)
        return p.default if p is not None and p.default is not inspect.Parameter.empty else None

    # -- text -------------------------------------------------------------------------------------------

    def encode(self, prompts: list[str]) -> Cond:
        """The prompts' conditioning (no gradients: the text encoders are never fitted)."""
        with self._torch.no_grad():
            return self._encode(list(prompts)).detach()

    def unconditional(self, n: int) -> Cond:
        """The conditioning of the sampler's unconditional branch (SDXL's is zeros), n times."""
        with self._torch.no_grad():
            return self._unconditional(n).detach()

    def _encode(self, prompts: list[str]) -> Cond:
        raise NotImplementedError

    def _unconditional(self, n: int) -> Cond:
        return self._encode([""]).expand(n)

    def empty(self) -> Cond:
        """The empty prompt as a conditioning: the reconstruction search's starting point."""
        return self.encode([""])

    def with_free(self, base: Cond, free: "torch.Tensor") -> Cond:
        """``base`` with fitted vectors in place of its first free positions."""
        torch = self._torch
        at = slice(self.free_start, self.free_start + free.shape[1])
        embeds = torch.cat([base.embeds[:, :at.start], free.to(base.embeds.dtype), base.embeds[:, at.stop:]], 1)
        return Cond(embeds, base.pooled, _ones_at(base.mask, at))

    def free_room(self, base: Cond) -> int:
        return base.embeds.shape[1] - self.free_start

    def _ids(self, tokenizer, caption: str, length: int | None = None) -> list[int]:
        length = length or tokenizer.model_max_length
        return list(tokenizer(caption, truncation=True, max_length=length).input_ids)

    def _t5_positions(self, tokenizer, caption: str, tokens: int) -> tuple[np.ndarray, np.ndarray]:
        """T5's text positions: no start token; the prompt's tokens, then its end token and padding."""
        ids = self._ids(tokenizer, caption, self.max_length)
        start, prompt = np.zeros(tokens, bool), np.zeros(tokens, bool)
        prompt[:len(ids) - 1] = True
        return start, prompt

    def text_positions(self, caption: str, tokens: int) -> tuple[np.ndarray, np.ndarray]:
        """(start-token positions, prompt-token positions) over the ``tokens`` text positions the denoiser
        attends to: the attention score's entropy leaves the start tokens out, its end share is the rest."""
        ids = self._ids(self.pipe.tokenizer, caption)
        start, prompt = np.zeros(tokens, bool), np.zeros(tokens, bool)
        start[0] = True
        prompt[1:len(ids) - 1] = True
        return start, prompt

    # -- latents and sampling -----------------------------------------------------------------------------

    def latent_shape(self, size: tuple[int, int]) -> tuple[int, int, int]:
        f = self.vae_factor
        return (self.module.config.in_channels, size[0] // f, size[1] // f)

    def noise(self, seeds: list[int], size: tuple[int, int], sched=None) -> "torch.Tensor":
        """The pipeline's starting latents for these seeds (one CPU generator each), in the denoiser's layout,
        scaled by ``sched``'s initial sigma (which Euler-type samplers know only once their timesteps are set)."""
        torch = self._torch
        shape = self.latent_shape(size)
        x = torch.stack([torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(s))) for s in seeds])
        return self.to_model(x.to(self.device, self.dtype) * self.init_sigma(sched))

    def init_sigma(self, sched=None) -> float:
        return float(getattr(sched if sched is not None else self.pipe.scheduler, "init_noise_sigma", 1.0))

    def to_model(self, latents):
        """VAE latents (n, C, h, w) → the layout the denoiser takes."""
        return latents

    def scheduler(self):
        """A fresh copy of the pipeline's scheduler: stepping it leaves the pipeline's untouched."""
        s = self.pipe.scheduler
        return type(s).from_config(s.config)

    def set_timesteps(self, sched, steps: int, size: tuple[int, int]):
        sched.set_timesteps(steps, device=self.device)
        return sched.timesteps

    def model_input(self, sched, latents, t):
        return sched.scale_model_input(latents, t)

    def predict(self, x, t, cond: Cond, size: tuple[int, int], guidance: float):
        """The denoiser's raw output for model input ``x`` at timestep ``t`` (one value for the batch)."""
        raise NotImplementedError

    def pair(self, x, t, cond: Cond, uncond: Cond, size, guidance):
        """(conditional, unconditional) predictions in one batched call."""
        torch = self._torch
        both = self.predict(torch.cat([x, x]), t, cond.cat(uncond), size, guidance)
        return both.chunk(2)

    def combine(self, cond_pred, uncond_pred, guidance: float):
        """What the sampler steps with: classifier-free guidance as the pipeline applies it."""
        if self.family.distilled or guidance <= 1:
            return cond_pred
        return uncond_pred + guidance * (cond_pred - uncond_pred)

    def step(self, sched, pred, t, latents):
        return sched.step(pred, t, latents, return_dict=False)[0]

    def sample_latents(self, prompts: list[str], seeds: list[int], steps: int, guidance: float,
                       size: tuple[int, int]):
        """The whole sampling loop through this adapter: the pipeline's latents (``output_type='latent'``)."""
        torch = self._torch
        with torch.no_grad():
            cond = self.encode(prompts)
            uses_uncond = not self.family.distilled and guidance > 1
            uncond = self.unconditional(len(prompts)) if uses_uncond else None
            sched = self.scheduler()
            timesteps = self.set_timesteps(sched, steps, size)
            latents = self.noise(seeds, size, sched)
            for t in timesteps:
                x = self.model_input(sched, latents, t)
                if uncond is not None:
                    pc, pu = self.pair(x, t, cond, uncond, size, guidance)
                else:
                    pc, pu = self.predict(x, t, cond, size, guidance), None
                latents = self.step(sched, self.combine(pc, pu, guidance), t, latents)
        return latents

    # -- images ---------------------------------------------------------------------------------------------

    def _affine(self, like):
        """(scale, offset) taking VAE latents to the model's: (z − offset) · scale, as each pipeline undoes it
        (SDXL's per-channel latents_mean/std when its VAE has them, SD3/Flux's shift_factor)."""
        cfg = self.pipe.vae.config
        mean, std = getattr(cfg, "latents_mean", None), getattr(cfg, "latents_std", None)
        if mean is not None and std is not None:
            shape = (1, len(mean), 1, 1)
            return (cfg.scaling_factor / self._torch.tensor(std).view(shape).to(like),
                    self._torch.tensor(mean).view(shape).to(like))
        return cfg.scaling_factor, float(getattr(cfg, "shift_factor", None) or 0.0)

    def from_model(self, latents, size):
        """The denoiser's layout → VAE latents (n, C, h, w)."""
        return latents

    def decode(self, latents, size) -> list:
        """Latents in the denoiser's layout → PIL images, as the pipeline's own last lines make them."""
        vae = self.pipe.vae
        with self._torch.no_grad():
            z = self.from_model(latents, size).to(vae.dtype)
            scale, offset = self._affine(z)
            image = vae.decode(z / scale + offset, return_dict=False)[0]
        return self.pipe.image_processor.postprocess(image, output_type="pil")

    def images(self, prompts: list[str], seeds: list[int], steps: int, guidance: float, size) -> list:
        """:meth:`sample_latents` decoded: the pipeline's images, also where its own call cannot take
        ``steps`` (PixArt's one-step path assumes a distilled sampler)."""
        return self.decode(self.sample_latents(prompts, seeds, steps, guidance, size), size)

    def jump(self, sched, x, t, pred, noise, t_to):
        """The model input at timestep ``t_to`` on the noising path of the clean latents that ``pred`` (made at
        model input ``x``, timestep ``t``) implies, with ``noise`` (unit variance): a later point of the
        schedule reached with one prediction instead of sampling there. DDPM space: x_t = √ā x0 + √(1 − ā) n,
        which is also what an Euler-type sampler hands its denoiser."""
        a = sched.alphas_cumprod.to(x.device, x.dtype)
        at, to = a[int(round(float(t)))], a[int(round(float(t_to)))]
        x0 = (x - (1 - at).sqrt() * to_epsilon(self.objective, pred, x, t, sched)) / at.sqrt()
        return to.sqrt() * x0 + (1 - to).sqrt() * noise

    def score_space(self, pred, x, t, sched):
        """The prediction as the noise scores measure it: ε (Wen et al.) for noise-predicting models."""
        return to_epsilon(self.objective, pred, x, t, sched)

    @property
    def score_parameterisation(self) -> str:
        return "epsilon" if self.objective != "flow" else "velocity"


    # -- the training objective, and drawing from a fitted conditioning ------------------------------------

    def encode_image(self, pixels):
        """Pixels in [-1, 1], (n, 3, H, W) → the clean latents the model was trained on (its layout)."""
        vae = self.pipe.vae
        with self._torch.no_grad():
            z = vae.encode(pixels.to(self.device, vae.dtype)).latent_dist.mean.float()
        scale, offset = self._affine(z)
        return self.to_model((z - offset) * scale)

    def loss_times(self, generator, n: int):
        """n training timesteps drawn as the objective samples them (integers for DDPM, σ for flow)."""
        steps = self.pipe.scheduler.config.num_train_timesteps
        return self._torch.randint(0, steps, (n,), generator=generator)

    def times_at(self, fractions):
        """Fixed training timesteps at these fractions of the noise schedule: repeatable draws (membership)."""
        steps = self.pipe.scheduler.config.num_train_timesteps
        return self._torch.tensor([min(steps - 1, max(0, round(f * (steps - 1)))) for f in fractions])

    def implied_noise(self, x0, cond: Cond, size: tuple[int, int], guidance: float | None = None):
        """The noise the model reads in the clean latents themselves, at unit variance per sample: PIA's
        proximal initialisation (Kong et al., ICLR 2024), ε_θ(x0, 0), in the objective's own terms."""
        torch = self._torch
        g = self.family.guidance if guidance is None else guidance
        with torch.no_grad():
            t = torch.zeros(x0.shape[0], dtype=torch.long)
            x = x0.float().to(self.device, self.dtype)
            pred = self.predict_each(x, t.to(self.device), cond, size, g).float()
            eps = self._clean_noise(pred, x.float())
        return (eps / eps.flatten(1).std(1).clamp_min(1e-8).view(-1, *([1] * (eps.dim() - 1)))).cpu()

    def _clean_noise(self, pred, x):
        return to_epsilon(self.objective, pred, x, 0, self._ddpm())

    def _ddpm(self):
        if not hasattr(self, "_noise_sched"):
            from diffusers import DDPMScheduler
            self._noise_sched = DDPMScheduler.from_config(self.pipe.scheduler.config)
        return self._noise_sched

    def noised(self, x0, noise, t):
        """(model input x_t, the objective's target, the timestep the denoiser is given)."""
        sched = self._ddpm()
        x_t = sched.add_noise(x0, noise, t)
        target = {"epsilon": noise, "sample": x0}.get(self.objective)
        if target is None:
            target = sched.get_velocity(x0, noise, t)
        return x_t, target, t

    def losses(self, x0, noise, t, cond: Cond, size: tuple[int, int], guidance: float | None = None):
        """The family's training loss per sample (mean squared error of prediction and target); gradients
        flow to whatever ``cond`` was built from."""
        x_t, target, given = self.noised(x0.float(), noise.float(), t)
        g = self.family.guidance if guidance is None else guidance
        pred = self.predict_each(x_t.to(self.device, self.dtype), given.to(self.device), cond, size, g).float()
        return ((pred - target.to(pred.device)) ** 2).flatten(1).mean(1)

    def predict_each(self, x, t, cond: Cond, size, guidance):
        """As :meth:`predict`, with one timestep per sample."""
        return self.predict(x, t, cond, size, guidance)

    # -- drawing from a fitted conditioning ---------------------------------------------------------------

    def embed_kwargs(self, cond: Cond, uncond: Cond) -> dict:
        return {"prompt_embeds": cond.embeds, "negative_prompt_embeds": uncond.embeds}

    def draw(self, cond: Cond, seeds: list[int], steps: int, guidance: float, size: tuple[int, int]):
        """Sample a conditioning (not a prompt) through the pipeline, one seeded generator per image."""
        torch = self._torch
        n = len(seeds)
        cond = Cond(*(None if t is None else t.to(self.device, self.dtype if t.is_floating_point() else t.dtype)
                      for t in (cond.embeds, cond.pooled, cond.mask))).expand(n)
        uncond = self.unconditional(n)
        gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        kwargs = {k: v for k, v in self.family.call.items() if k != "max_sequence_length"}
        with torch.no_grad():
            out = self.pipe(**self.embed_kwargs(cond, uncond), num_inference_steps=steps, guidance_scale=guidance,
                            height=size[0], width=size[1], generator=gens, output_type="pil", **kwargs)
        return out.images

    # -- attention ------------------------------------------------------------------------------------------

    @contextmanager
    def text_attention(self, store: list, keep: int):
        """While it is open, every denoiser call appends, per text-carrying attention layer, the attention
        the image positions give each text position (mean over image positions and heads) for the first
        ``keep`` rows of the batch; the denoiser's output is unchanged."""
        spec = self.family.attention
        if spec is None:
            raise InputError(f"{self.loaded.model}: the attention score is not defined for {self.family.title}",
                             "use --methods wen,guide,edge")
        module_name, _, fn = spec.kernel.partition(":")
        kernel_home = importlib.import_module(module_name)
        real = getattr(kernel_home, fn)
        state: dict = {"n_text": None}

        def probe(query, key, value, *args, **kwargs):
            n_text = state["n_text"]
            if n_text is not None:
                store.append(_text_share(query, key, kwargs.get("attn_mask", args[0] if args else None),
                                         n_text, spec, keep))
            return real(query, key, value, *args, **kwargs)

        original = self.module.attn_processors
        wrapped = {name: _Recorder(proc, state) if name.endswith(spec.modules) else proc
                   for name, proc in original.items()}
        self.module.set_attn_processor(wrapped)
        setattr(kernel_home, fn, probe)
        try:
            yield
        finally:
            setattr(kernel_home, fn, real)
            self.module.set_attn_processor(original)


class _Recorder:
    """Wraps one attention processor: marks its kernel calls as text attention (and how many text
    tokens), then lets the original compute the output."""

    def __init__(self, original, state: dict):
        self.original = original
        self.state = state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, *args, **kwargs):
        if encoder_hidden_states is None:
            return self.original(attn, hidden_states, encoder_hidden_states, *args, **kwargs)
        self.state["n_text"] = encoder_hidden_states.shape[1]
        try:
            return self.original(attn, hidden_states, encoder_hidden_states, *args, **kwargs)
        finally:
            self.state["n_text"] = None


def _text_share(query, key, mask, n_text: int, spec, keep: int):
    """(keep, n_text): mean over image queries and heads of the softmax attention on each text key."""
    import torch
    with torch.no_grad():
        q, k = query[:keep].float(), key[:keep].float()
        if spec.layout == "BSHD":
            q, k = q.transpose(1, 2), k.transpose(1, 2)          # → (batch, heads, sequence, dim)
        if spec.kind == "joint":
            seq = q.shape[2]
            text = slice(0, n_text) if spec.text_at == "first" else slice(seq - n_text, seq)
            image = slice(n_text, seq) if spec.text_at == "first" else slice(0, seq - n_text)
            q = q[:, :, image]
        else:
            text = slice(0, k.shape[2])
        bias = None
        if mask is not None:
            bias = mask[:keep].float() if mask.dtype != torch.bool else \
                torch.zeros(mask[:keep].shape, device=mask.device).masked_fill(~mask[:keep], float("-inf"))
        total = torch.zeros(q.shape[0], text.stop - text.start, device=q.device)
        for start in range(0, q.shape[2], 1024):         # bounded memory at 1024 px: 1,024 queries at a time
            logits = q[:, :, start:start + 1024] @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
            if bias is not None:
                logits = logits + bias
            total += logits.softmax(-1)[..., text].sum(dim=2).mean(dim=1)
    return (total / q.shape[2]).cpu()
