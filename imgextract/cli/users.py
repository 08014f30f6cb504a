"""The artist's, the researcher's and the deployer's commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from imgextract import errors
from imgextract.cli.options import (Descriptor, Device, Dtype, Guidance, IndexName, K, MinShare, Model, Scheduler, Seed, Size,
                                    Steps, Threshold)
from imgextract.errors import InputError
from imgextract.app.settings import (Budget, CheckSettings, CopyRule, MembershipSettings, SamplingConfig, ScanParams,
                                     ServeConfig)


def check(
    works: Annotated[Path, typer.Argument(help="One image or a folder of your works.")],
    model: Model,
    caption: Annotated[Optional[str], typer.Option(help="Prompt to use for every work.")] = None,
    captions: Annotated[Optional[Path], typer.Option(help="Table with a file column and a caption column.")] = None,
    samples: Annotated[int, typer.Option(help="Samples per work.")] = CheckSettings.samples,
    out: Annotated[Path, typer.Option(help="Folder for the index, samples and check.html.")] = Path("imgextract-check"),
    index: Annotated[Optional[str], typer.Option(
        "--index", help="The model's training index: find each work's copies in it and sample their captions first "
                        "(name under ./indexes or $IMGEXTRACT_INDEX_DIR, or a path).")] = None,
    reconstruct: Annotated[bool, typer.Option(
        help="Search for any input that draws a work no prompt reproduced, with the same search on --null images "
             "as its calibration.")] = CheckSettings.reconstruct,
    null: Annotated[Optional[Path], typer.Option(
        help="Folder of calibration images the model never saw (needed by --reconstruct; none ship).")] = None,
    reconstruct_steps: Annotated[int, typer.Option(help="Optimiser steps of each reconstruction search.")] = Budget.steps,
    descriptor: Descriptor = None,
    steps: Steps = None,
    guidance: Guidance = None,
    seed: Seed = SamplingConfig.seed,
    scheduler: Scheduler = None,
    dtype: Dtype = SamplingConfig.dtype,
    size: Size = None,
    device: Device = SamplingConfig.device,
) -> None:
    """Artist's check: is my work in the training set, and can this model reproduce it? One verdict per work.

    Example: imgextract check ./my-paintings --model stable-diffusion-v1-5/stable-diffusion-v1-5 --index laion-subset
    """
    from imgextract.app.artist import run_check
    from imgextract.app.commands import sampling_config
    settings = CheckSettings(samples=samples, caption=caption, captions=captions, index=index, reconstruct=reconstruct,
                             null=null, budget=Budget(steps=reconstruct_steps, seed=seed), descriptor=descriptor)
    cfg = sampling_config(steps=steps, guidance=guidance, seed=seed, device=device, size=size, scheduler=scheduler,
                          dtype=dtype)
    result, page = run_check(works, model, out, settings, cfg, say=lambda line: typer.echo(line, err=True))
    for v in result:
        terms = f" [{'; '.join(v.terms())}]" if v.verdict != "unreadable" else ""
        typer.echo(f"{Path(v.work).name}: {v.sentence()}{terms}")
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
    threshold: Annotated[float, typer.Option(help="Memorized when tiled L2 is below this.")] = CopyRule.threshold,
    k: Annotated[int, typer.Option("-k", help="Candidates tested.")] = ScanParams.k,
    min_share: MinShare = CopyRule.min_share,
    descriptor: Descriptor = None,
) -> None:
    """Release guard: does this image substantially replicate an indexed training image?

    Exit code 1 when it does (a whole copy, a portion or a template, or a replication under compression, blur,
    resizing or tone that the near-exact test refuses), so a serving pipeline can block it.
    Example: imgextract guard out.png --index laion-subset
    """
    from imgextract.app.guard import ORIGINS, guard_file
    if origin not in ORIGINS:
        raise InputError(f"--origin {origin}", "use ordinary or targeted")
    verdict = guard_file(image, index, origin, k=k, threshold=threshold, min_share=min_share, descriptor=descriptor)
    if not verdict.tested:   # exit 0 would read as "does not replicate"
        raise InputError(f"{image} could not be checked: {verdict.term.removeprefix('not tested: ')}",
                         f"rebuild index {index} (with --images when its pixels are elsewhere)")
    typer.echo(verdict.sentence())
    typer.echo(f"({verdict.seconds * 1000:.0f} ms)")
    if verdict.blocked:   # a copy, or a replication the near-exact test refused: never passed as clean
        raise typer.Exit(errors.FOUND)


def serve(
    index: IndexName,
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    api_key_file: Annotated[Optional[Path], typer.Option(help="File of bearer keys, one per line; requests "
                                                               "without one get 401.")] = None,
    workers: Annotated[int, typer.Option(help="Checks run at once (threads).")] = ServeConfig.workers,
    queue: Annotated[int, typer.Option(help="Checks that may wait beyond those (30: about half a second of work "
                                            "on 2 cores); more get 503 with Retry-After.")] = ServeConfig.queue,
    max_bytes: Annotated[int, typer.Option(help="Largest image accepted, in bytes (413 above).")] = ServeConfig.max_bytes,
    max_batch: Annotated[int, typer.Option(help="Most images in one /v1/check/batch request.")] = ServeConfig.max_batch,
    threshold: Threshold = CopyRule.threshold,
    k: K = ScanParams.k,
    min_share: MinShare = CopyRule.min_share,
) -> None:
    """The release guard as an HTTP service: POST /v1/check, /v1/check/batch; GET /healthz, /metrics.

    Example: imgextract serve --index laion-subset --port 8000 --api-key-file keys.txt
    """
    from imgextract.app.serve import read_api_keys, serve as run_service
    if not 0 < port < 65536:
        raise InputError(f"--port {port}", "give a port from 1 to 65535")
    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401  (multipart bodies)
        import uvicorn  # noqa: F401
    except ImportError:
        raise InputError("imgextract serve needs FastAPI, uvicorn and python-multipart",
                         "pip install 'imgextract[serve]'") from None
    keys = read_api_keys(api_key_file) if api_key_file else ()
    if not keys and host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"warning: listening on {host} without --api-key-file: anyone who reaches this address "
                   "can use the service", err=True)
    cfg = ServeConfig(index=index, k=k, threshold=threshold, min_share=min_share, workers=workers, queue=queue,
                      max_bytes=max_bytes, max_batch=max_batch, api_keys=keys)   # checks every setting
    run_service(cfg, host, port, say=lambda m: typer.echo(m, err=True))


def membership(
    works: Annotated[Path, typer.Argument(help="Your works, the suspected members: a folder or an image table "
                                               "(at least 10).")],
    reference: Annotated[Path, typer.Option(help="Works of the same kind known not to be in the training set "
                                                 "(unpublished or later ones): a folder or an image table (at least 6).")],
    model: Model,
    out: Annotated[Path, typer.Option(help="The result file; membership.html is written beside it.")] = Path("membership.json"),
    null_splits: Annotated[int, typer.Option(help="Also test this many random halves of --reference against each "
                                                  "other and report the false-positive rate measured.")] = MembershipSettings.null_splits,
    fit_share: Annotated[float, typer.Option(help="Share of each side that fits the scoring direction (the rest is "
                                                  "tested); 0 tests every image on the prior direction.")] = MembershipSettings.fit_share,
    noises: Annotated[int, typer.Option(help="Seeded noises per timestep.")] = MembershipSettings.noises,
    captions: Annotated[bool, typer.Option(help="Condition on the images' captions (sidecar .txt or a caption column) "
                                                "when every image has one.")] = MembershipSettings.captions,
    seed: Annotated[int, typer.Option(help="Seed of the noises and the splits.")] = MembershipSettings.seed,
    size: Size = None,
    device: Device = SamplingConfig.device,
    dtype: Dtype = SamplingConfig.dtype,
) -> None:
    """Artist's collection test: were these works, as a set, in the model's training data? The model alone, no index.

    Dataset inference: per image, the model's own denoising loss at fixed noises, its ratio to a shifted copy's and
    PIA's loss; a direction fitted on a split, a one-sided permutation test on the rest, with p-value and effect.
    Example: imgextract membership ./my-works --reference ./my-unpublished --model ./model --out membership.json
    """
    from imgextract.app.commands import sampling_config
    from imgextract.app.membership import run_membership
    settings = MembershipSettings(null_splits=null_splits, fit_share=fit_share, noises=noises, captions=captions,
                                  seed=seed)
    cfg = sampling_config(device=device, dtype=dtype, size=size, seed=seed)
    result = run_membership(works, reference, model, out, settings, cfg, say=lambda line: typer.echo(line, err=True))
    typer.echo(result["verdict"])
    t = result["test"]
    auc = "n/a" if t["auc"] is None else f"{t['auc']:.3f}"
    typer.echo(f"p = {t['p_value']:.3g} (smallest possible here {t['min_p']:.3g}), AUC {auc}, "
               f"{t['test_works']} works and {t['test_refs']} references tested")
    if result["null"]["p_values"]:
        n = result["null"]
        typer.echo(f"null: {n['false_positives']} of {len(n['p_values'])} reference splits under p {result['alpha']} "
                   f"(false-positive rate {n['false_positive_rate']:.2f})")
    typer.echo(f"result: {out.resolve()} (page: {out.with_suffix('.html').resolve()})")


COMMANDS = {"check": check, "compare": compare, "guard": guard, "membership": membership, "serve": serve}
