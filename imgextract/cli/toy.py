"""``imgextract toy train``: the toy memorizing model, trained offline with a known duplication."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from imgextract.app.settings import ToyConfig

app = typer.Typer(no_args_is_help=True, help="The toy memorizing model (trained offline, known duplication).")


@app.command("train")
def toy_train(
    out: Annotated[Path, typer.Option(help="Folder for the pipeline and its train/ set.")],
    images: Annotated[Optional[Path], typer.Option(help="Folder/table of captioned images (default: built-in photographs).")] = None,
    duplicates: Annotated[str, typer.Option(help="COPIESxIMAGES parts: copies per image, in order.")] = ToyConfig.duplicates,
    size: Annotated[int, typer.Option(help="Image side in pixels (multiple of 8, 16..256).")] = ToyConfig.size,
    minutes: Annotated[float, typer.Option(help="Wall-time budget for training.")] = ToyConfig.minutes,
    seed: Annotated[int, typer.Option(help="Seed for initialisation and batches.")] = ToyConfig.seed,
    vae_steps: Annotated[Optional[int], typer.Option(help="Fixed VAE steps instead of the time budget.")] = None,
    unet_steps: Annotated[Optional[int], typer.Option(
        help="Fixed denoiser (UNet or transformer) steps instead of the time budget.")] = None,
    arch: Annotated[str, typer.Option(help="The denoiser: unet (a StableDiffusionPipeline) or dit (an SD3-style "
                                           "transformer trained with rectified flow, a StableDiffusion3Pipeline)."
                                      )] = ToyConfig.arch,
) -> None:
    """Train a small text-to-image model that memorizes its duplicated images.

    Example: imgextract toy train --out runs/toy --duplicates 100x1,10x4,1x25 --minutes 4
    """
    from imgextract.app.commands import toy_config, train_toy
    cfg = toy_config(images, duplicates=duplicates, size=size, minutes=minutes, seed=seed, vae_steps=vae_steps,
                     unet_steps=unet_steps, arch=arch)   # SPEC, size and images checked before anything is written
    train_toy(out, cfg, images)
    typer.echo(f"toy model in {out} (training set in {out / 'train'})")
