"""Golden runs of every built-in recipe (tests/golden/recipes*.npz, one file per CPU kind), made before a
refactor that must not change results: `python scripts/make_recipe_golden.py [--out PATH]`.

Each case renders two targets (a class logit and a channel) at a small size and few passes on the real
EfficientNet-Lite0; the file holds the final images, activations and objective curves, and the machine
they were made on (the test asserts bit-identity on the same CPU and JAX; elsewhere the first passes' objective
values within a tight tolerance, since Adam's first steps amplify last-bit differences into visible ones).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import numpy as np  # noqa: E402

TARGETS = ("logits:207", "blocks.10:7")
# name -> (recipe name, recipe options, passes)
CASES = {
    "lucid": ("lucid", {"size": 112}, 24),
    "maco": ("maco", {"size": 64}, 24),
    "deepinversion": ("deepinversion", {"size": 64}, 24),
    "deepinversion_pooled": ("deepinversion", {"size": 64, "pooled": True}, 24),
    "jaxviz": ("jaxviz", {"size": 64}, 24),
    "outliers": ("outliers", {"size": 64, "warmup": 8, "every": 4}, 24),
    "quantile": ("quantile", {"size": 64}, 24),
    "gaussian": ("gaussian", {"size": 64}, 24),
}


def cpu_name() -> str:
    """The CPU's model name and its vector instruction sets: XLA picks its code by those, and two CPUs sold under
    one name ("AMD EPYC") with and without AVX-512 give different bits that the optimization then amplifies."""
    return f"{_model_name()} [{' '.join(_vector_flags())}]"


def _vector_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return sorted(x for x in line.split(":", 1)[1].split()
                                  if x.startswith(("avx", "fma", "amx", "sse4", "f16c")))
    except OSError:
        pass
    return []


def _model_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def run_case(model, name):
    import jaxviz
    from jaxviz import recipes

    recipe_name, options, passes = CASES[name]
    recipe = recipes.get(recipe_name, **options)
    config = recipe.config(steps=passes, batch_size=2, seed=3)
    result = jaxviz.render_images(model, list(TARGETS), config=config, recipe=recipe, progress=False)
    return result


def run_groups(model):
    import jaxviz
    from jaxviz import objectives, recipes

    recipe = recipes.get("maco", size=64)
    target = objectives.channel("blocks.10", 7) + 10.0 * objectives.diversity("blocks.10")
    config = recipe.config(steps=8, seed=3)
    return jaxviz.render_images(model, [target], config=config, recipe=recipe, images_per_target=2, progress=False)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "golden",
                                                      "recipes.npz"))
    args = parser.parse_args(argv)
    import jax

    import jaxviz

    model = jaxviz.load_model("efficientnet_lite0")
    arrays = {}
    for name in (*CASES, "groups"):
        result = run_groups(model) if name == "groups" else run_case(model, name)
        arrays[f"{name}/images"] = result.images
        arrays[f"{name}/activation"] = result.activation
        arrays[f"{name}/history"] = result.history
        print(name, result.activation, file=sys.stderr)
    arrays["machine"] = np.array(f"{cpu_name()}|jax {jax.__version__}|devices {jax.device_count()}")
    np.savez_compressed(args.out, **arrays)
    print(args.out)


if __name__ == "__main__":
    main()
