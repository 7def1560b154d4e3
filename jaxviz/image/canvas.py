"""Where the model's input came from on the canvas: transform geometry for the outlier heat map.

During a render the model sees ``transform(canvas)`` — with MaCo's recipe a random crop resized to
the model side — so a feature position of that input is not the same place of the canvas from one
step to the next. :func:`source_points` maps pixel positions of a transform's output back to its
input (the canvas), using the very random draws of that step's key; :func:`canvas_cells` turns a
layer's feature positions into the canvas cells they show, so the outlier prior can count how
often each *canvas* position was an outlier (README "The method"; the gallery draws that map over
the image). Transforms it does not know return ``None``: the map then stays in model-input
coordinates and the gallery says so.

Points are ``(y, x)`` in pixels, pixel centres at integers (as :mod:`jaxviz.image.transforms` samples).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxviz.image import transforms as T

__all__ = ["source_points", "canvas_cells", "supports"]


def _out_hw(transform, hw, key):
    shape = jax.eval_shape(lambda im, k: transform(im, key=k), jax.ShapeDtypeStruct((*hw, 3), jnp.float32), key)
    return tuple(shape.shape[:2])


def supports(transform) -> bool:
    """Whether :func:`source_points` knows ``transform`` (every part of a chain included)."""
    if isinstance(transform, T.Chain):
        return all(supports(t) for t in transform.transforms)
    return isinstance(transform, (T.Identity, T.Noise, T.Pad, T.Jitter, T.RandomScale, T.RandomRotate,
                                  T.RandomCrop, T.RandomFlip, T.Roll, T.Upsample, T.CropOrResize))


def source_points(transform, in_hw, points: jax.Array, *, key: jax.Array) -> jax.Array | None:
    """Input positions ``[..., 2]`` that output positions ``points`` of ``transform(image, key=key)`` show.

    Args:
      transform: a :mod:`jaxviz.image.transforms` transform (chains included).
      in_hw: the input's ``(height, width)``.
      points: ``[..., 2]`` float ``(y, x)`` in output pixels.
      key: the key the transform was called with.

    Returns:
      ``[..., 2]`` positions in input pixels (may lie outside it, e.g. in padding), or ``None``
      for a transform this module does not know.
    """
    in_hw = tuple(int(v) for v in in_hw)
    points = jnp.asarray(points, jnp.float32)
    if isinstance(transform, T.Chain):
        if not supports(transform):
            return None
        if not transform.transforms:
            return points
        keys = list(jax.random.split(key, len(transform.transforms)))  # as Chain.__call__ splits them
        sizes = [in_hw]
        for t, k in zip(transform.transforms, keys):
            sizes.append(_out_hw(t, sizes[-1], k))
        for t, k, hw in reversed(list(zip(transform.transforms, keys, sizes))):
            points = source_points(t, hw, points, key=k)
        return points
    if isinstance(transform, (T.Identity, T.Noise)):
        return points
    if isinstance(transform, (T.Pad, T.Jitter, T.RandomScale, T.RandomRotate)):
        if isinstance(transform, T.Jitter) and transform.d == 0:
            return points
        _, M, t = transform.geometry(in_hw, key=key)
        return points @ M.T + t
    if isinstance(transform, T.RandomCrop):  # the draws of RandomCrop.__call__
        _, step, t = transform.draw(in_hw, key=key)
        return points * step + t
    if isinstance(transform, T.RandomFlip):
        flipped = jax.random.bernoulli(key)
        return jnp.where(flipped, points * jnp.asarray([1.0, -1.0]) + jnp.asarray([0.0, in_hw[1] - 1.0]), points)
    if isinstance(transform, T.Roll):
        shift = jax.random.randint(key, (2,), -transform.d, transform.d + 1).astype(jnp.float32)
        return jnp.mod(points - shift, jnp.asarray(in_hw, jnp.float32))
    if isinstance(transform, (T.Upsample, T.CropOrResize)):
        h, w = in_hw
        size = transform.size
        if h >= size and w >= size:
            if isinstance(transform, T.Upsample):
                return points
            return points + jnp.asarray([(h - size) // 2, (w - size) // 2], jnp.float32)
        scale = jnp.asarray([h / size, w / size], jnp.float32)  # jax.image.resize: half-pixel centres
        return (points + 0.5) * scale - 0.5
    return None


def _view_offset(view) -> float | None:
    from jaxviz.stats import views

    parsed = views.parse_view(view)
    if parsed.kind == "pooled":
        return None
    return (parsed.size - 1) / 2.0 if parsed.kind == "patch" else 0.0


def canvas_cells(transform, canvas_hw, seen_hw, grid_hw, canvas_grid_hw, view, *, key) -> jax.Array | None:
    """Canvas cell of every feature position the model saw, for one step.

    Args:
      transform: the step's transform; ``key``: its key.
      canvas_hw: the canvas (rendered image) size; ``seen_hw``: the model input's.
      grid_hw: the layer's grid on the model input; ``canvas_grid_hw``: its grid on the canvas.
      view: the statistics' view (``pixel``, ``patchK``; ``pooled`` has no positions: ``None``).

    Returns:
      ``[positions]`` int32 flat index into the view's positions on the canvas grid, ``-1`` where a
      position shows no part of the canvas (padding); ``None`` if the transform is unknown.
    """
    offset = _view_offset(view)
    if offset is None or not supports(transform):
        return None
    (h, w), (hc, wc) = grid_hw, canvas_grid_hw
    k = int(round(2 * offset)) + 1  # patch side (1 for pixel)
    rows, cols = h - k + 1, w - k + 1
    gy, gx = jnp.meshgrid(jnp.arange(rows, dtype=jnp.float32) + offset, jnp.arange(cols, dtype=jnp.float32) + offset,
                          indexing="ij")
    # grid position -> pixel centre of the model input -> canvas pixel -> canvas grid position
    sy, sx = seen_hw
    points = jnp.stack([(gy + 0.5) * sy / h - 0.5, (gx + 0.5) * sx / w - 0.5], -1).reshape(-1, 2)
    canvas = source_points(transform, canvas_hw, points, key=key)
    cy = (canvas[:, 0] + 0.5) * hc / canvas_hw[0] - 0.5 - offset
    cx = (canvas[:, 1] + 0.5) * wc / canvas_hw[1] - 0.5 - offset
    iy, ix = jnp.round(cy).astype(jnp.int32), jnp.round(cx).astype(jnp.int32)
    crows, ccols = hc - k + 1, wc - k + 1
    inside = (iy >= 0) & (iy < crows) & (ix >= 0) & (ix < ccols)
    return jnp.where(inside, iy * ccols + ix, -1)
