"""``imgextract index ...``: build, inspect and search training-image indexes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from imgextract.cli.options import Device, IndexArg
from imgextract.app.settings import BuildSettings, DuplicateParams

app = typer.Typer(no_args_is_help=True, help="Build and inspect training-image indexes.")


@app.command("build")
def index_build(
    source: Annotated[Path, typer.Argument(help="Folder of images (sidecar .txt = caption) or CSV/JSONL/Parquet table.")],
    name: Annotated[str, typer.Option("--name", help="Index name (stored under ./indexes or $IMGEXTRACT_INDEX_DIR) or a path.")],
    embedder: Annotated[str, typer.Option(help="pixel | clip:MODEL/PRETRAINED | clip:hf-hub:ORG/REPO | clip:PATH")] = BuildSettings.embedder,
    image_column: Annotated[Optional[str], typer.Option(help="Table column with image paths (default: path/image/file).")] = None,
    caption_column: Annotated[Optional[str], typer.Option(help="Table column with captions (default: caption/text/prompt).")] = None,
    batch_size: Annotated[int, typer.Option(help="Images embedded per batch.")] = BuildSettings.batch_size,
    factory: Annotated[str, typer.Option(help="FAISS index_factory string (Flat, HNSW32, IVF1024,Flat, ...) or auto: "
                                              "chosen from the number of vectors and --max-memory.")] = BuildSettings.factory,
    max_memory: Annotated[str, typer.Option(help="Memory budget for the index when --factory auto (e.g. 4G, 512M).")] = f"{BuildSettings.max_memory // 2**30}G",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing index of that name.")] = BuildSettings.overwrite,
    device: Device = BuildSettings.device,
    thumb_size: Annotated[list[str], typer.Option(help="Also store thumbnails of every image fitted to this generation "
                                                       "size (512 or HxW; repeatable) so scans at that size prune fast. "
                                                       "Each image's own size is always stored.")] = [],
    workers: Annotated[int, typer.Option(help="Threads decoding and hashing images (0 = one per core).")] = 0,
    processes: Annotated[int, typer.Option(help="Local engine: processes building parts side by side (0 = chosen: "
                                                "one per core for the pixel embedder when there are 2+ parts and "
                                                "2,048+ images, else 1).")] = 0,
    embeddings: Annotated[bool, typer.Option("--embeddings", help="SOURCE is clip-retrieval output (img_emb/, "
                          "metadata/): index its vectors as they are; --embedder names the model that made them.")] = BuildSettings.embeddings,
    images: Annotated[Optional[Path], typer.Option(help="With --embeddings: the img2dataset folder whose keys the "
                                                        "metadata's image_path names, so candidates' pixels can be tested.")] = None,
    no_thumbs: Annotated[bool, typer.Option("--no-thumbs", help="Store no thumbnails (6 KB per image and size): "
                                                                "for 10^8+ images; scans then decode every "
                                                                "candidate (slower, see ARCHITECTURE.md).")] = False,
    hashes: Annotated[bool, typer.Option("--hashes", help="Store every image's perceptual hashes (phash, dhash, whash) "
                                                          "in images.parquet. Off: scans hash the copies they find, "
                                                          "and ingest runs 1.5-2x faster.")] = BuildSettings.hashes,
    engine: Annotated[str, typer.Option(help="Where the parts are built: local (this machine) or ray (Ray Data "
                                             "actors; the source and the index folder must be on storage every "
                                             "node sees).")] = "local",
    address: Annotated[Optional[str], typer.Option(help="--engine ray: the cluster (auto, ray://HEAD:10001); "
                                                        "without it a local Ray is started.")] = None,
    ray_workers: Annotated[int, typer.Option(help="--engine ray: part workers (each embeds on one GPU when the "
                                                  "cluster has GPUs).")] = 1,
    descriptor: Annotated[Optional[str], typer.Option(
        help="sscd:PATH.safetensors: also store every image's SSCD descriptor, so scans, runs, checks and "
             "the guard given the same --descriptor report each candidate's SSCD similarity.")] = None,
) -> None:
    """Index training images.

    Example: imgextract index build ./laion-subset --name laion-subset --embedder pixel --thumb-size 512
    """
    from imgextract.app.commands import index_build
    result, rows = index_build(source, name, embedder, thumb_size=thumb_size, no_thumbs=no_thumbs,
                               max_memory=max_memory, workers=workers, processes=processes, engine=engine,
                               address=address, ray_workers=ray_workers, batch_size=batch_size, overwrite=overwrite,
                               image_column=image_column, caption_column=caption_column, factory=factory,
                               device=device, embeddings=embeddings, images=images, hashes=hashes,
                               descriptor=descriptor)
    for note in result.notes:
        typer.echo(note, err=True)
    for s in result.skipped:
        what = "" if s["reason"].startswith("bad shard") else "unreadable image "
        typer.echo(f"skipped {what}{s['path']}: {s['reason']}", err=True)
    if result.resumed_parts:
        typer.echo(f"resumed an interrupted build: {result.resumed_parts} part(s) were already done", err=True)
    typer.echo(f"indexed {result.count} images from a {result.kind} source into {result.path} "
               f"({len(result.skipped)} skipped{rows})")


@app.command("duplicates")
def index_duplicates(
    name: IndexArg,
    out: Annotated[Path, typer.Option(help="dups.parquet to write: id, cluster, copies, representative per index row.")],
    threshold: Annotated[float, typer.Option(help="Two images are copies when their tiled L2 is below this.")] = DuplicateParams.threshold,
    similarity: Annotated[float, typer.Option(help="Embedding similarity a pair needs to be compared on pixels.")] = DuplicateParams.similarity,
    k: Annotated[int, typer.Option("-k", help="Neighbours looked at per image.")] = DuplicateParams.k,
    top: Annotated[Optional[int], typer.Option(help="With --captions-out: how many of the most duplicated groups.")] = None,
    captions_out: Annotated[Optional[Path], typer.Option(help="Captions of the top groups, for `imgextract generate`.")] = None,
    rank: Annotated[str, typer.Option(help="Rank the top groups by copies (the most duplicated pictures) or by "
                                           "families (template families: a region shared by many images).")] = "copies",
) -> None:
    """Find near-duplicate groups in a training set, and the most duplicated captions.

    Example: imgextract index duplicates laion-subset --out dups.parquet --top 100 --captions-out top.parquet
    """
    from imgextract.app.commands import index_duplicates as find
    found = find(name, out, threshold, similarity, k, top, captions_out, rank)
    table, hist, captions = found["table"], found["histogram"], found["captions"]
    for what, n in sorted(found["counts"].items()):
        typer.echo(f"{what}: {n}", err=True)
    dup_groups = sum(n for c, n in hist.items() if c > 1)
    families = sum(n for c, n in found["families"].items() if c > 1)
    typer.echo(f"{len(table)} images in {int(table['representative'].sum())} groups; {dup_groups} groups have "
               f"copies (largest: {max(hist)}); {families} template families (largest: {max(found['families'])}); "
               f"written to {out}")
    if captions is not None:
        typer.echo(f"captions of the {len(captions)} most duplicated groups in {captions_out} "
                   f"(copies {captions['copies'].max() if len(captions) else 0} down to "
                   f"{captions['copies'].min() if len(captions) else 0})")


@app.command("info")
def index_info(name: IndexArg) -> None:
    """Show what an index holds.

    Example: imgextract index info laion-subset
    """
    from imgextract.app.commands import index_info as info
    for line in info(name):
        typer.echo(line)


@app.command("search")
def index_search(
    name: IndexArg,
    image: Annotated[Path, typer.Argument(help="Query image.")],
    k: Annotated[int, typer.Option("-k", help="Neighbours to show.")] = 5,
) -> None:
    """Nearest training images to one image, with tiled L2.

    Example: imgextract index search laion-subset generated.png -k 5
    """
    from imgextract.app.commands import index_search as search
    typer.echo(f"{'rank':>4}  {'similarity':>10}  {'tiled_l2':>8}  path")
    for m in search(name, image, k):
        tl = f"{m['tiled_l2']:8.4f}" if m["pixels"] == "available" else "   n/a  "
        typer.echo(f"{m['rank']:>4}  {m['similarity']:10.4f}  {tl}  {m['train_path']}")
