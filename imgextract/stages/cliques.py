"""The clique test (Carlini et al. 2023, §4.2): memorization without the training set.

A memorized caption makes the model draw (nearly) the same image again and again, so among
its N generations there is a large group that are all near-duplicates of each other. For
each caption: the pairwise tiled L2 matrix among its generations, a graph with an edge where
the distance is below ``delta``, and its largest clique; the caption is flagged when that
clique has at least ``min_size`` members.

The pairwise matrix is computed tile by tile as matrix products
(‖a−b‖² = ‖a‖² + ‖b‖² − 2a·b), so 500 images at 512×512 need one tile of all images in memory
at a time, never N² image pairs; it runs at about the machine's GEMM rate
(``scripts/bench_cliques.py``), and on the GPU through torch when one is present.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from imgextract import distance, rundir
from imgextract.errors import InputError
from imgextract.sources.images import BadImage, open_rgb
from imgextract.stages.settings import CliqueParams
from imgextract.stages.settings import validate_cliques as validate_params

CLIQUES = "cliques.parquet"


def pairwise_tiled_l2(images: np.ndarray, grid: int = distance.DEFAULT_GRID, device: str = "auto") -> np.ndarray:
    """(N, N) tiled L2 between all pairs of (N, H, W, C) images (uint8 0..255 or float 0..1).

    Per tile: one contiguous float32 copy of that tile of every image, then its Gram matrix
    ``T·Tᵀ`` (BLAS recognises the symmetric product), the squared norms from its diagonal, and
    ``‖a−b‖² = ‖a‖² + ‖b‖² − 2a·b``; the tile buffer is reused, and values stay in the input's
    units until the end. ``device="cuda"`` (or ``auto`` with a GPU that torch sees) runs the same
    arithmetic in torch on the GPU; ``device="torch"`` runs that torch code on the CPU, so the GPU's
    arithmetic is checked where there is no GPU (``scripts/gpu_check.py --small``).
    """
    n, h, w, c = images.shape
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    ys, xs = distance.tile_edges(h, grid), distance.tile_edges(w, grid)
    if device == "torch":
        worst = _pairwise_torch(images, ys, xs, "cpu")
    elif device != "cpu" and _torch_cuda(device):
        worst = _pairwise_torch(images, ys, xs, "cuda")
    else:
        worst = np.zeros((n, n), dtype=np.float64)
        buf = np.empty(n * int(np.diff(ys).max()) * int(np.diff(xs).max()) * c, np.float32)
        for i in range(grid):
            for j in range(grid):
                th, tw = ys[i + 1] - ys[i], xs[j + 1] - xs[j]
                tile = buf[: n * th * tw * c].reshape(n, th, tw, c)
                np.copyto(tile, images[:, ys[i]:ys[i + 1], xs[j]:xs[j + 1], :], casting="unsafe")
                flat = tile.reshape(n, -1)
                gram = flat @ flat.T
                sq = np.diag(gram).astype(np.float64)
                d2 = (sq[:, None] + sq[None, :] - 2.0 * gram) / flat.shape[1]
                np.maximum(worst, d2, out=worst)
    out = np.sqrt(np.maximum(worst, 0.0)) / scale
    np.fill_diagonal(out, 0.0)
    return out


def _torch_cuda(device: str) -> bool:
    if device not in ("auto", "cuda"):
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _pairwise_torch(images: np.ndarray, ys: np.ndarray, xs: np.ndarray, device: str) -> np.ndarray:
    import torch
    n = images.shape[0]
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    worst = torch.zeros((n, n), dtype=torch.float64, device=x.device)
    for i in range(len(ys) - 1):
        for j in range(len(xs) - 1):
            flat = x[:, ys[i]:ys[i + 1], xs[j]:xs[j + 1], :].reshape(n, -1).float()
            gram = flat @ flat.T
            sq = torch.diagonal(gram).double()
            d2 = (sq[:, None] + sq[None, :] - 2.0 * gram.double()) / flat.shape[1]
            worst = torch.maximum(worst, d2)
    return worst.cpu().numpy()


@dataclass
class CliqueResult:
    members: list[int]
    exact: bool
    upper_bound: int


def largest_clique(adjacency: np.ndarray, max_cliques: int = 200_000) -> CliqueResult:
    """Maximum clique of a graph given as a boolean adjacency matrix.

    Bron–Kerbosch (networkx ``find_cliques``) enumerates maximal cliques; it is exact when it
    finishes. After ``max_cliques`` maximal cliques it stops and reports the best found, with
    ``exact=False`` and an upper bound (degeneracy + 1) on the true size.
    """
    import networkx as nx
    n = adjacency.shape[0]
    if n == 0:
        return CliqueResult([], True, 0)
    graph = nx.Graph()
    graph.add_nodes_from(range(n))
    rows, cols = np.nonzero(np.triu(adjacency, 1))
    graph.add_edges_from(zip(rows.tolist(), cols.tolist()))
    bound = (max(nx.core_number(graph).values()) + 1) if graph.number_of_edges() else 1
    best: list[int] = [0]
    for count, clique in enumerate(nx.find_cliques(graph), start=1):
        if len(clique) > len(best):
            best = sorted(clique)
            if len(best) == bound:  # cannot do better than the bound
                return CliqueResult(best, True, bound)
        if count >= max_cliques:
            return CliqueResult(best, False, bound)
    return CliqueResult(best, True, bound)


def caption_cliques(paths: list[str], params: CliqueParams) -> dict:
    """Largest clique among one caption's generations (files), with its mean internal distance."""
    def load(p):
        try:
            return np.asarray(open_rgb(Path(p)), dtype=np.uint8)
        except BadImage:
            return None

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # PIL decodes without the GIL
        loaded = list(pool.map(load, paths))
    return clique_of_images(paths, loaded, params)


