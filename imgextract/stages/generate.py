"""Generation: many seeded samples per caption, in resumable shards.

Seed policy: sample ``i`` of caption ``c`` under base seed ``b`` uses
``seed = int(sha256(f"{b}:{c}:{i}").hexdigest()[:16], 16) & (2**63 - 1)`` in its own CPU
``torch.Generator``. So any sample can be regenerated alone, batches may mix captions, and
the same seed gives the same starting noise on CPU and GPU. A published label file that lists the
seeds which reproduced each prompt (Webster's ``gen_seeds``) has those drawn first: caption ``c``'s
sample ``i`` takes its ``i``-th published seed, recorded in ``run.json`` (``seed_policy.published``).

Work is laid out caption-major (all samples of caption 0, then caption 1, ...) and cut into
shards of ``shard_size`` samples; batches are cut from a shard. A shard is done when its
manifest exists; on resume, finished shards are skipped and an unfinished one is redone
from the start, so a resumed run writes byte-identical files.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, PngImagePlugin

from imgextract import rundir
from imgextract.errors import InputError
from imgextract.models.families import check_size, denoiser_module, folder_size_multiple
from imgextract.models.pipelines import (LoadedModel, load_pipeline, native_size, peek_family, pick_dtype,
                                         set_scheduler)
from imgextract.progress import Note, Step
from imgextract.sources.tables import read_captions
from imgextract.stages.settings import SamplingConfig, validate_sampling


def sample_seed(base_seed: int, caption_id: str, sample_index: int) -> int:
    digest = hashlib.sha256(f"{base_seed}:{caption_id}:{sample_index}".encode()).hexdigest()
    return int(digest[:16], 16) & (2 ** 63 - 1)


PUBLISHED_SEEDS = "gen_seeds"   # a published label file's seeds that reproduced each prompt (Webster's): drawn first


def seeds_of(record: dict, caption_id: str, indices) -> list[int]:
    """The seeds of a caption's samples: the published ones first (``seed_policy.published``), then the rule."""
    policy = record["seed_policy"]
    published = (policy.get("published") or {}).get(caption_id, [])
    return [published[i] if i < len(published) else sample_seed(policy["base_seed"], caption_id, i) for i in indices]


def published_seeds(captions: pa.Table, samples: int) -> dict[str, list[int]]:
    """Per caption, its published seeds (the table's ``gen_seeds``), as many as it draws samples."""
    if PUBLISHED_SEEDS not in captions.column_names:
        return {}
    counts = per_caption_samples(captions) or [samples] * captions.num_rows
    return {cid: [int(s) for s in seeds[:n]] for cid, seeds, n in
            zip(captions["caption_id"].to_pylist(), captions[PUBLISHED_SEEDS].to_pylist(), counts) if seeds}


SEED_POLICY = ("seed = int(sha256(f'{base_seed}:{caption_id}:{sample_index}').hexdigest()[:16], 16) & (2**63-1); "
               "one torch.Generator('cpu') per sample")


def render(loaded: LoadedModel, prompts: list[str], seeds: list[int], steps: int, guidance: float,
           size: tuple[int, int]) -> list[Image.Image]:
    """One pipeline call; every image has its own seeded generator."""
    import torch
    generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    extra = loaded.family.call if loaded.family is not None else {}   # PixArt: no resolution binning
    out = loaded.pipe(prompt=list(prompts), num_inference_steps=steps, guidance_scale=guidance,
                      height=size[0], width=size[1], generator=generators, output_type="pil", **extra)
    return out.images


def check_size_unloaded(model: str, cfg: SamplingConfig) -> None:
    """A --size the model folder's own configs refuse, refused before the model loads (a hub id or a single file
    is checked once loaded, by :func:`resolve_sampling`)."""
    if cfg.size is None:
        return
    family = peek_family(model)
    multiple = folder_size_multiple(family, Path(model)) if family is not None else None
    if multiple:
        check_size(family, tuple(cfg.size), multiple=multiple)


