"""The artist's, the researcher's and the deployer's commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from imgextract import errors
from imgextract.cli.options import Device, Dtype, Guidance, IndexName, MinShare, Model, Scheduler, Seed, Size, Steps
from imgextract.errors import InputError


def check(
    works: Annotated[Path, typer.Argument(help="One image or a folder of your works.")],
    model: Model,
    caption: Annotated[Optional[str], typer.Option(help="Prompt to use for every work.")] = None,
    captions: Annotated[Optional[Path], typer.Option(help="Table with a file column and a caption column.")] = None,
    samples: Annotated[int, typer.Option(help="Samples per work.")] = 8,
    out: Annotated[Path, typer.Option(help="Folder for the index, samples and check.html.")] = Path("imgextract-check"),
    steps: Steps = 50,
    guidance: Guidance = 7.5,
    seed: Seed = 0,
    scheduler: Scheduler = None,
    dtype: Dtype = "auto",
    size: Size = None,
    device: Device = "auto",
) -> None:
    """Artist's check: can this model reproduce my images? One verdict per work.

    Example: imgextract check ./my-paintings --model stable-diffusion-v1-5/stable-diffusion-v1-5 --samples 16
    """
    from imgextract.app.artist import run_check
    from imgextract.models.pipelines import quiet_libraries
    quiet_libraries()
    result, page = run_check(works, model, out, caption, captions, samples, steps, guidance, seed, device,
                             tuple(size) if size else None, say=lambda line: typer.echo(line, err=True),
                             scheduler=scheduler, dtype=dtype)
    for v in result:
        typer.echo(f"{Path(v.work).name}: {v.sentence()}")
    typer.echo(f"page: {page.resolve()} (verdicts in {(out / 'check.json').resolve()})")


def compare(
    runs: Annotated[list[Path], typer.Argument(help="Two or more audited run folders (same captions).")],
    out: Annotated[Path, typer.Option(help="Folder for compare.json, compare.parquet and compare.html.")],
    intersection: Annotated[bool, typer.Option(help="Compare only the captions all runs share.")] = False,
    threshold: Annotated[Optional[float], typer.Option(help="Apply one tiled-L2 threshold to all runs.")] = None,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals.")] = 2000,
) -> None:
    """Researcher's comparison: extraction rate per model (and per duplication level), with CIs.

    Example: imgextract compare runs/model-a runs/model-b --out runs/compare
    """
    from imgextract.app.compare import compare_runs
    result = compare_runs(runs, out, intersection, threshold, resamples)
    typer.echo(f"{'run':24s} {'extracted':>10} {'rate':>6}  95% CI")
    for r in result["runs"]:
        typer.echo(f"{r['run']:24s} {r['extracted']:>4}/{r['captions']:<5} {r['rate']:6.3f}  "
                   f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]")
    for r in result["runs"]:
        kinds = ", ".join(f"{k} {v['extracted']}/{r['captions']}" for k, v in r["by_kind"].items())
        typer.echo(f"  {r['run']:22s} by copy kind: {kinds}")
    for r in result["per_duplication_level"]:
        typer.echo(f"  {r['run']:22s} {r['copies']:>5}x {r['extracted']:>4}/{r['captions']:<5} {r['rate']:6.3f}")
    shared = sum(f["shared"] for f in result["findings"])
    typer.echo(f"{len(result['findings'])} memorized training images, {shared} shared by all runs")
    typer.echo(f"comparison in {out / 'compare.html'}")


def guard(
    image: Annotated[Path, typer.Argument(help="One generated image.")],
    index: IndexName,
    origin: Annotated[str, typer.Option(help="How it was made: ordinary (prompt) or targeted (search).")] = "ordinary",
    threshold: Annotated[float, typer.Option(help="Memorized when tiled L2 is below this.")] = 0.15,
    k: Annotated[int, typer.Option("-k", help="Candidates tested.")] = 10,
    min_share: MinShare = 0.25,
) -> None:
    """Release guard: does this image substantially replicate an indexed training image?

    Exit code 1 when it does (a whole copy, a portion or a template), so a serving pipeline can block it.
    Example: imgextract guard out.png --index laion-subset
    """
    from imgextract.app.guard import ORIGINS, guard_file
    if origin not in ORIGINS:
        raise InputError(f"--origin {origin}", "use ordinary or targeted")
    verdict = guard_file(image, index, origin, k=k, threshold=threshold, min_share=min_share)
    if not verdict.tested:   # exit 0 would read as "does not replicate"
        raise InputError(f"{image} could not be checked: {verdict.term.removeprefix('not tested: ')}",
                         f"rebuild index {index} (with --images when its pixels are elsewhere)")
    typer.echo(verdict.sentence())
    typer.echo(f"({verdict.seconds * 1000:.0f} ms)")
    if verdict.memorized:
        raise typer.Exit(errors.FOUND)


COMMANDS = {"check": check, "compare": compare, "guard": guard}
