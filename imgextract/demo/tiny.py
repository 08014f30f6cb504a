"""Tiny text-to-image models built offline: real diffusers/open_clip architectures, small sizes.

They let tests and the demo exercise exactly the loading paths a user's checkpoint goes
through (``StableDiffusionPipeline`` folders, open_clip folders) with no download. The CLIP
tokenizer's vocabulary comes from the BPE merges file that open_clip ships.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

N_MERGES = 49152 - 256 - 2  # CLIP's BPE uses this many merges; 49408 tokens in all


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins for raw bytes used by byte-level BPE (GPT-2/CLIP)."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return [mapping[b] for b in range(256)]


def write_clip_tokenizer(out_dir: Path, model_max_length: int = 77):
    """Write vocab.json/merges.txt from open_clip's BPE file and return a CLIPTokenizer."""
    import open_clip
    from transformers import CLIPTokenizer

    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(bpe, "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(ln.split()) for ln in lines[1:1 + N_MERGES]]
    alphabet = _byte_alphabet()
    vocab = alphabet + [a + "</w>" for a in alphabet] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}), encoding="utf-8")
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
                                        encoding="utf-8")
    return CLIPTokenizer(str(out_dir / "vocab.json"), str(out_dir / "merges.txt"),
                         model_max_length=model_max_length, pad_token="<|endoftext|>")


@dataclass(frozen=True)
class TinyArch:
    """Architecture as data: sizes of the tiny latent Stable Diffusion pipeline."""

    image_size: int = 32
    latent_channels: int = 4
    vae_channels: tuple[int, ...] = (32, 64)        # two blocks → latents at size / 2
    unet_channels: tuple[int, ...] = (32, 64, 64)
    text_hidden: int = 32
    text_layers: int = 2
    max_tokens: int = 16
    prediction_type: str = "sample"                 # x0-prediction memorizes fastest at toy scale


def tiny_vae(arch: TinyArch = TinyArch()):
    """The toy's latent VAE (size → size / 2, ``latent_channels`` deep), randomly initialised."""
    from diffusers import AutoencoderKL
    n = len(arch.vae_channels)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=arch.latent_channels,
                         block_out_channels=arch.vae_channels, layers_per_block=1, norm_num_groups=8,
                         down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                         sample_size=arch.image_size)


def tiny_components(arch: TinyArch = TinyArch(), seed: int = 0) -> dict:
    """Randomly initialised, seeded components of a latent StableDiffusionPipeline.

    The tokenizer's vocab/merges are written to a temporary folder this function owns and
    removes: nothing is written into (or deleted from) a folder the caller chose."""
    import tempfile

    import torch
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    vae = tiny_vae(arch)
    n = len(arch.vae_channels)
    latent = arch.image_size // 2 ** (n - 1)
    m = len(arch.unet_channels)
    unet = UNet2DConditionModel(
        sample_size=latent, in_channels=arch.latent_channels, out_channels=arch.latent_channels,
        block_out_channels=arch.unet_channels, layers_per_block=1, norm_num_groups=8,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (m - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (m - 1) + ("UpBlock2D",),
        cross_attention_dim=arch.text_hidden, attention_head_dim=8)
    with tempfile.TemporaryDirectory(prefix="imgextract-tok-") as tok_dir:
        tokenizer = write_clip_tokenizer(Path(tok_dir), model_max_length=arch.max_tokens)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=arch.text_hidden, intermediate_size=arch.text_hidden * 2,
        num_hidden_layers=arch.text_layers, num_attention_heads=4, max_position_embeddings=arch.max_tokens,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                              beta_end=0.012, clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                              prediction_type=arch.prediction_type)
    return {"vae": vae, "unet": unet, "text_encoder": text_encoder, "tokenizer": tokenizer,
            "scheduler": scheduler}


def assemble_pipeline(components: dict):
    from diffusers import StableDiffusionPipeline
    return StableDiffusionPipeline(**components, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def save_tiny_pipeline(out_dir: Path, arch: TinyArch = TinyArch(), seed: int = 0) -> Path:
    """A random-weight tiny pipeline saved as a normal diffusers folder."""
    out_dir = Path(out_dir)
    pipe = assemble_pipeline(tiny_components(arch, seed))
    pipe.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def save_tiny_clip(out_dir: Path, seed: int = 0, image_size: int = 32, embed_dim: int = 32) -> Path:
    """A random-weight tiny open_clip model as a local folder (config + safetensors)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    cfg = {"embed_dim": embed_dim,
           "vision_cfg": {"image_size": image_size, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    torch.manual_seed(seed)
    model = open_clip.CLIP(**cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": cfg,
        "preprocess_cfg": {"mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD)}}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out_dir / "open_clip_model.safetensors"))
    return out_dir