def resolve_sampling(cfg: SamplingConfig, loaded: LoadedModel) -> SamplingConfig:
    """``cfg`` with the model family's defaults where it left steps or guidance open, and its size
    checked against the family (transformers take multiples of their patch)."""
    from dataclasses import replace
    fam = loaded.family
    cfg = replace(cfg, steps=cfg.steps if cfg.steps is not None else fam.steps,
                   guidance=cfg.guidance if cfg.guidance is not None else fam.guidance)
    if cfg.size is not None:
        check_size(fam, tuple(cfg.size), loaded.pipe)
    if cfg.steps < fam.min_steps:
        raise InputError(f"--steps {cfg.steps} is fewer than a {fam.title} pipeline takes",
                         f"use --steps {fam.min_steps} or more (its one-step path expects a distilled sampler)")
    return cfg


def png_bytes(image: Image.Image, meta: dict) -> bytes:
    """PNG with the sample's provenance (caption, seed, settings) in a text chunk."""
    info = PngImagePlugin.PngInfo()
    info.add_text("imgextract", json.dumps(meta, sort_keys=True))
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def _captions_digest(table: pa.Table) -> str:
    h = hashlib.sha256()
    counts = per_caption_samples(table)
    for n, (cid, cap) in enumerate(zip(table["caption_id"].to_pylist(), table["caption"].to_pylist())):
        h.update(f"{cid}\t{cap}\n".encode() if counts is None else f"{cid}\t{cap}\t{counts[n]}\n".encode())
    return h.hexdigest()


SAMPLES_COLUMN = "samples"   # a caption table may give each caption its own count (the artist's check does)


def per_caption_samples(captions: pa.Table) -> list[int] | None:
    """The table's own sample count per caption, or None when every caption takes ``--samples``."""
    if SAMPLES_COLUMN not in captions.column_names:
        return None
    return [int(n) for n in captions[SAMPLES_COLUMN].to_pylist()]


def plan(captions: pa.Table, samples: int) -> list[tuple[int, str, str, int]]:
    """(caption row, caption id, caption, sample index), caption-major."""
    ids, caps = captions["caption_id"].to_pylist(), captions["caption"].to_pylist()
    counts = per_caption_samples(captions) or [samples] * len(ids)
    return [(row, cid, cap, i) for row, (cid, cap, n) in enumerate(zip(ids, caps, counts)) for i in range(n)]


