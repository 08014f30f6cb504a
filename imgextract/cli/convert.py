"""``imgextract convert ...``: weights in a stranger's format, made safe to load once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, help="Convert published weights into the safetensors files imgextract loads.")


@app.command("sscd")
def sscd(
    src: Annotated[Path, typer.Argument(help="The official SSCD release (sscd_disc_mixup.torchscript.pt).")],
    out: Annotated[Path, typer.Argument(help="The .safetensors file to write (must not exist).")],
) -> None:
    """SSCD's TorchScript release → safetensors, for --descriptor sscd:OUT.

    The only place imgextract opens TorchScript. Run it once, on the file you downloaded from the
    SSCD authors; anything that is not their ResNet-50 + GeM + projection is refused.
    Example: imgextract convert sscd sscd_disc_mixup.torchscript.pt sscd.safetensors
    """
    from imgextract.app.commands import convert_sscd
    done = convert_sscd(src, out)
    typer.echo(f"wrote {done['out']} ({done['tensors']} tensors, fingerprint {done['fingerprint']}); "
               f"use --descriptor sscd:{done['out']}")
