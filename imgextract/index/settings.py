"""An index's settings as data (its build, its near-duplicate search): the one owner of their defaults,
checked when made.

Light on purpose (no numpy, no FAISS): the command line reads these defaults for ``index build``'s options.
What needs the source or the embedder (the FAISS factory string, the source's form) is checked by
``index.build.prepare``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from imgextract.errors import InputError
from imgextract.rule import CopyRule


@dataclass(frozen=True)
class BuildSettings:
    """How an index is built (``imgextract index build``, a run config's ``[index]``, ``build_index``)."""

    embedder: str = "pixel"          # pixel | clip:MODEL/PRETRAINED | clip:hf-hub:ORG/REPO | clip:PATH
    batch_size: int = 64             # images embedded per batch
    overwrite: bool = False          # replace an existing index of that name (only one imgextract made)
    image_column: str | None = None  # a table's column of image paths (None: path/image/file)
    caption_column: str | None = None  # a table's column of captions (None: caption/text/prompt)
    factory: str = "auto"            # FAISS index_factory string, or auto: chosen from the count and max_memory
    max_memory: int = 4 * 2**30      # bytes the index may take when factory is auto
    device: str = "auto"             # where the embedder runs
    thumb_sizes: tuple | None = ()   # generation sizes to store thumbnails at besides each image's own; None: none
    workers: int | None = None       # threads decoding and hashing images (None: one per core)
    embeddings: bool = False         # the source is clip-retrieval output: its vectors are indexed as they are
    images: Path | None = None       # with embeddings: the img2dataset folder its metadata's keys name
    hashes: bool = False             # store every image's perceptual hashes (scans otherwise hash what they find)
    descriptor: str | None = None    # sscd:PATH: store every image's descriptor too
    processes: int | None = None     # local engine: parts built side by side in this many processes (None: chosen)

    def __post_init__(self):
        if self.batch_size < 1:
            raise InputError(f"--batch-size {self.batch_size}", "give a positive number of images per batch")
        if self.processes is not None and self.processes < 1:
            raise InputError(f"--processes {self.processes}", "give 0 (chosen for you) or a positive number of processes")
        if self.workers is not None and self.workers < 1:
            raise InputError(f"--workers {self.workers}", "give 0 (one per core) or a positive number of threads")
        if self.descriptor is not None and self.embeddings:
            raise InputError(f"--descriptor {self.descriptor}: an --embeddings source is indexed from its vectors, "
                             "without decoding an image to describe", "index the img2dataset shards themselves "
                             "(SOURCE = the shard folder) to store descriptors, or drop --descriptor")


@dataclass(frozen=True)
class DuplicateParams:
    """``imgextract index duplicates``: which pairs are compared, and when two images are copies."""

    threshold: float = CopyRule.threshold           # tiled L2 below which two images are copies
    similarity: float = 0.9                         # embedding similarity a candidate pair needs
    k: int = 32                                     # neighbours looked at per row
    family_similarity: float = 0.6                  # template families: pairs this similar are judged too
    chunk: int = 4096                               # rows searched at once

    def __post_init__(self):
        if not 0 < self.threshold <= 1:
            raise InputError(f"--threshold {self.threshold}",
                             f"use a tiled-L2 threshold in (0, 1]; {CopyRule.threshold} is the default")
        if not -1 <= self.similarity <= 1:
            raise InputError(f"--similarity {self.similarity}", "use a cosine similarity in [-1, 1]")
