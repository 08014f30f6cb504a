"""Command line: thin typer wrappers over the stage functions.

Every bad argument surfaces as one ``error:`` line with the remedy and exit code 2, before
any work starts.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from imgextract import errors
from imgextract.engine import quiet_libraries, run_generation, run_scan, train_with_progress
from imgextract.errors import InputError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Audit text-to-image diffusion models for memorized training images.")
index_app = typer.Typer(no_args_is_help=True, help="Build and inspect training-image indexes.")
app.add_typer(index_app, name="index")


@index_app.command("build")
def index_build(
    source: Path = typer.Argument(..., help="Folder of images (sidecar .txt = caption) or CSV/JSONL/Parquet table."),
    name: str = typer.Option(..., "--name", help="Index name (stored under ./indexes or $IMGEXTRACT_INDEX_DIR) or a path."),
    embedder: str = typer.Option("pixel", help="pixel | clip:MODEL/PRETRAINED | clip:hf-hub:ORG/REPO | clip:PATH"),
    image_column: Optional[str] = typer.Option(None, help="Table column with image paths (default: path/image/file)."),
    caption_column: Optional[str] = typer.Option(None, help="Table column with captions (default: caption/text/prompt)."),
    batch_size: int = typer.Option(64, help="Images embedded per batch."),
    factory: str = typer.Option("auto", help="FAISS index_factory string (Flat, HNSW32, IVF1024,Flat, ...) or auto: "
                                             "chosen from the number of vectors and --max-memory."),
    max_memory: str = typer.Option("4G", help="Memory budget for the index when --factory auto (e.g. 4G, 512M)."),
    overwrite: bool = typer.Option(False, help="Replace an existing index of that name."),
    device: str = typer.Option("auto", help="auto | cpu | cuda, for the embedder."),
    thumb_size: list[str] = typer.Option([], help="Also store thumbnails of every image fitted to this generation "
                                                  "size (512 or HxW; repeatable) so scans at that size prune fast. "
                                                  "Each image's own size is always stored."),
    workers: int = typer.Option(0, help="Threads decoding and hashing images (0 = one per core)."),
    embeddings: bool = typer.Option(False, "--embeddings", help="SOURCE is clip-retrieval output (img_emb/, "
                                    "metadata/): index its vectors as they are; --embedder names the model that made them."),
    images: Optional[Path] = typer.Option(None, help="With --embeddings: the img2dataset folder whose keys the "
                                                     "metadata's image_path names, so candidates' pixels can be tested."),
) -> None:
    """Index training images.

    Example: imgextract index build ./laion-subset --name laion-subset --embedder pixel --thumb-size 512
    """
    from imgextract.faiss_choice import parse_memory
    from imgextract.index import build_index, parse_size
    sizes = [parse_size(t) for t in thumb_size]
    budget = parse_memory(max_memory)
    if workers < 0:
        raise InputError(f"--workers {workers}", "give 0 (one per core) or a positive number of threads")
    result = build_index(source, name, embedder, batch_size=batch_size, overwrite=overwrite,
                         image_column=image_column, caption_column=caption_column, factory=factory, device=device,
                         max_memory=budget,
                         thumb_sizes=sizes, workers=workers or None, embeddings=embeddings, images=images)
    for note in result.notes:
        typer.echo(note, err=True)
    for s in result.skipped:
        typer.echo(f"skipped unreadable image {s['path']}: {s['reason']}", err=True)
    if result.resumed_parts:
        typer.echo(f"resumed an interrupted build: {result.resumed_parts} part(s) were already done", err=True)
    rows = ""
    if result.statuses:
        from imgextract.shards import stats_line
        from collections import Counter
        rows = f"; rows by status: {stats_line(Counter(result.statuses))} (only success rows are indexed)"
    typer.echo(f"indexed {result.count} images from a {result.kind} source into {result.path} "
               f"({len(result.skipped)} skipped{rows})")


@index_app.command("duplicates")
def index_duplicates(
    name: str = typer.Argument(..., help="Index name or path."),
    out: Path = typer.Option(..., help="dups.parquet to write: id, cluster, copies, representative per index row."),
    threshold: float = typer.Option(0.15, help="Two images are copies when their tiled L2 is below this."),
    similarity: float = typer.Option(0.9, help="Embedding similarity a pair needs to be compared on pixels."),
    k: int = typer.Option(32, "-k", help="Neighbours looked at per image."),
    top: Optional[int] = typer.Option(None, help="With --captions-out: how many of the most duplicated groups."),
    captions_out: Optional[Path] = typer.Option(None, help="Captions of the top groups, for `imgextract generate`."),
) -> None:
    """Find near-duplicate groups in a training set, and the most duplicated captions.

    Example: imgextract index duplicates laion-subset --out dups.parquet --top 100 --captions-out top.parquet
    """
    from imgextract import rundir
    from imgextract.duplicates import DUPLICATES_JSON, DuplicateParams, find_duplicates, histogram, top_captions
    from imgextract.engine import Progress
    from imgextract.index import open_index
    from imgextract.locks import exclusive
    if (top is None) != (captions_out is None):
        raise InputError("--top and --captions-out go together", "give both, e.g. --top 100 --captions-out top.parquet")
    for path, what in ((out, "--out"), (captions_out, "--captions-out")):
        if path is not None and (path.is_dir() or path.suffix.lower() != ".parquet"):
            raise InputError(f"{what} {path}", "name a .parquet file to write")
    if k < 1:
        raise InputError(f"-k {k}", "look at one neighbour or more")
    idx = open_index(name, gpu="off")
    params = DuplicateParams(threshold=threshold, similarity=similarity, k=k)
    bar = Progress(len(idx.table), "duplicates", "img")
    table, counts = find_duplicates(idx, params, lambda done, total: bar.update_to(done))
    bar.close()
    captions = top_captions(table, idx, top) if top is not None else None
    rundir.write_parquet_atomic(out, table)
    hist = histogram(table)
    with exclusive(idx.path.with_name(f".{idx.path.name}.lock"), f"index {idx.path}"):
        rundir.write_json_atomic(idx.path / DUPLICATES_JSON, {
            "threshold": threshold, "similarity": similarity, "k": k, "groups_by_copies": hist,
            "decisions": counts, "images": len(table), "groups": int(table["representative"].sum())})
    for what, n in sorted(counts.items()):
        typer.echo(f"{what}: {n}", err=True)
    dup_groups = sum(n for c, n in hist.items() if c > 1)
    typer.echo(f"{len(table)} images in {int(table['representative'].sum())} groups; {dup_groups} groups have "
               f"copies (largest: {max(hist)}); written to {out}")
    if captions is not None:
        rundir.write_parquet_atomic(captions_out, captions)
        typer.echo(f"captions of the {len(captions)} most duplicated groups in {captions_out} "
                   f"(copies {captions['copies'].max() if len(captions) else 0} down to "
                   f"{captions['copies'].min() if len(captions) else 0})")


@index_app.command("info")
def index_info(name: str = typer.Argument(..., help="Index name or path.")) -> None:
    """Show what an index holds.

    Example: imgextract index info laion-subset
    """
    from imgextract.index import open_index
    idx = open_index(name, gpu="off")
    typer.echo(f"index      {idx.path}")
    typer.echo(f"images     {len(idx.table)}")
    typer.echo(f"embedder   {idx.embedder['spec']} (dim {idx.embedder['dimension']})")
    params = ", ".join(f"{k}={v}" for k, v in (idx.embedder.get("faiss_params") or {}).items())
    recall = idx.embedder.get("recall_at_10")
    typer.echo(f"faiss      {idx.embedder.get('faiss_factory', 'Flat')}" + (f" ({params})" if params else "")
               + (f", recall@10 {recall:.3f} against exact search at build" if recall is not None else "")
               + (", exact re-rank from vectors.f16" if idx.vectors is not None
                  and idx.embedder.get("faiss_factory", "Flat") != "Flat" else ""))
    typer.echo(f"source     {idx.embedder.get('source', '?')} ({idx.embedder.get('source_kind', 'folder')})")
    typer.echo(f"captions   {int(idx.table['caption'].notna().sum())} of {len(idx.table)}")
    thumbs = idx.thumb_info()
    dups = idx.path / "duplicates.json"
    if dups.is_file():
        import json
        d = json.loads(dups.read_text())
        groups = ", ".join(f"{c}x: {n}" for c, n in sorted(d["groups_by_copies"].items(), key=lambda kv: -int(kv[0])))
        typer.echo(f"duplicates {d['groups']} groups of {d['images']} images (tiled L2 < {d['threshold']}); "
                   f"groups by copies: {groups}")
    typer.echo("thumbnails " + (", ".join(f"{k} ({v['rows']} images)" for k, v in sorted(thumbs.items())) or "none"))


@index_app.command("search")
def index_search(
    name: str = typer.Argument(..., help="Index name or path."),
    image: Path = typer.Argument(..., help="Query image."),
    k: int = typer.Option(5, "-k", help="Neighbours to show."),
) -> None:
    """Nearest training images to one image, with tiled L2.

    Example: imgextract index search laion-subset generated.png -k 5
    """
    from imgextract import distance
    from imgextract.index import open_index
    from imgextract.sources import BadImage, open_rgb
    idx = open_index(name)
    try:
        query = open_rgb(image)
    except BadImage as bad:
        raise InputError(f"cannot read image {image} ({bad.reason})", "pass a PNG/JPEG/WebP image") from bad
    sims, ids = idx.search(idx.load_embedder().embed([query]), k)
    q = distance.to_array(query)
    typer.echo(f"{'rank':>4}  {'similarity':>10}  {'tiled_l2':>8}  path")
    for rank, (s, t) in enumerate(zip(sims[0], ids[0])):
        if t < 0:
            continue
        path = idx.table["path"].iat[int(t)]
        try:
            tl = distance.tiled_l2(q, distance.to_array(open_rgb(Path(path)), (query.height, query.width)))
            tl_text = f"{tl:8.4f}"
        except BadImage:
            tl_text = "   n/a  "
        typer.echo(f"{rank:>4}  {s:10.4f}  {tl_text}  {path}")


def _sampling_config(samples, batch_size, steps, guidance, scheduler, size, seed, device, dtype, shard_size,
                     model_config):
    from imgextract.generate import SamplingConfig
    return SamplingConfig(samples=samples, batch_size=batch_size, steps=steps, guidance=guidance,
                          scheduler=scheduler, size=tuple(size) if size else None, seed=seed, device=device,
                          dtype=dtype, shard_size=shard_size, model_config=model_config)


@app.command()
def generate(
    captions: Path = typer.Argument(..., help=".txt (one caption per line) or CSV/JSONL/Parquet with a caption column."),
    model: str = typer.Option(..., help="Hub id, local diffusers folder, or .safetensors/.ckpt file."),
    out: Path = typer.Option(..., help="Run folder (created; an existing one with the same settings resumes)."),
    samples: int = typer.Option(16, help="Samples per caption."),
    batch_size: int = typer.Option(8, help="Images per pipeline call (batches mix captions)."),
    steps: int = typer.Option(50, help="Sampling steps."),
    guidance: float = typer.Option(7.5, help="Classifier-free guidance scale."),
    scheduler: Optional[str] = typer.Option(None, help="ddim, ddpm, pndm, euler, euler-a, dpm++, unipc, lms, heun (default: the model's)."),
    size: Optional[tuple[int, int]] = typer.Option(None, help="Height and width (default: the model's native size)."),
    seed: int = typer.Option(0, help="Base seed; each sample's seed derives from (base, caption id, sample index)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | mps"),
    dtype: str = typer.Option("auto", help="auto (fp16 on CUDA, fp32 otherwise) | float32 | float16 | bfloat16"),
    shard_size: int = typer.Option(256, help="Samples per resumable shard."),
    model_config: Optional[str] = typer.Option(None, help="For single-file checkpoints offline: a diffusers folder of the same architecture."),
    triage: Optional[Path] = typer.Option(None, help="Output of `imgextract triage`: sample only its top captions."),
    top: Optional[int] = typer.Option(None, help="With --triage: how many of the most suspicious captions to sample."),
) -> None:
    """Generate seeded samples for every caption, resumably.

    Example: imgextract generate captions.txt --model stable-diffusion-v1-5/stable-diffusion-v1-5 --out runs/sd15 --samples 16
    """
    cfg = _sampling_config(samples, batch_size, steps, guidance, scheduler, size, seed, device, dtype, shard_size,
                           model_config)
    run_generation(captions, model, out, cfg, triage_file=triage, top=top, say=_err)
    typer.echo(f"samples in {out}")


@app.command()
def sample(
    model: str = typer.Option(..., help="Hub id, local diffusers folder, or .safetensors/.ckpt file."),
    prompt: str = typer.Option(..., help="The caption."),
    seed: int = typer.Option(..., help="The sample's own seed (as recorded in the run's manifest)."),
    out: Path = typer.Option(..., help="PNG file to write."),
    steps: int = typer.Option(50), guidance: float = typer.Option(7.5),
    scheduler: Optional[str] = typer.Option(None), size: Optional[tuple[int, int]] = typer.Option(None),
    device: str = typer.Option("auto"), dtype: str = typer.Option("auto"),
    model_config: Optional[str] = typer.Option(None),
) -> None:
    """Regenerate one sample from its recorded seed.

    Example: imgextract sample --model ./toy --prompt "an astronaut" --seed 123 --steps 25 --out a.png
    """
    from imgextract.generate import SamplingConfig, render, validate_sampling
    from imgextract.pipelines import load_pipeline, native_size, set_scheduler
    validate_sampling(SamplingConfig(samples=1, batch_size=1, steps=steps, size=tuple(size) if size else None))
    if out.is_dir():
        raise InputError(f"--out {out} is a folder", "name the PNG file to write, e.g. --out sample.png")
    quiet_libraries()
    loaded = load_pipeline(model, device, dtype, model_config)
    set_scheduler(loaded.pipe, scheduler)
    image = render(loaded, [prompt], [seed], steps, guidance, tuple(size) if size else native_size(loaded.pipe))[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    typer.echo(str(out))


def print_findings(out: Path, limit: int = 10) -> None:
    from imgextract import rundir
    summary = rundir.read_json(out / rundir.SUMMARY)
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


@app.command("scan")
def scan_cmd(
    generations: Path = typer.Argument(..., help="A run folder, or any folder of generated images."),
    index: str = typer.Option(..., help="Index name (under ./indexes or $IMGEXTRACT_INDEX_DIR) or path."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default: the run folder, or GENERATIONS-scan)."),
    k: int = typer.Option(10, "-k", "--k", help="Nearest training images tested per generation."),
    threshold: float = typer.Option(0.15, help="Memorized when tiled L2 is below this (pixels in [0,1])."),
    grid: int = typer.Option(4, help="Tiles per side for tiled L2."),
    embedder: Optional[str] = typer.Option(None, help="Assert the index was built with this embedder."),
    device: str = typer.Option("auto", help="Device for the embedder."),
    relative_n: int = typer.Option(50, help="Neighbours in Carlini's relative distance (0 turns it off)."),
    alpha: float = typer.Option(0.5, help="Relative distance = L2 / (alpha * mean L2 to the n nearest others)."),
    relative_threshold: float = typer.Option(1.0, help="Relative distance below this counts for the relative criterion."),
    criterion: str = typer.Option("tiled", help="What 'memorized' means: tiled | relative | either | both."),
    exact_below: Optional[float] = typer.Option(
        None, help="Measure tiled L2 at full resolution where the thumbnail bound is below this (default: threshold "
                   "+ 0.10); above it the row keeps the bound (exact = false). 2 measures everything."),
) -> None:
    """Find generations that copy indexed training images.

    Example: imgextract scan runs/sd15 --index laion-subset -k 10 --threshold 0.15
    """
    out = run_scan(generations, index, out, k, threshold, grid, embedder, device, say=_err, relative_n=relative_n,
                   alpha=alpha, relative_threshold=relative_threshold, criterion=criterion, exact_below=exact_below)
    print_findings(out)
    typer.echo(f"matches in {out / 'matches.parquet'}")


@app.command()
def report(
    run: Path = typer.Argument(..., help="Run folder (or scan output folder) with matches.parquet."),
    title: str = typer.Option("imgextract report", help="Page title."),
) -> None:
    """Write a self-contained report.html with every finding side by side.

    Example: imgextract report runs/sd15
    """
    from imgextract.report import render_report
    typer.echo(str(render_report(run, title)))


@app.command("run")
def run_cmd(
    config: Path = typer.Argument(..., help="TOML file with \\[index], \\[generate], \\[scan], \\[cliques], \\[engine] and \\[report] sections."),
    keep: Optional[str] = typer.Option(None, help="all: every sample's PNG; evidence: only memorized, near-miss and "
                                                  "clique samples (every sample keeps its manifest row, hashes, "
                                                  "candidates and embedding); auto: all below 100k samples. "
                                                  "Overrides the file's keep."),
) -> None:
    """Run index → sweep (generate, then test each shard where it was drawn) → report from one config file.

    Example: imgextract run audit.toml --keep evidence   (see README for the file's keys; [engine] kind = "ray" for a cluster)
    """
    from imgextract import rundir
    from imgextract.audit import run_config, verdict
    path = run_config(config, keep=keep)
    typer.echo(f"report: {path.resolve()}")
    typer.echo(verdict(rundir.read_json(path.parent / rundir.SUMMARY)))


@app.command()
def cliques(
    run: Path = typer.Argument(..., help="Run folder of `imgextract generate`."),
    delta: float = typer.Option(0.15, help="Edge between two generations when their tiled L2 is below this."),
    min_size: int = typer.Option(10, help="Flag a caption whose largest clique has at least this many members."),
    grid: int = typer.Option(4, help="Tiles per side for tiled L2."),
    max_cliques: int = typer.Option(200_000, help="Stop the exact search after this many maximal cliques."),
) -> None:
    """Training-set-free test: captions whose generations form a large near-duplicate clique.

    Example: imgextract cliques runs/sd15 --delta 0.15 --min-size 10
    """
    from imgextract.cliques import CLIQUES, CliqueParams, run_cliques
    table = run_cliques(run, CliqueParams(delta=delta, min_size=min_size, grid=grid, max_cliques=max_cliques))
    flagged = table[table["flagged"]]
    typer.echo(f"{len(flagged)} of {len(table)} captions flagged (largest clique >= {min_size}, delta {delta})")
    for _, r in flagged.sort_values("largest_clique", ascending=False).head(10).iterrows():
        bound = "" if r["exact"] else f" (search bound hit; true size <= {r['upper_bound']})"
        typer.echo(f"  {r['largest_clique']:>4}/{r['n_generations']}  {r['caption']}{bound}")
    typer.echo(f"cliques in {run / CLIQUES}")


@app.command("triage")
def triage_cmd(
    captions: Path = typer.Argument(..., help=".txt or CSV/JSONL/Parquet with a caption column."),
    model: str = typer.Option(..., help="Hub id, local diffusers folder, or .safetensors/.ckpt file."),
    out: Path = typer.Option(..., help="Parquet file to write (caption, scores, unet_evals, ranked_by)."),
    steps: int = typer.Option(1, help="Sampling steps measured by the noise-difference score."),
    samples: int = typer.Option(4, help="Seeds per caption."),
    guidance: float = typer.Option(7.5, help="Guidance for advancing latents and for the one-step images."),
    schedule_steps: int = typer.Option(50, help="Length of the sampling schedule."),
    methods: Optional[str] = typer.Option(None, help="Comma list of wen, attn, edge (default: the evaluated default "
                                                     "score's method; the ranking uses it when computed)."),
    seed: int = typer.Option(0), device: str = typer.Option("auto"), dtype: str = typer.Option("auto"),
    model_config: Optional[str] = typer.Option(None),
) -> None:
    """Rank captions by how likely they are memorized, cheaply (Webster; Wen et al.; Ren et al.).

    Example: imgextract triage captions.txt --model ./toy --out triage.parquet --samples 4
    """
    from imgextract.pipelines import load_pipeline
    from imgextract.sources import read_captions
    from imgextract.triage import DEFAULT_EVIDENCE, DEFAULT_METHOD, METHODS, SCORE_OF, TriageParams, triage, write_triage
    chosen = tuple(m.strip() for m in (methods or DEFAULT_METHOD).split(",") if m.strip())
    if not chosen or set(chosen) - set(METHODS):
        raise InputError(f"--methods '{methods}'", f"use a comma list of {', '.join(METHODS)}")
    table = read_captions(captions).to_pandas()
    quiet_libraries()
    loaded = load_pipeline(model, device, dtype, model_config)
    params = TriageParams(steps=steps, samples=samples, schedule_steps=schedule_steps, guidance=guidance, seed=seed)
    result = triage(loaded, table, params, chosen)
    write_triage(result, out, params)
    key = result["ranked_by"].iat[0]
    why = DEFAULT_EVIDENCE if key == SCORE_OF[DEFAULT_METHOD] else \
        f"not the default ({SCORE_OF[DEFAULT_METHOD]}: {DEFAULT_EVIDENCE})"
    typer.echo(f"{len(result)} captions, {int(result['unet_evals'].sum())} UNet evaluations; ranked by {key}: {why}")
    typer.echo("most suspicious:")
    for _, r in result.head(5).iterrows():
        cells = "  ".join(f"{SCORE_OF[m].removesuffix('_score')} {r[SCORE_OF[m]]:8.3f}" for m in chosen)
        typer.echo(f"  {cells}  {r['caption']}")
    typer.echo(f"triage in {out}")


@app.command("watermarks")
def watermarks_cmd(
    images: Path = typer.Argument(..., help="A run folder, an index folder, or any folder of images."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default: the run/index itself, or IMAGES-watermarks)."),
    brands: Optional[Path] = typer.Option(None, help="Extra brands, one per line: 'Name' or 'Name: alias, alias'."),
    templates: Optional[Path] = typer.Option(None, help="Folder of logo template images."),
    classifier: Optional[Path] = typer.Option(None, help="LAION watermark classifier weights (.pt state dict or .safetensors)."),
    device: str = typer.Option("cpu", help="Device for the classifier."),
) -> None:
    """Flag stock-photo watermarks (OCR + brand list, logo templates, optional classifier).

    Example: imgextract watermarks runs/sd15 --templates logos/ && imgextract watermarks indexes/laion-subset
    """
    from imgextract import rundir
    from imgextract.watermarks import (Detector, WatermarkClassifier, list_targets, load_brands, load_templates,
                                       run_watermarks, watermark_summary)
    detector = Detector(brands=load_brands(brands), templates=load_templates(templates),
                        classifier=WatermarkClassifier(classifier, device) if classifier else None)
    _, default = list_targets(images)
    out = out or default
    table = run_watermarks(images, out, detector)
    flagged = table[table["watermark"].fillna(False).astype(bool)]
    typer.echo(f"{len(flagged)} of {len(table)} images carry a watermark")
    for _, r in flagged.head(10).iterrows():
        typer.echo(f"  {r['brand'] or '?':14s} {list(r['box']) if r['box'] is not None else ''}  {r['path']}")
    for _, r in table[table["error"].notna()].iterrows():
        typer.echo(f"skipped unreadable image {r['path']}: {r['error']}", err=True)
    if (out / rundir.SUMMARY).is_file():  # a scanned run: fold the rates into its summary
        summary = rundir.read_json(out / rundir.SUMMARY)
        marks = watermark_summary(out, Path(summary["parameters"]["index_path"]))
        if marks:
            summary["watermarks"] = marks
            rundir.write_json_atomic(out / rundir.SUMMARY, summary)
    typer.echo(f"watermarks in {out / 'watermarks.parquet'}")


@app.command()
def check(
    works: Path = typer.Argument(..., help="One image or a folder of your works."),
    model: str = typer.Option(..., help="Hub id, local diffusers folder, or .safetensors/.ckpt file."),
    caption: Optional[str] = typer.Option(None, help="Prompt to use for every work."),
    captions: Optional[Path] = typer.Option(None, help="Table with a file column and a caption column."),
    samples: int = typer.Option(8, help="Samples per work."),
    out: Path = typer.Option(Path("imgextract-check"), help="Folder for the index, samples and check.html."),
    steps: int = typer.Option(50, help="Sampling steps."),
    guidance: float = typer.Option(7.5, help="Classifier-free guidance scale."),
    seed: int = typer.Option(0, help="Base seed."),
    scheduler: Optional[str] = typer.Option(None, help="Sampler short name (default: the model's)."),
    dtype: str = typer.Option("auto", help="auto | float32 | float16 | bfloat16"),
    size: Optional[tuple[int, int]] = typer.Option(None, help="Height and width (default: the model's)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | mps"),
) -> None:
    """Artist's check: can this model reproduce my images? One verdict per work.

    Example: imgextract check ./my-paintings --model stable-diffusion-v1-5/stable-diffusion-v1-5 --samples 16
    """
    from imgextract.check import run_check
    quiet_libraries()
    result, page = run_check(works, model, out, caption, captions, samples, steps, guidance, seed, device,
                             tuple(size) if size else None, say=_err, scheduler=scheduler, dtype=dtype)
    for v in result:
        typer.echo(f"{Path(v.work).name}: {v.sentence()}")
    typer.echo(f"page: {page.resolve()} (verdicts in {(out / 'check.json').resolve()})")


@app.command()
def compare(
    runs: list[Path] = typer.Argument(..., help="Two or more audited run folders (same captions)."),
    out: Path = typer.Option(..., help="Folder for compare.json, compare.parquet and compare.html."),
    intersection: bool = typer.Option(False, help="Compare only the captions all runs share."),
    threshold: Optional[float] = typer.Option(None, help="Apply one tiled-L2 threshold to all runs."),
    resamples: int = typer.Option(2000, help="Bootstrap resamples for the 95% intervals."),
) -> None:
    """Researcher's comparison: extraction rate per model (and per duplication level), with CIs.

    Example: imgextract compare runs/model-a runs/model-b --out runs/compare
    """
    from imgextract.compare import compare_runs
    result = compare_runs(runs, out, intersection, threshold, resamples)
    typer.echo(f"{'run':24s} {'extracted':>10} {'rate':>6}  95% CI")
    for r in result["runs"]:
        typer.echo(f"{r['run']:24s} {r['extracted']:>4}/{r['captions']:<5} {r['rate']:6.3f}  "
                   f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]")
    for r in result["per_duplication_level"]:
        typer.echo(f"  {r['run']:22s} {r['copies']:>5}x {r['extracted']:>4}/{r['captions']:<5} {r['rate']:6.3f}")
    shared = sum(f["shared"] for f in result["findings"])
    typer.echo(f"{len(result['findings'])} memorized training images, {shared} shared by all runs")
    typer.echo(f"comparison in {out / 'compare.html'}")


@app.command("guard")
def guard_cmd(
    image: Path = typer.Argument(..., help="One generated image."),
    index: str = typer.Option(..., help="Index name or path."),
    origin: str = typer.Option("ordinary", help="How it was made: ordinary (prompt) or targeted (search)."),
    threshold: float = typer.Option(0.15, help="Memorized when tiled L2 is below this."),
    k: int = typer.Option(10, "-k", help="Candidates tested."),
) -> None:
    """Release guard: does this image substantially replicate an indexed training image?

    Exit code 1 when it does, so a serving pipeline can block it.
    Example: imgextract guard out.png --index laion-subset
    """
    from imgextract.guard import ORIGINS, guard
    from imgextract.scan import ScanParams, validate_params
    from imgextract.sources import BadImage, open_rgb
    if origin not in ORIGINS:
        raise InputError(f"--origin {origin}", "use ordinary or targeted")
    validate_params(ScanParams(index=index, k=k, threshold=threshold, relative_n=0))
    try:
        img = open_rgb(image, min_side=4)
    except BadImage as bad:
        raise InputError(f"cannot read image {image} ({bad.reason})", "pass a readable PNG/JPEG/WebP image") from bad
    verdict = guard(img, index, origin, k=k, threshold=threshold)
    typer.echo(verdict.sentence())
    typer.echo(f"({verdict.seconds * 1000:.0f} ms)")
    if verdict.memorized:
        raise typer.Exit(errors.FOUND)


toy_app = typer.Typer(no_args_is_help=True, help="The toy memorizing model (trained offline, known duplication).")
app.add_typer(toy_app, name="toy")


@toy_app.command("train")
def toy_train(
    out: Path = typer.Option(..., help="Folder for the pipeline (StableDiffusionPipeline) and its train/ set."),
    images: Optional[Path] = typer.Option(None, help="Folder/table of captioned images (default: built-in photographs)."),
    duplicates: str = typer.Option("100x1,10x4,1x25", help="COPIESxIMAGES parts: copies per image, in order."),
    size: int = typer.Option(32, help="Image side in pixels (multiple of 8, 16..256)."),
    minutes: float = typer.Option(4.0, help="Wall-time budget for training."),
    seed: int = typer.Option(0, help="Seed for initialisation and batches."),
    vae_steps: Optional[int] = typer.Option(None, help="Fixed VAE steps instead of the time budget."),
    unet_steps: Optional[int] = typer.Option(None, help="Fixed UNet steps instead of the time budget."),
) -> None:
    """Train a small text-to-image model that memorizes its duplicated images.

    Example: imgextract toy train --out runs/toy --duplicates 100x1,10x4,1x25 --minutes 4
    """
    from imgextract.toy import ToyConfig, training_set
    cfg = ToyConfig(duplicates=duplicates, size=size, minutes=minutes, seed=seed, vae_steps=vae_steps,
                    unet_steps=unet_steps)
    training_set(cfg, images)  # validate SPEC, size and images before anything is written
    train_with_progress(out, cfg, images)
    typer.echo(f"toy model in {out} (training set in {out / 'train'})")


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Where the demo run and its report go."),
    vae_steps: int = typer.Option(580, help="Toy VAE training steps (a finished model is reused from the cache)."),
    unet_steps: int = typer.Option(900, help="Toy UNet training steps."),
    seed: int = typer.Option(0, help="Seed for training and sampling."),
    samples: int = typer.Option(16, help="Samples per training caption."),
) -> None:
    """The whole audit offline: toy model → index → generate → scan → report.

    Example: imgextract demo --out runs/demo
    """
    from imgextract.audit import run_demo
    report_path, line = run_demo(out, vae_steps, unet_steps, seed, samples, say=typer.echo)
    typer.echo(f"report: {report_path.resolve()}")
    typer.echo(line)


def _err(line: str) -> None:
    typer.echo(line, err=True)


def _click_exception() -> type:
    """Usage errors' base class in the click that typer runs on (typer >= 0.2x bundles its own)."""
    try:
        from typer._click.exceptions import ClickException
    except ImportError:  # older typer: plain click
        from click.exceptions import ClickException
    return ClickException


def main() -> None:
    """Exit codes (README, "Exit codes"): 0 ok, 1 found (guard), 2 bad input or usage, 130 interrupted."""
    import logging
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    logging.getLogger("imgextract").addHandler(handler)
    usage_error = _click_exception()
    try:
        code = app(standalone_mode=False)
    except InputError as err:
        typer.echo(f"error: {err}", err=True)
        for line in err.details:
            typer.echo(f"  {line}", err=True)
        sys.exit(errors.BAD_INPUT)
    except (KeyboardInterrupt, typer.Abort):
        code = errors.INTERRUPTED
    except usage_error as ex:  # usage errors: click's own message, exit 2
        ex.show()
        sys.exit(ex.exit_code)
    if code == errors.INTERRUPTED:
        typer.echo("interrupted: finished shards are kept; run the same command again to resume", err=True)
    sys.exit(code if isinstance(code, int) else errors.OK)
