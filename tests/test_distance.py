import numpy as np
import pytest

from imgextract import distance


def arr(im, size=(128, 128)):
    return distance.to_array(im, size)


def test_identical_images_are_at_zero(photos):
    a = arr(photos["astronaut"])
    assert distance.tiled_l2(a, a) == 0.0
    assert distance.l2(a, a) == 0.0


def test_one_altered_tile_gives_that_tiles_rms(photos):
    a = arr(photos["coffee"])
    b = a.copy()
    # replace tile (row 1, col 2) of the 4x4 grid (32x32 pixels) with another photograph's pixels
    other = arr(photos["rocket"])
    b[32:64, 64:96] = other[32:64, 64:96]
    expected = np.sqrt(((a[32:64, 64:96] - other[32:64, 64:96]) ** 2).mean())
    assert expected > 0.05
    assert distance.tiled_l2(a, b, grid=4) == pytest.approx(expected, rel=1e-5)
    # the plain L2 dilutes the same change over 16 tiles: exactly a quarter of the tile RMS
    assert distance.l2(a, b) == pytest.approx(expected / 4, rel=1e-5)


def test_uneven_tiles_and_batching(photos):
    a = arr(photos["chelsea"], (30, 45))
    b = arr(photos["astronaut"], (30, 45))
    ys, xs = distance.tile_edges(30, 4), distance.tile_edges(45, 4)
    direct = max(np.sqrt(((a[ys[i]:ys[i + 1], xs[j]:xs[j + 1]] - b[ys[i]:ys[i + 1], xs[j]:xs[j + 1]]) ** 2).mean())
                 for i in range(4) for j in range(4))
    assert distance.tiled_l2(a, b) == pytest.approx(direct, rel=1e-5)
    batch = distance.tiled_l2(a[None], np.stack([a, b]))
    assert batch[0] == 0.0 and batch[1] == pytest.approx(direct, rel=1e-5)


def test_fit_crops_to_aspect_before_resizing(photos):
    im = photos["coffee"]  # 600x400
    out = distance.fit(im, (64, 64))
    assert out.size == (64, 64)
    # the centre crop keeps the middle: compare against cropping by hand
    manual = im.crop((100, 0, 500, 400)).resize((64, 64), resample=3)
    assert np.array_equal(np.asarray(out), np.asarray(manual))


def test_grid_larger_than_image_is_refused():
    with pytest.raises(ValueError):
        distance.tile_edges(3, 4)


@pytest.mark.parametrize("size", [(512, 512), (128, 96), (30, 45), (101, 37)])
def test_thumbnail_bound_never_exceeds_the_exact_distance(photos, size):
    """Real photographs, every pair: the float16-thumbnail bound is <= the full-resolution value,
    and close to it (the scan relies on that to prune)."""
    arrays = [distance.to_uint8(photos[n], size) for n in list(photos)[:12]]
    thumbs = np.stack([distance.block_means(a) for a in arrays]).astype(np.float16)
    floats = np.stack(arrays).astype(np.float32) / 255
    ratios = []
    for i, a in enumerate(arrays):
        tiled, plain = distance.tiled_l2_bound(distance.block_means(a), thumbs, size)
        exact_t, exact_p = distance.tiled_l2(floats[i][None], floats), distance.l2(floats[i][None], floats)
        assert (tiled <= exact_t).all() and (plain <= exact_p).all()
        assert tiled[i] == 0.0  # an image against its own thumbnail
        ratios += list(np.delete(tiled / np.maximum(exact_t, 1e-9), i))
    assert np.median(ratios) > 0.8


def test_thumbnail_bound_is_exact_with_one_pixel_blocks(photos):
    """With blocks of one pixel (a 24 px image) the bound is the exact tiled L2, up to float16."""
    a, b = (distance.to_uint8(photos[n], (24, 24)) for n in ("coffee", "rocket"))
    tiled, plain = distance.tiled_l2_bound(distance.block_means(a), distance.block_means(b)[None], (24, 24))
    exact = distance.tiled_l2(a.astype(np.float32) / 255, b.astype(np.float32) / 255)
    assert tiled[0] == pytest.approx(exact, abs=1e-5)
    assert plain[0] == pytest.approx(distance.l2(a.astype(np.float32) / 255, b.astype(np.float32) / 255), abs=1e-5)


def test_tiles_that_split_blocks_give_no_bound(photos):
    a = distance.to_uint8(photos["coffee"], (512, 512))
    assert distance.tiled_l2_bound(distance.block_means(a), distance.block_means(a)[None], (512, 512), grid=3) is None
    assert distance.tiled_l2_bound(distance.block_means(a), distance.block_means(a)[None], (512, 512), grid=8) \
        is not None