def prepare_run(captions_path: Path, model: str, out: Path, cfg: SamplingConfig,
                command: list[str] | None = None, loaded: LoadedModel | None = None,
                captions: pa.Table | None = None, write: bool = True,
                selection: dict | None = None, storage: dict | None = None,
                worker_device: str | None = None) -> tuple[LoadedModel, dict, pa.Table]:
    """Check arguments, load the model, and write or verify ``run.json`` before any sampling.

    ``write=False`` validates everything (an existing run's settings included) and writes nothing.
    ``storage``: what a sweep keeps (``sweep.storage_record``). ``worker_device``: the device other
    processes will draw on (the Ray engine's workers); the model is then loaded here on the CPU only
    to validate it, and the record states the workers' device and dtype.
    """
    validate_sampling(cfg)
    if loaded is None:
        check_size_unloaded(model, cfg)
    captions = captions if captions is not None else read_captions(Path(captions_path))
    loaded = loaded or load_pipeline(model, "cpu" if worker_device else cfg.device, cfg.dtype, cfg.model_config)
    cfg = resolve_sampling(cfg, loaded)
    scheduler = set_scheduler(loaded.pipe, cfg.scheduler, loaded.family)
    size = tuple(cfg.size) if cfg.size else native_size(loaded.pipe, loaded.family)
    sampling = {"samples": cfg.samples, "batch_size": cfg.batch_size, "steps": cfg.steps,
                "guidance": cfg.guidance, "scheduler": scheduler, "height": size[0], "width": size[1],
                "shard_size": cfg.shard_size, "device": loaded.device, "dtype": loaded.dtype}
    if worker_device:
        sampling.update(device=worker_device, dtype=str(pick_dtype(cfg.dtype, worker_device)).replace("torch.", ""))
    identity = {
        "model": {"id": model, "kind": loaded.kind, "local_path": str(loaded.local_path),
                  "fingerprint": loaded.fingerprint,
                  **({"config": cfg.model_config} if cfg.model_config else {})},
        "sampling": sampling,
        "seed_policy": {"base_seed": cfg.seed, "rule": SEED_POLICY,
                        **({"published": published, "published_rule": "a caption's published gen_seeds are its "
                            "first samples' seeds"} if (published := published_seeds(captions, cfg.samples)) else {})},
        "captions": {"source": str(captions_path), "count": captions.num_rows,
                     "sha256": _captions_digest(captions)},
        "safety_checker": "disabled",
    }
    if selection:  # a targeted search chose the captions (triage top-K): findings are "extracted"
        identity["selection"] = selection
    if storage:  # a sweep that keeps only the evidence: resuming with another mode would mix them
        identity["storage"] = storage
    out = Path(out)
    run_json = out / rundir.RUN_JSON
    if run_json.is_file():
        old = rundir.read_json(run_json)
        diffs = [k for k in dict.fromkeys([*identity, "storage"]) if old.get(k) != identity.get(k)]
        if diffs:
            raise InputError(f"run folder {out} holds a run with other {', '.join(diffs)} settings",
                             "use a new --out folder, or the same settings to resume")
        return loaded, old, captions
    if not write:
        return loaded, identity, captions
    out.mkdir(parents=True, exist_ok=True)
    import torch
    record = {**identity, "family": loaded.family.name, "imgextract_run": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "cpu_threads": torch.get_num_threads(),  # CPU float sums depend on the thread count: pinned
              "command": command or [], "versions": rundir.package_versions()}
    rundir.write_parquet_atomic(out / rundir.CAPTIONS, captions)
    rundir.write_json_atomic(run_json, record)
    return loaded, record, captions


def run_shards(loaded: LoadedModel, record: dict, captions: pa.Table, out: Path) -> Iterator[Step | Note]:
    """Generate every unfinished shard; yields progress after each batch."""
    shards = shard_items(record, captions)
    total = sum(map(len, shards))
    finished = [n for n in range(len(shards)) if manifest_path(out, n).is_file()]
    done = sum(len(shards[n]) for n in finished)
    if finished:
        yield Note(f"resuming: {len(finished)} shard(s) already done")
    yield Step("generate", done, total, "img")
    for number, items in enumerate(shards):
        if number in finished:
            continue
        for batch in generate_shard(loaded, record, items, out, number):
            done += batch
            yield Step("generate", done, total, "img")


@dataclass
class Drawn:
    """One sample as drawn: its manifest row (without ``file``) and its PNG bytes."""

    meta: dict
    rel: str            # where it lives in the run when kept: samples/shard-N/cRRRRRR_sIIIII.png
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


PROFILE_ENV = "IMGEXTRACT_PROFILE_UNET"


class UnetClock:
    """Seconds spent inside the denoiser (UNet or transformer), for the share of wall time the benchmark
    reports.

    Installed only when ``IMGEXTRACT_PROFILE_UNET=1`` (each call is synchronised on a GPU, which
    costs a little overlap); engines read ``seconds`` around each shard.
    """

    def __init__(self, unet):
        import torch
        self.seconds = 0.0
        forward = unet.forward
        sync = torch.cuda.synchronize if unet.device.type == "cuda" else (lambda: None)

        def timed(*args, **kwargs):
            sync()
            t0 = time.perf_counter()
            out = forward(*args, **kwargs)
            sync()
            self.seconds += time.perf_counter() - t0
            return out
        unet.forward = timed

    @staticmethod
    def install(loaded: LoadedModel) -> "UnetClock | None":
        import os
        if os.environ.get(PROFILE_ENV) != "1":
            return None
        clock = getattr(loaded, "_unet_clock", None)
        module = denoiser_module(loaded)
        if clock is None and module is not None:
            clock = UnetClock(module)
            loaded._unet_clock = clock
        return clock


