"""The model interface every part of jaxviz uses, and adapters for users' own Flax models.

A :class:`Model` bundles ``params`` with a **pure** ``features(params, x, layers=None)``
returning ``{layer_name: activation}``. Anything built on it (stats, objectives, render) only
sees that function, so EfficientNet-Lite, a user's linen module and a user's nnx module are
interchangeable.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz.common.errors import UnknownLayerError
from jaxviz.common.images import EVAL_CROP_FRACTION, as_uint8_batch

__all__ = ["Model", "UnknownLayerError", "from_linen", "from_nnx"]

ApplyFn = Callable[[Any, jax.Array, "tuple[str, ...] | None"], dict]


def tf_lite_normalize(x255):
    """TF-Lite input range: 0..255 → about [-1, 1] (EfficientNet-Lite's own normalization)."""
    return (x255 - 127.0) / 128.0


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    """A network seen as a pure function from an image batch to named activations.

    Attributes:
      name: model name.
      params: the parameter pytree passed to ``features``.
      layers: ordered ``{name: shape without batch}`` of the public layers.
      apply: ``(params, x[N,H,W,3], names | None) -> {name: array}``.
      resolution: native input side in pixels (``None`` if any size works).
      normalize: maps float RGB in 0..255 to the model's input range (jittable).
      hidden_layers: extra capturable points not listed in ``layers`` (e.g. BatchNorm outputs).
      class_names: names of the output classes, if known.
      batchnorm: ``{layer: path of its BatchNorm params}`` for layers that are BatchNorm outputs
        (params with ``scale``, ``bias``, ``mean``, ``var``; used by the DeepInversion prior), or
        ``{layer: {"scale"|"bias"|"mean"|"var": path or None}}`` (see :mod:`jaxviz.models.own`).
      batchnorm_eps: the BatchNorm epsilon.
      apply_redirected: like ``apply`` but with redirected ReLU gradients (``None``: not supported).
      backward_rules: ``{rule: apply}`` variants of ``apply`` whose ReLUs use another backward rule
        (``deconvnet``, ``guided``; see :mod:`jaxviz.attribution`); same forward values.
    """

    name: str
    params: Any
    layers: Mapping[str, tuple[int, ...]]
    apply: ApplyFn
    resolution: int | None = None
    normalize: Callable[[jax.Array], jax.Array] = tf_lite_normalize
    hidden_layers: Mapping[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    class_names: tuple[str, ...] | None = None
    batchnorm: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    batchnorm_eps: float = 1e-3
    apply_redirected: ApplyFn | None = None
    backward_rules: Mapping[str, ApplyFn] = dataclasses.field(default_factory=dict)

    def __repr__(self):  # one line: the params are megabytes (notebook cells, jit's error messages)
        n = sum(int(np.size(leaf)) for leaf in jax.tree.leaves(self.params))
        size = f", resolution={self.resolution}" if self.resolution else ""
        count = f"{n / 1e6:.3g}M" if n >= 1e6 else f"{n:,}"
        return f"Model('{self.name}', {len(self.layers)} layers, {count} params{size})"

    @property
    def target_layers(self) -> dict[str, tuple[int, ...]]:
        """Every point a target may read: ``layers`` and then ``hidden_layers`` (e.g. ``head.bn``, the
        BatchNorm output before ``head``'s ReLU6: Lucid's pre-ReLU targets, never dead at the start)."""
        return {**self.layers, **self.hidden_layers}

    def pre_activation(self, layer: str) -> str:
        """The point before ``layer``'s activation where the model has one (``<layer>.bn``, as :func:`load_model`'s
        models name their BatchNorm outputs), else ``layer`` itself (a linear layer, or a model without them)."""
        return f"{layer}.bn" if f"{layer}.bn" in self.hidden_layers else layer

    def check_layers(self, names: Sequence[str]) -> tuple[str, ...]:
        """Validates layer names; raises :class:`UnknownLayerError` suggesting close ones."""
        for name in names:
            if name not in self.layers and name not in self.hidden_layers:
                close = difflib.get_close_matches(name, list(self.layers), n=3, cutoff=0.5)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise UnknownLayerError(
                    f"unknown layer '{name}' for {self.name}{hint} (see `jaxviz layers --model {self.name}`)"
                )
        return tuple(names)

    def features(self, params, x: jax.Array, layers: Sequence[str] | None = None, *,
                 redirect: bool = False) -> dict:
        """Forward pass with intermediates. Pure in ``(params, x)``: jit and vmap freely.

        Args:
          params: the parameter pytree (usually ``model.params``).
          x: model input ``[N,H,W,3]`` (or one image ``[H,W,3]``), as made by ``preprocess``.
          layers: names to return; ``None`` returns every public layer, ``"logits"`` included.
          redirect: use redirected ReLU gradients (same values; see :mod:`jaxviz.models.activations`).

        Returns:
          ``{name: activation}`` with the batch axis as in ``x``.
        """
        names = None if layers is None else self.check_layers([layers] if isinstance(layers, str) else layers)
        single = x.ndim == 3
        apply = self.apply_redirected if redirect and self.apply_redirected is not None else self.apply
        out = apply(params, x[None] if single else x, names)
        out = {k: v for k, v in out.items() if k in self.layers} if names is None else {k: out[k] for k in names}
        return jax.tree.map(lambda a: a[0], out) if single else out

    def preprocess(self, images, *, crop_fraction: float = EVAL_CROP_FRACTION) -> np.ndarray:
        """uint8 images → float32 model input at the native resolution (pure; host numpy).

        The reference evaluation transform (README "Preprocessing"): the short side is resized
        (bicubic) to ``resolution / crop_fraction``, the central ``resolution`` square is kept,
        then ``normalize`` maps 0..255 to the model's range. Models without a ``resolution`` take
        the images as they are.

        Args:
          images: ``[H,W,3]``, ``[N,H,W,3]`` or a list of uint8 arrays of any sizes.
          crop_fraction: share of the resized short side kept by the crop; 0.875 is the reference,
            1.0 resizes the short side straight to ``resolution`` (and leaves images already at
            ``resolution`` untouched, e.g. crops made beforehand).

        Returns:
          ``[N,R,R,3]`` float32.
        """
        if self.resolution is None:
            batch = np.stack([np.asarray(im) for im in images]) if isinstance(images, list) else np.asarray(images)
            batch = batch[None] if batch.ndim == 3 else batch
        else:
            batch = as_uint8_batch(images, self.resolution, crop_fraction=crop_fraction)
        return np.asarray(self.normalize(batch.astype(np.float32)), np.float32)


def layer_shapes(apply: ApplyFn, params, input_shape) -> dict[str, tuple[int, ...]]:
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    order: list[str] = []

    def run(p, x):
        out = apply(p, x, None)
        order.extend(out)  # pytree flattening sorts dict keys; keep execution order
        return out

    shapes = jax.eval_shape(run, params, x)
    return {k: tuple(shapes[k].shape[1:]) for k in order}


def _flatten_names(tree, prefix=()) -> dict[str, jax.Array]:
    flat = {}
    for key, value in tree.items():
        key = str(key)
        path = prefix if key == "__call__" else (*prefix, key)
        if isinstance(value, Mapping):
            flat.update(_flatten_names(value, path))
        else:
            value = value[-1] if isinstance(value, (tuple, list)) else value
            flat[".".join(path) or "output"] = value
    return flat


def _select(flat: dict, names):
    if names is None:
        return flat
    return {n: flat[n] for n in names}


def from_linen(module, variables, input_shape: Sequence[int], *, name: str | None = None,
               normalize: Callable | None = None, **apply_kwargs) -> Model:
    """Wraps a user's ``flax.linen`` module: every submodule's output becomes a layer.

    Args:
      module: the linen module; called as ``module.apply(variables, x, **apply_kwargs)``.
      variables: its variables (``{"params": ..., "batch_stats": ...}``) — the ``params`` of the result.
      input_shape: one input's shape ``(H, W, C)`` (used to list layer shapes).
      name: model name for messages.
      normalize: maps 0..255 RGB to the input range (default ``x / 255``).
      **apply_kwargs: extra keyword arguments for ``apply`` (e.g. ``train=False``).

    Returns:
      A :class:`Model`; layer names are submodule paths joined by ``.`` and ``output``; its
      ``linen.BatchNorm`` layers (with ``batch_stats`` in ``variables``) are known to the BN prior.
    """

    def apply(variables, x, names):
        y, state = module.apply(variables, x, capture_intermediates=True, mutable=["intermediates"], **apply_kwargs)
        flat = _flatten_names(state["intermediates"])
        flat["output"] = y
        return _select(flat, names)

    from jaxviz.models.own import linen_batchnorm

    batchnorm, eps = linen_batchnorm(module, variables, input_shape, **apply_kwargs)
    return Model(
        name=name or type(module).__name__, params=variables, apply=apply,
        layers=layer_shapes(apply, variables, input_shape),
        normalize=normalize or (lambda x: x / 255.0),
        batchnorm=batchnorm, batchnorm_eps=eps or 1e-5,
    )


def from_nnx(module, input_shape: Sequence[int], *, name: str | None = None,
             normalize: Callable | None = None) -> Model:
    """Wraps a user's ``flax.nnx`` module: every submodule's ``__call__`` output becomes a layer.

    The module is split into a static graph and a ``State``; ``params`` of the result is that
    state, so ``features`` stays a pure function of ``(params, x)``.

    Args:
      module: the nnx module (called as ``module(x)``).
      input_shape: one input's shape ``(H, W, C)``.
      name: model name for messages.
      normalize: maps 0..255 RGB to the input range (default ``x / 255``).

    Returns:
      A :class:`Model`; layer names are attribute paths joined by ``.`` and ``output``, listed in
      call order; its ``nnx.BatchNorm`` layers are known to the BN prior.

    Raises:
      UsageError: the module is in training mode (BatchNorm with batch statistics, active
        Dropout): call ``module.eval()`` first.
    """
    from flax import nnx

    from jaxviz.models.own import call_order, check_nnx_eval, nnx_batchnorm

    check_nnx_eval(module, name or type(module).__name__)
    batchnorm, eps = nnx_batchnorm(module)
    graphdef, state = nnx.split(module)

    def apply(state, x, names):
        live = nnx.merge(graphdef, state)
        y, captured = nnx.capture(live, nnx.Intermediate, method_outputs=nnx.Intermediate)(x)
        flat = _flatten_names(nnx.to_pure_dict(captured))
        flat.pop("output", None)
        flat["output"] = y
        return _select(flat, names)

    shapes = layer_shapes(apply, state, input_shape)
    order = call_order(apply, state, input_shape)  # nnx reports them sorted by name
    return Model(
        name=name or type(module).__name__, params=state, apply=apply,
        layers={k: shapes[k] for k in order},
        normalize=normalize or (lambda x: x / 255.0),
        batchnorm={k: batchnorm[k] for k in order if k in batchnorm}, batchnorm_eps=eps or 1e-5,
    )
