"""`imgextract labels`: published memorized-prompt labels checked on a model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from imgextract.app.settings import SamplingConfig, ScanParams, VerifyParams
from imgextract.cli.options import BatchSize, Descriptor, Device, Dtype, Guidance, IndexName, K, Model, Seed, ShardSize, Size, Steps

app = typer.Typer(no_args_is_help=True, help="Published memorized-prompt labels, re-verified on a model.")


@app.command("verify")
def verify(
    labelled: Annotated[Path, typer.Argument(help="A published label file (Webster's ground-truth parquet, Jeon's "
                                                  "jsonl, NeMo's CSV) or a table with a memorized column.")],
    model: Model,
    index: IndexName,
    out: Annotated[Path, typer.Option(help="Output folder (created; an unfinished verify there resumes).")],
    seeds: Annotated[int, typer.Option(help="Samples per prompt: the published gen_seeds first, then the seed rule.")] = VerifyParams.seeds,
    batch_size: BatchSize = SamplingConfig.batch_size,
    steps: Steps = None,
    guidance: Guidance = None,
    size: Size = None,
    seed: Seed = SamplingConfig.seed,
    device: Device = SamplingConfig.device,
    dtype: Dtype = SamplingConfig.dtype,
    shard_size: ShardSize = SamplingConfig.shard_size,
    k: K = ScanParams.k,
    descriptor: Descriptor = None,
) -> None:
    """Draw every labelled prompt's seeds, judge each sample against the index, and write per prompt what it
    copies, a cleaned label and the confusion table (published label x verified kind).

    Example: imgextract labels verify sdv1_bb_edge_groundtruth.parquet --model M --index laion-subset --out verify
    """
    from imgextract.app.commands import sampling_config
    from imgextract.app.labels import summary_lines, verify_labels
    cfg = sampling_config(samples=seeds, batch_size=batch_size, steps=steps, guidance=guidance, size=size, seed=seed,
                          device=device, dtype=dtype, shard_size=shard_size)
    summary = verify_labels(labelled, model, index, out, cfg, k=k, descriptor=descriptor,
                            say=lambda line: typer.echo(line, err=True))
    for line in summary_lines(summary, out):
        typer.echo(line)
