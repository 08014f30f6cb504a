"""The release guard as a Python class: names the replicated image, its source and licence."""

from __future__ import annotations


from PIL import Image



def test_guard_names_the_replicated_image_and_its_licence(tmp_path, train_dir, photos):
    from imgextract.app.guard import Guard
    from imgextract.app.commands import build_index
    listing = tmp_path / "train.csv"
    rows = ["path,caption,url,license"] + [f"{p},photo {p.stem},https://example.org/{p.stem},CC-BY-4.0"
                                           for p in sorted(train_dir.glob("*.png"))]
    listing.write_text("\n".join(rows))
    idx = build_index(listing, str(tmp_path / "idx"), progress=False)
    g = Guard(str(idx.path))
    copy = Image.open(train_dir / "rocket.png").convert("RGB").resize((96, 96))
    v = g.check(copy)
    assert v.memorized and v.term == "memorized (regurgitated)" and v.train_path.endswith("rocket.png")
    assert v.source == "https://example.org/rocket" and v.license == "CC-BY-4.0"
    assert g.check(copy, "targeted").term == "memorized (extracted)"
    new = g.check(photos["flower"].resize((128, 128)))
    assert not new.memorized and "no substantial replication" in new.sentence()


def test_the_guard_blocks_every_distortion_a_deployer_meets_and_passes_distinct_photographs(tmp_path):
    """What the verdict's benchmark grades per distortion (JPEG q30-95, blur, tone, resizes, small crops, and a
    JPEG 20 of a 35% copy), through the guard: every near-copy is blocked (a copy or a replication), and a
    photograph the index does not hold is passed."""
    import io

    import numpy as np

    from imgextract.app.commands import build_index
    from imgextract.app.guard import Guard
    from imgextract.demo import composites as cp
    train = tmp_path / "train"
    train.mkdir()
    names = ["astronaut", "chelsea", "coffee", "logo", "page", "china"]
    views = {n: cp.square(cp.photo(n), 256) for n in names}
    for n in names:
        views[n].save(train / f"{n}.png")
    g = Guard(str(build_index(train, str(tmp_path / "idx"), progress=False).path))
    rng = np.random.default_rng(5)

    def heavy(im):
        buf = io.BytesIO()
        im.resize((90, 90), Image.BICUBIC).save(buf, "JPEG", quality=20)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB").resize(im.size, Image.BICUBIC)
    distortions = [lambda im: cp.jpeg(im, 30), lambda im: cp.jpeg(im, 95), lambda im: cp.blur(im, 2.0),
                   lambda im: cp.tone(im, 0.85, 15), lambda im: cp.tone(im, 1.15, -15),
                   lambda im: im.resize((128, 128), Image.BICUBIC).resize((256, 256), Image.BICUBIC),
                   lambda im: im.resize((512, 512), Image.BICUBIC), lambda im: cp.small_crop(im, 0.05, rng), heavy]
    for n in names:
        for i, distort in enumerate(distortions):
            v = g.check(distort(views[n]))
            assert v.blocked and v.train_path.endswith(f"{n}.png"), (n, i, v.kind, v.replication)
    for other in ("camera", "rocket", "coins", "moon"):
        v = g.check(cp.square(cp.photo(other), 256))
        assert not v.blocked and v.replication == "none", (other, v.kind, v.replication)
