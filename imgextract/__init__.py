"""imgextract: audit text-to-image diffusion models for memorized training images."""

__version__ = "0.1.0"
