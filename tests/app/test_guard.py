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
