"""Every option that more than one command takes, declared once (huggingface_hub's ``hf`` style).

A command names the alias as the parameter's type and gives the default it wants:
``steps: Steps = 50``. The help text, flag spelling and type live here only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

Model = Annotated[str, typer.Option(help="Hub id, local diffusers folder, or .safetensors/.ckpt file.")]
Device = Annotated[str, typer.Option(help="auto | cpu | cuda | mps")]
Dtype = Annotated[str, typer.Option(help="auto (fp16 on CUDA, fp32 otherwise) | float32 | float16 | bfloat16")]
Steps = Annotated[Optional[int], typer.Option(
    help="Sampling steps (default: the model family's: 50 for SD 1/2/XL, 28 SD3 and Flux dev, 4 Flux schnell, "
         "20 PixArt).")]
Guidance = Annotated[Optional[float], typer.Option(
    help="Guidance scale (default: the model family's: 7.5 SD 1/2, 5 SDXL, 7 SD3, 3.5 Flux dev, 0 Flux schnell, "
         "4.5 PixArt).")]
Scheduler = Annotated[Optional[str], typer.Option(
    help="ddim, ddpm, pndm, euler, euler-a, dpm++, unipc, lms, heun; flow-euler, flow-heun for SD3 and Flux "
         "(default: the model's).")]
Size = Annotated[Optional[tuple[int, int]], typer.Option(help="Height and width (default: the model's native size).")]
Seed = Annotated[int, typer.Option(help="Base seed; each sample's seed derives from (base, caption id, sample index).")]
ModelConfig = Annotated[Optional[str], typer.Option(
    help="For single-file checkpoints offline: a diffusers folder of the same architecture.")]
Samples = Annotated[int, typer.Option(help="Samples per caption.")]
BatchSize = Annotated[int, typer.Option(help="Images per pipeline call (batches mix captions).")]
ShardSize = Annotated[int, typer.Option(help="Samples per resumable shard.")]
IndexName = Annotated[str, typer.Option("--index", help="Index name (under ./indexes or $IMGEXTRACT_INDEX_DIR) or path.")]
IndexArg = Annotated[str, typer.Argument(help="Index name or path.")]
K = Annotated[int, typer.Option("-k", "--k", help="Nearest training images tested per generation.")]
Threshold = Annotated[float, typer.Option(help="Memorized when tiled L2 is below this (pixels in [0,1]).")]
Grid = Annotated[int, typer.Option(help="Tiles per side for tiled L2.")]
MinShare = Annotated[float, typer.Option(help="A copy covers at least this share of the training image's detailed area "
                                              "(and 10% of the generation's): a substantial portion.")]
Descriptor = Annotated[Optional[str], typer.Option(
    help="sscd:PATH.safetensors: add each candidate's SSCD similarity (sscd_similarity) and the share of "
         "generations over 0.5 and 0.7; the index must be built with the same --descriptor "
         "(make the file with `imgextract convert sscd`).")]
OutFolder = Annotated[Path, typer.Option(help="Output folder.")]
Captions = Annotated[Path, typer.Argument(
    help=".txt (one caption per line), CSV/JSONL/Parquet with a caption column, or a published prompt set "
         "(Webster's sdv1_500_memorized.jsonl, MemBench's SD1_final.csv).")]
