"""equimod-plugin: equivariance to augmentations for lightly and solo-learn models."""

from equimod_plugin import augment

__version__ = "0.1.0"

__all__ = ["augment"]
