"""Image sources: the embedded natural photos (more sources arrive with the stats issue)."""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["EMBEDDED_PHOTOS", "embedded_photos"]

# Colour photos that ship inside scikit-image and scikit-learn (no download needed).
EMBEDDED_PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
    "immunohistochemistry", "retina", "stereo_motorcycle", "china", "flower",
)


@functools.lru_cache(maxsize=None)
def _embedded_photo(name: str) -> np.ndarray:
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{name}.jpg")
    import skimage.data

    image = getattr(skimage.data, name)()
    image = image[0] if isinstance(image, tuple) else image  # stereo pairs: the left view
    return np.ascontiguousarray(image[..., :3], dtype=np.uint8)


def embedded_photos(names=EMBEDDED_PHOTOS) -> dict[str, np.ndarray]:
    """The embedded natural photos as ``{name: [H,W,3] uint8}`` (sizes differ)."""
    return {name: _embedded_photo(name) for name in names}
