"""Photos as the start of a render (``init_images=``): brought to the render's size and value range."""

from __future__ import annotations

import numpy as np

from jaxviz.common.errors import UsageError

__all__ = ["seed_images"]


def seed_images(images, n_targets: int, size: int) -> np.ndarray:
    """``init_images`` as ``[n_targets, size, size, 3]`` float32 in ``[0, 1]``.

    Args:
      images: one image ``[H, W, 3]`` (used for every target), or ``[n_targets, H, W, 3]`` / a list;
        float in ``[0, 1]`` or uint8. Other sizes are resized and centre-cropped.

    Raises:
      UsageError: wrong shape, count or value range.
    """
    from jaxviz.common.images import as_uint8_batch, resize_batch01

    if isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim in (3, 4):
        # uint8 photos take the same resize as everywhere else (Pillow's 8-bit path)
        images = as_uint8_batch(images, size)
        images = images[0] if len(images) == 1 else images
    if isinstance(images, (list, tuple)):
        images = [np.asarray(im) for im in images]
        if len({im.shape for im in images}) > 1:  # mixed sizes: bring each to the size first
            images = [resize_batch01(_unit(im)[None], size)[0] for im in images]
        images = np.stack(images) if images else np.zeros((0,))
    images = _unit(np.asarray(images))
    if images.ndim == 3:
        images = np.broadcast_to(images, (n_targets, *images.shape))
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] != n_targets:
        raise UsageError(f"init_images must be one [H, W, 3] image or one per target ({n_targets}), "
                         f"got shape {images.shape}")
    return np.ascontiguousarray(resize_batch01(images, size), np.float32)


def _unit(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    image = image.astype(np.float32)
    if image.size and not (np.isfinite(image).all() and image.min() >= 0.0 and image.max() <= 1.0):
        raise UsageError("init_images must be uint8 or float values in [0, 1]")
    return image