def clique_of_images(names: list[str], images: list[np.ndarray | None], params: CliqueParams) -> dict:
    """The clique test of one caption's decoded generations (uint8 arrays; None: unreadable).

    A sweep calls this where a caption's samples were drawn, so the pixels are never read back.
    """
    kept = [p for p, im in zip(names, images) if im is not None]
    images = [im for im in images if im is not None]
    shapes = {im.shape for im in images}
    if len(shapes) > 1:  # generations of one caption share a size; bring stragglers to the first
        h, w = images[0].shape[:2]
        images = [im if im.shape[:2] == (h, w) else np.asarray(distance.fit(Image.fromarray(im), (h, w)))
                  for im in images]
    if not images:
        return {"n_generations": 0, "largest_clique": 0, "members": [], "mean_distance": None,
                "exact": True, "upper_bound": 0}
    d = pairwise_tiled_l2(np.stack(images), params.grid)
    res = largest_clique(d < params.delta, params.max_cliques)
    sub = d[np.ix_(res.members, res.members)]
    k = len(res.members)
    mean = float(sub[np.triu_indices(k, 1)].mean()) if k > 1 else None
    return {"n_generations": len(kept), "largest_clique": k, "members": [kept[i] for i in res.members],
            "mean_distance": mean, "exact": res.exact, "upper_bound": res.upper_bound}


def clique_row(caption_id, caption: str, result: dict, params: CliqueParams) -> dict:
    """One caption's row of cliques.parquet: the test's result, the flag, and the parameters."""
    return {"caption_id": str(caption_id), "caption": caption, **result,
            "flagged": result["largest_clique"] >= params.min_size, **asdict(params)}


def check_can_flag(samples: int, min_size: int, said: str, knob: str) -> None:
    """A caption drawn fewer times than ``min_size`` can never be flagged: refused before any work."""
    if samples < min_size:
        raise InputError(f"{said}: no caption could be flagged",
                         f"lower {knob} to at most {samples}, or draw more samples")


def run_cliques(run: Path, params: CliqueParams = CliqueParams()) -> pd.DataFrame:
    """cliques.parquet for every caption of a run; the parameters are recorded in each row."""
    run = Path(run)
    if not rundir.is_run_dir(run):
        raise InputError(f"{run} is not a run folder (no run.json)", "pass the --out folder of `imgextract generate`")
    validate_params(params)
    samples = rundir.read_samples(run)
    if samples.empty:
        raise InputError(f"run {run} has no finished sample shard", "run `imgextract generate` into it first")
    per_caption = int(samples.groupby("caption_id").size().max())
    check_can_flag(per_caption, params.min_size, f"run {run} has {per_caption} samples per caption, fewer than "
                   f"--min-size {params.min_size}", "--min-size")
    rows = []
    for cid, grp in samples.groupby("caption_id", sort=True):
        res = caption_cliques(grp.sort_values("sample_index")["generation_path"].tolist(), params)
        rows.append(clique_row(cid, grp["caption"].iat[0], res, params))
    table = confirm(pd.DataFrame(rows), run / rundir.MATCHES)
    rundir.write_parquet_atomic(run / CLIQUES, table)
    return table


def confirm(table: pd.DataFrame, matches_file: Path) -> pd.DataFrame:
    """``confirmation`` per flagged caption: does the index hold a training image within the threshold
    of one of the clique's members? A clique alone is evidence of a consistent image, not of a copy."""
    table = table.copy()
    if not Path(matches_file).is_file():
        table["confirmation"] = ["not checked (no scan of this run yet)" if f else "" for f in table["flagged"]]
        return table
    m = pd.read_parquet(matches_file, columns=["generation_path", "train_id", "memorized"])
    hits = m[m["memorized"]].groupby("generation_path")["train_id"].first().to_dict()
    labels = []
    for flagged, members in zip(table["flagged"], table["members"]):
        found = sorted({int(hits[p]) for p in members if p in hits})
        labels.append("" if not flagged else
                      f"confirmed (training image #{found[0]} within the threshold)" if found else
                      "unconfirmed (no training image within the threshold)")
    table["confirmation"] = labels
    return table
