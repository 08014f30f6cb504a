import imagehash

from imgextract import hashes


def test_hashes_equal_imagehash(photos):
    for name in ["astronaut", "coffee", "moon"]:
        im = photos[name]
        got = hashes.image_hashes(im)
        assert got["phash"] == str(imagehash.phash(im))
        assert got["dhash"] == str(imagehash.dhash(im))
        assert got["whash"] == str(imagehash.whash(im))


def test_hamming_matches_imagehash_subtraction(photos):
    a, b, c = (hashes.image_hashes(photos[n]) for n in ["astronaut", "coffee", "rocket"])
    for kind in hashes.HASHES:
        expect = imagehash.hex_to_hash(a[kind]) - imagehash.hex_to_hash(b[kind])
        assert hashes.hamming(a[kind], b[kind]) == expect
        many = hashes.hamming_many(a[kind], [a[kind], b[kind], c[kind]])
        assert many[0] == 0 and many[1] == expect
        assert many[2] == imagehash.hex_to_hash(a[kind]) - imagehash.hex_to_hash(c[kind])