def pin_cpu_threads(record: dict) -> None:
    """Draw a CPU run with the thread count it was started with: torch's CPU kernels split sums by
    thread, so 1 and 2 threads differ in the last bit of a few pixels. With the count pinned, a Ray
    worker (OMP_NUM_THREADS=1 by default) and a resumed run on another machine draw the same bytes."""
    if str(record["sampling"].get("device", "")).startswith("cpu") and record.get("cpu_threads"):
        import torch
        if torch.get_num_threads() != record["cpu_threads"]:
            torch.set_num_threads(int(record["cpu_threads"]))


def shard_items(record: dict, captions: pa.Table) -> list[list[tuple[int, str, str, int]]]:
    """The run's work cut into shards: shard k holds items [k*S, (k+1)*S) of the caption-major plan."""
    s = record["sampling"]
    work = plan(captions, s["samples"])
    return [work[i:i + s["shard_size"]] for i in range(0, len(work), s["shard_size"])]


def draw_batches(loaded: LoadedModel, record: dict, items: list[tuple[int, str, str, int]],
                 number: int) -> Iterator[list[Drawn]]:
    """Draw one shard's samples, a batch at a time, without writing anything.

    Self-contained (model, run record, work items), so any engine can map it over shards: the
    local engine and the Ray engine draw byte-identical samples because the batches are the same.
    PNG encoding (tens of ms per 512 px image) runs on threads while the next batch is drawn, so
    on a GPU it does not wait for the UNet nor the UNet for it.
    """
    from concurrent.futures import ThreadPoolExecutor
    s = record["sampling"]
    size = (s["height"], s["width"])
    name = rundir.shard_name(number)
    pin_cpu_threads(record)
    with ThreadPoolExecutor(max_workers=2) as encoders:  # Pillow encodes without the GIL
        pending = None
        for start in range(0, len(items), s["batch_size"]):
            batch = items[start:start + s["batch_size"]]
            seeds = [seeds_of(record, cid, [i])[0] for _, cid, _, i in batch]
            images = render(loaded, [cap for _, _, cap, _ in batch], seeds, s["steps"], s["guidance"], size)
            encoded = []
            for (row, cid, cap, i), seed, image in zip(batch, seeds, images):
                meta = {"caption_id": cid, "caption": cap, "sample_index": i, "seed": seed, "steps": s["steps"],
                        "guidance": s["guidance"], "scheduler": s["scheduler"], "height": size[0], "width": size[1]}
                encoded.append((meta, f"{rundir.SAMPLES}/{name}/c{row:06d}_s{i:05d}.png",
                                encoders.submit(png_bytes, image, meta)))
            if pending is not None:
                yield [Drawn(meta, rel, f.result()) for meta, rel, f in pending]
            pending = encoded
        if pending is not None:
            yield [Drawn(meta, rel, f.result()) for meta, rel, f in pending]


def generate_shard(loaded: LoadedModel, record: dict, items: list[tuple[int, str, str, int]], out: Path,
                   number: int) -> Iterator[int]:
    """Draw one shard's samples, write every PNG and then its manifest; yields the size of each batch."""
    rows = []
    for batch in draw_batches(loaded, record, items, number):
        for d in batch:
            rundir.write_bytes_atomic(out / d.rel, d.data)
            rows.append({**d.meta, "file": d.rel, "sha256": d.sha256})
        yield len(batch)
    rundir.write_parquet_atomic(manifest_path(out, number), pa.Table.from_pylist(rows))


def manifest_path(out: Path, number: int) -> Path:
    """A shard is done when this file exists."""
    return Path(out) / rundir.SAMPLES / f"{rundir.shard_name(number)}.parquet"


def model_of(record: dict) -> str:
    """The model a run was drawn from, as a path or hub id that loads it again."""
    return record["model"]["id"] if record["model"].get("kind") == "hub" else record["model"]["local_path"]


