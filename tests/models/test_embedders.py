"""Embedders from the registry: pixel and open_clip (a tiny local folder), refused across spaces."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from imgextract.app.commands import build_index
from imgextract.errors import InputError
from imgextract.index.store import check_embedder, open_index
from imgextract.models.embedders import load_embedder


def test_clip_embedder_from_local_folder(tmp_path, train_dir):
    from imgextract.demo.tiny import save_tiny_clip
    clip_dir = save_tiny_clip(tmp_path / "clip")
    res = build_index(train_dir, str(tmp_path / "clipidx"), f"clip:{clip_dir}", progress=False)
    idx = open_index(str(res.path))
    assert idx.embedder["dimension"] == 32 and idx.embedder["spec"] == f"clip:{clip_dir.resolve()}"
    q = Image.open(train_dir / "rocket.png")
    _, ids = idx.search(idx.load_embedder("cpu").embed([q]), 1)
    assert idx.table["path"].iat[int(ids[0, 0])].endswith("rocket.png")
    check_embedder(idx, f"clip:{clip_dir}")
    with pytest.raises(InputError):
        check_embedder(idx, "pixel")


def test_pixel_descriptor_is_normalised_and_finds_copies(photos):
    emb = load_embedder("pixel")
    a = photos["astronaut"].resize((128, 128))
    vecs = emb.embed([a, a.resize((96, 96)), photos["coffee"].resize((128, 128))])
    assert vecs.shape == (3, emb.dim) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    assert vecs[0] @ vecs[1] > 0.98 and vecs[0] @ vecs[2] < 0.9


@pytest.mark.parametrize("spec, words", [("bogus", "unknown embedder"), ("pixel:x", "takes no argument"),
                                         ("clip:", "names no model")])
def test_bad_specs_are_refused(spec, words):
    with pytest.raises(InputError, match=words):
        load_embedder(spec)


def test_pixel_embedder_gives_the_same_vector_alone_as_in_a_batch(photos):
    """An index build embeds pixel vectors one image at a time in its decoding threads; queries come
    in batches: the two must agree to the bit."""
    from imgextract.models.embedders import load_embedder
    e = load_embedder("pixel")
    ims = [photos[n] for n in ["astronaut", "coffee", "chelsea", "rocket", "camera"]]
    assert e.per_image and np.array_equal(e.embed(ims), np.stack([e.embed([im])[0] for im in ims]))
