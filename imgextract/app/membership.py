"""``imgextract membership``: was this collection of works in the model's training set, with the model alone?

Inputs are checked (the works, the references, the output file, the model's family where its files tell
it) before the weights load; every image is then featurised at the model's native size through the family's
own objective (``stages.membership``), and the collection test and its null run on those rows
(``dataset_inference``). membership.json and membership.html are written last, atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

from imgextract import rundir
from imgextract.errors import InputError
from imgextract.sources.images import BadImage, open_rgb, sha256_file
from imgextract.stages.settings import MIN_REFERENCES, MIN_WORKS, MembershipSettings, SamplingConfig

TOOL = "imgextract membership"
ALPHA = 0.01

MEANING = ("Dataset inference tests the collection, not each image: a low p-value says these works, as a set, are "
           "denoised better by this model than the references are, which is what training on them does; it does not "
           "say which work was trained on. It holds only if the references are of the same kind as the works and known "
           "not to be in the training set. The figures in the docs were measured on a toy model; on real models they "
           "are not measured here.")


def check_out_file(out: Path) -> Path:
    """``--out`` is a .json file that is new or one this command wrote; the page goes beside it."""
    out = Path(out)
    if out.suffix.lower() != ".json":
        raise InputError(f"--out {out} is not a .json file", "name the result file, like membership.json")
    if out.is_dir():
        raise InputError(f"--out {out} is a folder", "name a .json file")
    page = out.with_suffix(".html")
    for path in (out, page):
        if path.exists() and not _ours(out):
            raise InputError(f"{path} exists and was not written by {TOOL}; refusing to replace it",
                             "choose another --out file")
    if not out.parent.is_dir():
        raise InputError(f"--out {out}: folder {out.parent} does not exist", "create it, or name a file in a folder that exists")
    return out


def _ours(out: Path) -> bool:
    try:
        return json.loads(out.read_text(encoding="utf-8")).get("tool") == TOOL
    except (OSError, ValueError, AttributeError):
        return False


def read_side(source: Path, what: str, least: int) -> tuple[list, list[dict]]:
    """(readable (path, None, caption) triples, skipped ones with their reason); too few readable is refused
    (the skipped ones are said by the caller once both sides pass: an error comes first, alone)."""
    from imgextract.sources.tables import list_images
    records = list_images(Path(source))
    good, skipped = [], []
    for r in records:
        if r.problem:
            skipped.append({"path": str(r.path), "reason": r.problem})
            continue
        try:
            open_rgb(r.path, min_side=8)            # read now, opened again when featurised: memory stays bounded
            good.append((r.path, None, r.caption))
        except BadImage as exc:
            skipped.append({"path": str(r.path), "reason": exc.reason})
    if len(good) < least:
        raise InputError(f"{what} {source} has {len(good)} readable image(s); membership needs at least {least}",
                         f"add {what} images (at least {least}; about 70 give strong evidence on real models, "
                         f"per the literature)", details=[f"skipped {s['path']}: {s['reason']}" for s in skipped])
    return good, skipped


def _num(x: float) -> float | None:
    """A number for JSON: NaN (an effect that one image per side cannot give) is null."""
    return None if x != x else float(x)


def verdict_words(p: float, min_p: float, n_test: int) -> str:
    if p < ALPHA:
        return (f"Evidence that these works were in the training set: p = {p:.3g} (below {ALPHA}) that works of "
                f"this kind would outscore the references this much by chance.")
    if min_p >= ALPHA:
        return (f"No conclusion: with {n_test} held-out works this test cannot show p below {ALPHA} (its smallest "
                f"p-value is {min_p:.3g}); p = {p:.3g}. Add works and references.")
    return (f"No evidence at this size that these works were in the training set: p = {p:.3g}. Absence of evidence "
            f"is not evidence of absence: more works and references make the test stronger.")


def run_membership(works: Path, reference: Path, model: str, out: Path, settings: MembershipSettings | None = None,
                   sampling: SamplingConfig | None = None, say=print) -> dict:
    """The whole command; returns what membership.json holds."""
    from imgextract.app.commands import require_family
    from imgextract.dataset_inference import collection_test, null_p_values
    from imgextract.models.families import check_size, require
    from imgextract.models.pipelines import load_pipeline, native_size
    from imgextract.progress import show
    from imgextract.report.membership import membership_page
    from imgextract.stages.membership import feature_names, features, noise_seed

    settings, sampling = settings or MembershipSettings(), sampling or SamplingConfig()
    out = check_out_file(out)
    mine, skip_w = read_side(works, "WORKS", MIN_WORKS)
    refs, skip_r = read_side(reference, "--reference", MIN_REFERENCES)
    digests = {sha256_file(p): p for p, _, _ in mine}
    shared = [(digests[d], p) for p, _, _ in refs if (d := sha256_file(p)) in digests]
    if shared:
        raise InputError(f"{len(shared)} image(s) are both works and references ({shared[0][0]} = {shared[0][1]})",
                         "references must be works known not to be in the training set; remove the shared images")
    require_family(model, "membership", "membership scores the registered families only")
    for what, skipped in (("WORKS", skip_w), ("--reference", skip_r)):
        for s in skipped:
            say(f"skipped {what} image {s['path']}: {s['reason']}")
    loaded = load_pipeline(model, sampling.device, sampling.dtype, sampling.model_config)
    require(loaded.family, "membership", model, "membership scores the registered families only")
    size = tuple(sampling.size) if sampling.size else native_size(loaded.pipe, loaded.family)
    check_size(loaded.family, size, loaded.pipe)
    every = mine + refs
    captioned = settings.captions and all(c for _, _, c in every)
    conditioning = "each image's caption" if captioned else "the unconditional branch (empty prompt)"
    if settings.captions and not captioned and any(c for _, _, c in every):
        say("some images have no caption: every image is scored unconditionally (a caption on one side only "
            "would lower that side's losses)")
    say(f"membership features of {len(mine)} works and {len(refs)} references at {size[0]}x{size[1]} px, "
        f"conditioned on {conditioning}")
    rows = show(features(loaded, (open_rgb(p, min_side=8) for p, _, _ in every),
                         [c if captioned else None for _, _, c in every], settings, size), say)
    fw, fr = rows[:len(mine)], rows[len(mine):]
    test = collection_test(fw, fr, settings.fit_share, settings.seed)
    nulls = null_p_values(fr, settings.null_splits, settings.fit_share, settings.seed) if settings.null_splits else []
    false_pos = sum(p < ALPHA for p in nulls)
    names = feature_names(settings)
    result = {
        "tool": TOOL, "model": model, "family": loaded.family.title, "size": list(size), "conditioning": conditioning,
        "works": len(mine), "references": len(refs), "alpha": ALPHA,
        "verdict": verdict_words(test.p_value, test.min_p, test.test_works),
        "meaning": MEANING,
        "p_value": test.p_value, "effect": {"auc": _num(test.auc), "cohen_d": _num(test.cohen_d)},
        "test": {"p_value": test.p_value, "min_p": test.min_p, "auc": _num(test.auc), "cohen_d": _num(test.cohen_d),
                 "exact": test.exact, "relabellings": test.relabellings, "fit_share": settings.fit_share,
                 "fit_works": test.fit_works, "fit_refs": test.fit_refs, "test_works": test.test_works,
                 "test_refs": test.test_refs, "weights": dict(zip(names, test.weights)),
                 "direction": "fitted on the fit split" if settings.fit_share > 0 else "prior: lower loss = member"},
        "null": {"splits": settings.null_splits, "p_values": nulls, "false_positives": false_pos,
                 "false_positive_rate": false_pos / len(nulls) if nulls else None},
        "seeds": {"seed": settings.seed, "split_seed": settings.seed,
                  "noise_seeds": [noise_seed(settings.seed, k) for k in range(settings.noises)],
                  "null_seeds": [settings.seed + s for s in range(settings.null_splits)]},
        "settings": {"timesteps": list(settings.timesteps), "noises": settings.noises,
                     "pia_timestep": settings.pia_timestep, "shift": settings.shift},
        "features": names,
        "images": [{"path": str(p), "side": "works" if i < len(mine) else "references",
                    "score": float(test.scores[i]), "held_out": bool(test.held_out[i]),
                    "features": [float(x) for x in rows[i]]} for i, (p, _, _) in enumerate(every)],
        "skipped": [{**s, "side": "works"} for s in skip_w] + [{**s, "side": "references"} for s in skip_r],
        "versions": rundir.package_versions(),
    }
    rundir.write_bytes_atomic(out.with_suffix(".html"), membership_page(result).encode())
    rundir.write_json_atomic(out, result)
    return result