def load_recorded(record: dict) -> LoadedModel:
    """The run's model, loaded on the run's device with its scheduler, refused if its files changed."""
    m, s = record["model"], record["sampling"]
    loaded = load_pipeline(model_of(record), s["device"], s["dtype"], m.get("config"))
    if loaded.fingerprint != m["fingerprint"]:
        raise InputError(f"model {model_of(record)} differs from the run's (fingerprint {loaded.fingerprint[:12]} "
                         f"!= {m['fingerprint'][:12]})", "make the same model files reachable here, or start a new run")
    set_scheduler(loaded.pipe, s["scheduler"], loaded.family)
    return loaded


@dataclass
class DrawnShard:
    number: int
    drawn: list[Drawn]
    unet_s: float       # seconds inside the UNet while drawing it (0 unless IMGEXTRACT_PROFILE_UNET=1)


class ShardDrawer:
    """The draw half of a sweep's per-shard work, handed unchanged to every engine.

    Built from the run folder alone (``run.json``, ``captions.parquet``), so a Ray worker builds the
    same object as the local engine; ``loaded``: a model already loaded in this process. Calling it
    with a shard number draws that shard in memory (:func:`draw_batches`) and times the UNet.
    """

    def __init__(self, out: Path, loaded: LoadedModel | None = None):
        out = Path(out)
        self.record = rundir.read_json(out / rundir.RUN_JSON)
        self.shards = shard_items(self.record, pq.read_table(out / rundir.CAPTIONS))
        self.loaded = loaded or load_recorded(self.record)
        self.clock = UnetClock.install(self.loaded)

    def __call__(self, number: int) -> DrawnShard:
        before = self.clock.seconds if self.clock else 0.0
        drawn = [d for batch in draw_batches(self.loaded, self.record, self.shards[number], number) for d in batch]
        return DrawnShard(number, drawn, (self.clock.seconds - before) if self.clock else 0.0)


def batch_of(record: dict, captions: pa.Table, rel: str) -> tuple[int, list[tuple[int, str, str, int]]]:
    """(shard number, work items) of the batch that drew the run's sample ``rel``
    (``samples/shard-N/cROW_sI.png``): redrawing that batch redraws the sample's bytes, since a
    transformer's float sums on CPU depend on how many images share its matrix products."""
    import re
    m = re.fullmatch(rf"{rundir.SAMPLES}/shard-(\d+)/c(\d+)_s(\d+)\.png", str(rel).replace("\\", "/"))
    shards = shard_items(record, captions)
    if m is None or int(m[1]) >= len(shards):
        raise InputError(f"--file {rel} is not a sample of this run",
                         "give the path the manifest records, e.g. samples/shard-00000/c000000_s00000.png")
    number, row, index = int(m[1]), int(m[2]), int(m[3])
    items = shards[number]
    at = next((j for j, (r, _, _, i) in enumerate(items) if r == row and i == index), None)
    if at is None:
        raise InputError(f"--file {rel} is not a sample of this run", "give a path from the run's manifest")
    size = record["sampling"]["batch_size"]
    start = at - at % size
    return number, items[start:start + size]


def regenerate_command(record: dict, caption: str, seed: int, path: str | None = None) -> list[str]:
    """argv of ``imgextract sample`` that redraws one sample: from its run folder when ``path`` lies in one
    (the sample's batch redrawn: the same bytes on every family), else from the model, prompt and seed
    (the same image; on CPU a transformer's last bits may differ from the batched draw's)."""
    if path is not None:
        p = Path(path)
        if len(p.parents) > 2 and p.parents[1].name == rundir.SAMPLES and (p.parents[2] / rundir.RUN_JSON).is_file():
            return ["imgextract", "sample", "--run", str(p.parents[2]), "--file", p.relative_to(p.parents[2]).as_posix(),
                    "--out", f"sample-{seed}.png"]
    s = record["sampling"]
    model = model_of(record)
    cmd = ["imgextract", "sample", "--model", model, "--prompt", caption, "--seed", str(seed),
           "--steps", str(s["steps"]), "--guidance", str(s["guidance"]),
           "--size", str(s["height"]), str(s["width"]), "--dtype", s["dtype"], "--out", f"sample-{seed}.png"]
    if s.get("scheduler"):
        cmd[cmd.index("--out"):cmd.index("--out")] = ["--scheduler", s["scheduler"]]
    return cmd
