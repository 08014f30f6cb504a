"""The auditor's commands: sample, scan, report, the one-file sweep, and the training-set-free tests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from imgextract.cli.options import (BatchSize, Captions, Descriptor, Device, Dtype, Grid, Guidance, IndexName, K, MinShare, Model,
                                    ModelConfig, Samples, Scheduler, Seed, ShardSize, Size, Steps, Threshold)
from imgextract.errors import InputError
from imgextract.app.settings import CliqueParams, CopyRule, DemoSettings, SamplingConfig, ScanParams, TriageParams


def _err(line: str) -> None:
    typer.echo(line, err=True)


def generate(
    captions: Captions,
    model: Model,
    out: Annotated[Path, typer.Option(help="Run folder (created; an existing one with the same settings resumes).")],
    samples: Samples = SamplingConfig.samples,
    batch_size: BatchSize = SamplingConfig.batch_size,
    steps: Steps = None,
    guidance: Guidance = None,
    scheduler: Scheduler = None,
    size: Size = None,
    seed: Seed = SamplingConfig.seed,
    device: Device = SamplingConfig.device,
    dtype: Dtype = SamplingConfig.dtype,
    shard_size: ShardSize = SamplingConfig.shard_size,
    model_config: ModelConfig = None,
    triage: Annotated[Optional[Path], typer.Option(help="Output of `imgextract triage`: sample only its top captions.")] = None,
    top: Annotated[Optional[int], typer.Option(help="With --triage: how many of the most suspicious captions to sample.")] = None,
) -> None:
    """Generate seeded samples for every caption, resumably.

    Example: imgextract generate captions.txt --model stable-diffusion-v1-5/stable-diffusion-v1-5 --out runs/sd15 --samples 16
    """
    from imgextract.app.commands import run_generation, sampling_config
    cfg = sampling_config(samples=samples, batch_size=batch_size, steps=steps, guidance=guidance, scheduler=scheduler,
                          size=size, seed=seed, device=device, dtype=dtype, shard_size=shard_size,
                          model_config=model_config)
    run_generation(captions, model, out, cfg, triage_file=triage, top=top, say=_err)
    typer.echo(f"samples in {out}")


def sample(
    model: Annotated[Optional[str], typer.Option(help="Hub id, local diffusers folder, or .safetensors/.ckpt file.")] = None,
    prompt: Annotated[Optional[str], typer.Option(help="The caption.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="The sample's own seed (as recorded in the run's manifest).")] = None,
    out: Annotated[Path, typer.Option(help="PNG file to write.")] = Path("sample.png"),
    run: Annotated[Optional[Path], typer.Option(
        "--run", help="A run folder: redraw its sample --file as the run drew it, byte for byte (with its batch, "
                      "model and settings; --model, --prompt and --seed are then not needed).")] = None,
    file: Annotated[Optional[str], typer.Option(
        help="With --run: the sample's path in the run (the manifest's file column).")] = None,
    steps: Steps = None, guidance: Guidance = None, scheduler: Scheduler = None, size: Size = None,
    device: Device = "auto", dtype: Dtype = "auto", model_config: ModelConfig = None,
) -> None:
    """Regenerate one sample from its recorded seed, or from its run folder byte for byte.

    Example: imgextract sample --model ./toy --prompt "an astronaut" --seed 123 --steps 25 --out a.png

    Example: imgextract sample --run runs/audit --file samples/shard-00000/c000003_s00001.png --out a.png
    """
    from imgextract.app.commands import sample as draw, sample_from_run
    if run is not None or file is not None:
        if run is None or file is None:
            raise InputError("--run and --file go together", "pass both, or --model, --prompt and --seed")
        given = [n for n, v in (("--model", model), ("--prompt", prompt), ("--seed", seed)) if v is not None]
        if given:
            raise InputError(f"{', '.join(given)} with --run", "the run records the model, prompt and seed: drop them")
        typer.echo(str(sample_from_run(run, file, out)))
        return
    missing = [n for n, v in (("--model", model), ("--prompt", prompt), ("--seed", seed)) if v is None]
    if missing:
        raise InputError(f"sample needs {', '.join(missing)}", "pass --model, --prompt and --seed, or --run and --file")
    from imgextract.app.commands import sampling_config
    cfg = sampling_config(samples=1, batch_size=1, steps=steps, guidance=guidance, scheduler=scheduler, size=size,
                          device=device, dtype=dtype, model_config=model_config)
    typer.echo(str(draw(model, prompt, seed, out, cfg)))


def print_findings(out: Path, limit: int = 10) -> None:
    from imgextract.app.commands import scan_summary
    summary = scan_summary(out)
    typer.echo(f"{summary['generations_scanned']} generations scanned, {summary['memorized_generations']} memorized, "
               f"{len(summary['memorized_images'])} training images memorized, {len(summary['skipped'])} skipped")
    for s in summary["skipped"]:
        typer.echo(f"skipped unreadable image {s['path']}: {s['reason']}", err=True)
    if summary.get("incomplete"):
        inc = summary["incomplete"]
        typer.echo(f"incomplete run: {inc['shards_finished']} of {inc['shards_planned']} shards generated so far")
    if summary["memorized_images"]:
        typer.echo(f"{'train_id':>8}  {'gens':>5}  {'best tiled_l2':>13}  training image")
        for r in summary["memorized_images"][:limit]:
            typer.echo(f"{r['train_id']:>8}  {r['generations']:>5}  {r['best_tiled_l2']:>13.4f}  {r['train_path']}")
            if r.get("url") or r.get("license"):
                typer.echo(f"{'':>30}url: {r.get('url') or '?'}  licence: {r.get('license') or '?'}")


def scan(
    generations: Annotated[Path, typer.Argument(help="A run folder, or any folder of generated images.")],
    index: IndexName,
    out: Annotated[Optional[Path], typer.Option(help="Output folder (default: the run folder, or GENERATIONS-scan).")] = None,
    k: K = ScanParams.k,
    threshold: Threshold = CopyRule.threshold,
    grid: Grid = ScanParams.grid,
    embedder: Annotated[Optional[str], typer.Option(help="Assert the index was built with this embedder.")] = None,
    device: Annotated[str, typer.Option(help="Device for the embedder.")] = "auto",
    relative_n: Annotated[int, typer.Option(help="Neighbours in Carlini's relative distance (0 turns it off).")] = ScanParams.relative_n,
    alpha: Annotated[float, typer.Option(help="Relative distance = L2 / (alpha * mean L2 to the n nearest others).")] = ScanParams.alpha,
    relative_threshold: Annotated[float, typer.Option(
        help="Relative distance below this counts for the relative criterion.")] = ScanParams.relative_threshold,
    criterion: Annotated[str, typer.Option(help="What 'memorized' means: copy (whole, portion or template copies; "
                                                "docs: Reading a finding) | tiled (Carlini's plain tiled L2) | "
                                                "relative | either | both.")] = ScanParams.criterion,
    min_share: MinShare = CopyRule.min_share,
    exact_below: Annotated[Optional[float], typer.Option(
        help="Measure tiled L2 at full resolution where the thumbnail bound is below this (default: threshold "
             "+ 0.10); above it the row keeps the bound (exact = false). 2 measures everything.")] = None,
    descriptor: Descriptor = None,
) -> None:
    """Find generations that copy indexed training images.

    Example: imgextract scan runs/sd15 --index laion-subset -k 10 --threshold 0.15
    """
    from imgextract.app.commands import run_scan
    out = run_scan(generations, index, out, k, threshold, grid, embedder, device, say=_err, relative_n=relative_n,
                   alpha=alpha, relative_threshold=relative_threshold, criterion=criterion, exact_below=exact_below,
                   min_share=min_share, descriptor=descriptor)
    print_findings(out)
    typer.echo(f"matches in {out / 'matches.parquet'}")


def report(
    run: Annotated[Path, typer.Argument(help="Run folder (or scan output folder) with matches.parquet.")],
    title: Annotated[str, typer.Option(help="Page title.")] = "imgextract report",
    paper: Annotated[bool, typer.Option(help="Print the papers' table (extraction rate by copy kind with CIs; recall "
                                             "and false flags on labelled prompts) and write paper.json.")] = False,
) -> None:
    """Write a self-contained report.html with every finding side by side.

    Example: imgextract report runs/sd15   (--paper: the figures papers report, with their intervals)
    """
    from imgextract.app.commands import paper_figures, write_report
    if paper:
        text, path = paper_figures(run)
        typer.echo(text)
        typer.echo(f"paper figures in {path}")
        return
    typer.echo(str(write_report(run, title)))


def run(
    config: Annotated[Path, typer.Argument(help="TOML file with \\[index], \\[generate], \\[scan], \\[cliques], \\[engine] and \\[report] sections.")],
    keep: Annotated[Optional[str], typer.Option(help="all: every sample's PNG; evidence: only memorized, near-miss and "
                                                     "clique samples (every sample keeps its manifest row, hashes, "
                                                     "candidates and embedding); auto: all below 100k samples. "
                                                     "Overrides the file's keep.")] = None,
    descriptor: Descriptor = None,
) -> None:
    """Run index → sweep (generate, then test each shard where it was drawn) → report from one config file.

    Example: imgextract run audit.toml --keep evidence   (see docs/audit.md for the file's keys; [engine] kind = "ray" for a cluster)
    """
    from imgextract.app.audit import run_config, run_verdict
    path = run_config(config, keep=keep, descriptor=descriptor)
    typer.echo(f"report: {path.resolve()}")
    typer.echo(run_verdict(path))


def cliques(
    run: Annotated[Path, typer.Argument(help="Run folder of `imgextract generate`.")],
    delta: Annotated[float, typer.Option(help="Edge between two generations when their tiled L2 is below this.")] = CliqueParams.delta,
    min_size: Annotated[int, typer.Option(
        help="Flag a caption whose largest clique has at least this many members.")] = CliqueParams.min_size,
    grid: Grid = CliqueParams.grid,
    max_cliques: Annotated[int, typer.Option(
        help="Stop the exact search after this many maximal cliques.")] = CliqueParams.max_cliques,
) -> None:
    """Training-set-free test: captions whose generations form a large near-duplicate clique.

    Example: imgextract cliques runs/sd15 --delta 0.15 --min-size 10
    """
    from imgextract.app.commands import run_cliques
    table = run_cliques(run, delta=delta, min_size=min_size, grid=grid, max_cliques=max_cliques)
    flagged = table[table["flagged"]]
    typer.echo(f"{len(flagged)} of {len(table)} captions flagged (largest clique >= {min_size}, delta {delta})")
    for _, r in flagged.sort_values("largest_clique", ascending=False).head(10).iterrows():
        bound = "" if r["exact"] else f" (search bound hit; true size <= {r['upper_bound']})"
        typer.echo(f"  {r['largest_clique']:>4}/{r['n_generations']}  {r['caption']}{bound}")
    typer.echo(f"cliques in {run / 'cliques.parquet'}")


RunSettings = Annotated[Optional[Path], typer.Option(
    "--run", help="A run folder: measure the model as it sampled (its guidance, steps and scheduler, which override "
                  "--guidance and --schedule-steps); recorded with the result.")]


def triage(
    captions: Captions,
    model: Model,
    out: Annotated[Path, typer.Option(help="Parquet file to write (caption, scores, unet_evals, ranked_by).")],
    steps: Annotated[int, typer.Option(help="Sampling steps measured by the noise-difference score.")] = TriageParams.steps,
    samples: Annotated[int, typer.Option(help="Seeds per caption.")] = TriageParams.samples,
    guidance: Annotated[float, typer.Option(
        help="Guidance for advancing latents and for the one-step images.")] = TriageParams.guidance,
    schedule_steps: Annotated[int, typer.Option(help="Length of the sampling schedule.")] = TriageParams.schedule_steps,
    methods: Annotated[Optional[str], typer.Option(help="Comma list of wen, attn, guide, mid, edge (default: the evaluated default "
                                                        "score's method; the ranking uses it when computed).")] = None,
    run: RunSettings = None,
    seed: Seed = TriageParams.seed, device: Device = "auto", dtype: Dtype = "auto", model_config: ModelConfig = None,
) -> None:
    """Rank captions by how likely they are memorized, cheaply (Webster; Wen et al.; Ren et al.).

    Example: imgextract triage captions.txt --model ./toy --out triage.parquet --samples 4
    """
    from imgextract.app.commands import ranking_reason, run_triage, score_column, triage_methods, triage_params
    chosen = triage_methods(methods)
    params = triage_params(steps, samples, schedule_steps, guidance, seed, run, say=_err)
    result = run_triage(captions, model, out, params, chosen, device, dtype, model_config)
    key = result["ranked_by"].iat[0]
    typer.echo(f"{len(result)} captions, {int(result['unet_evals'].sum())} UNet evaluations; ranked by {key}: "
               f"{ranking_reason(key)}")
    typer.echo("most suspicious:")
    for _, r in result.head(5).iterrows():
        cells = "  ".join(f"{score_column(m).removesuffix('_score')} {r[score_column(m)]:8.3f}" for m in chosen)
        typer.echo(f"  {cells}  {r['caption']}")
    typer.echo(f"triage in {out}")


def triage_eval(
    model: Model,
    out: Annotated[Path, typer.Option(help="JSON file for the figures, the table and every prompt's scores.")],
    memorized: Annotated[Optional[Path], typer.Option(
        help="Memorized prompts (positives): Webster's jsonl, MemBench's CSV, a .txt or any caption table.")] = None,
    clean: Annotated[Optional[Path], typer.Option(help="Non-memorized prompts (negatives), in any caption form.")] = None,
    labelled: Annotated[Optional[Path], typer.Option(
        help="Instead of the two files: one table with a caption and a memorized (1/0) column.")] = None,
    labels: Annotated[Optional[Path], typer.Option(
        help="Instead: the verified.parquet of `labels verify` (its cleaned labels, the published ones beside).")] = None,
    methods: Annotated[str, typer.Option(help="Comma list of wen, attn, guide, mid, edge.")] = "wen,attn,guide,edge",
    steps: Annotated[int, typer.Option(help="Sampling steps measured by the noise-difference score.")] = TriageParams.steps,
    samples: Annotated[int, typer.Option(help="Seeds per prompt.")] = TriageParams.samples,
    guidance: Annotated[float, typer.Option(
        help="Guidance for advancing latents and for the one-step images.")] = TriageParams.guidance,
    schedule_steps: Annotated[int, typer.Option(help="Length of the sampling schedule.")] = TriageParams.schedule_steps,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for every interval.")] = 2000,
    run: RunSettings = None,
    seed: Seed = TriageParams.seed, device: Device = "auto", dtype: Dtype = "auto", model_config: ModelConfig = None,
) -> None:
    """Score detection of memorized prompts as the papers do: ROC AUC, TPR at 1% and 3% FPR, with CIs.

    Example: imgextract triage-eval --memorized sdv1_500_memorized.jsonl --clean coco.txt --model M --out eval.json
    """
    from imgextract.app.commands import triage_params
    from imgextract.app.triage_eval import run_triage_eval
    params = triage_params(steps, samples, schedule_steps, guidance, seed, run, say=_err)
    chosen = tuple(m.strip() for m in methods.split(",") if m.strip())
    result = run_triage_eval(model, out, params, memorized, clean, labelled, chosen, device, dtype, model_config,
                             bootstrap, say=_err, labels=labels)
    typer.echo(result["table"])
    typer.echo(f"evaluation in {out}")


def watermarks(
    images: Annotated[Path, typer.Argument(help="A run folder, an index folder, or any folder of images.")],
    out: Annotated[Optional[Path], typer.Option(help="Output folder (default: the run/index itself, or IMAGES-watermarks).")] = None,
    brands: Annotated[Optional[Path], typer.Option(help="Extra brands, one per line: 'Name' or 'Name: alias, alias'.")] = None,
    templates: Annotated[Optional[Path], typer.Option(help="Folder of logo template images.")] = None,
    classifier: Annotated[Optional[Path], typer.Option(help="LAION watermark classifier weights (.pt state dict or .safetensors).")] = None,
    device: Annotated[str, typer.Option(help="Device for the classifier.")] = "cpu",
) -> None:
    """Flag stock-photo watermarks (OCR + brand list, logo templates, optional classifier).

    Example: imgextract watermarks runs/sd15 --templates logos/ && imgextract watermarks indexes/laion-subset
    """
    from imgextract.app.commands import run_watermarks
    table, out = run_watermarks(images, out, brands=brands, templates=templates, classifier=classifier, device=device)
    flagged = table[table["watermark"].fillna(False).astype(bool)]
    typer.echo(f"{len(flagged)} of {len(table)} images carry a watermark")
    for _, r in flagged.head(10).iterrows():
        typer.echo(f"  {r['brand'] or '?':14s} {list(r['box']) if r['box'] is not None else ''}  {r['path']}")
    for _, r in table[table["error"].notna()].iterrows():
        typer.echo(f"skipped unreadable image {r['path']}: {r['error']}", err=True)
    typer.echo(f"watermarks in {out / 'watermarks.parquet'}")


def demo(
    out: Annotated[Path, typer.Option(help="Where the demo run and its report go.")] = Path("runs/demo"),
    vae_steps: Annotated[int, typer.Option(
        help="Toy VAE training steps (a finished model is reused from the cache).")] = DemoSettings.vae_steps,
    unet_steps: Annotated[int, typer.Option(help="Toy UNet training steps.")] = DemoSettings.unet_steps,
    seed: Annotated[int, typer.Option(help="Seed for training and sampling.")] = DemoSettings.seed,
    samples: Annotated[int, typer.Option(help="Samples per training caption.")] = DemoSettings.samples,
    arch: Annotated[str, typer.Option(help="The toy's denoiser: unet (SD 1's layout) or dit (SD3's transformer, "
                                           "rectified flow).")] = DemoSettings.arch,
    dit_steps: Annotated[int, typer.Option(help="Toy transformer training steps (--arch dit).")] = DemoSettings.dit_steps,
) -> None:
    """The whole audit offline: toy model → index → generate → scan → report.

    Example: imgextract demo --out runs/demo
    """
    from imgextract.app.demo import run_demo
    report_path, line = run_demo(out, vae_steps, unet_steps, seed, samples, arch=arch, dit_steps=dit_steps,
                                 say=typer.echo)
    typer.echo(f"report: {report_path.resolve()}")
    typer.echo(line)


COMMANDS = {"generate": generate, "sample": sample, "scan": scan, "report": report, "run": run,
            "cliques": cliques, "triage": triage, "triage-eval": triage_eval, "watermarks": watermarks, "demo": demo}
