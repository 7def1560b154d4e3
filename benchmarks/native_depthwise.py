"""Would a native kernel or a BatchNorm fold speed up the depthwise part of the step? ``python -m benchmarks.native_depthwise``

The depthwise convolutions with their BatchNorm and ReLU6 are the largest memory-bound part of the CPU render
step (README "Performance"). This times, on one core, one image's forward + input gradient of
``relu6(depthwise(x, k) · mult + shift)`` at the depthwise layers of EfficientNet-Lite0 at 224 px, three ways:

- **jax**: what the model runs (``jaxviz.models.layers.depthwise_conv``, the shifted taps with their
  hand-written backward pass; XLA fuses the BatchNorm and ReLU6 into it);
- **folded**: the BatchNorm multiplier folded into the kernel (``depthwise(x, k · mult) + shift``), the
  algebraic fold issue 23 asked for;
- **native**: one C++ XLA FFI call forward (taps + BatchNorm + ReLU6 in one pass) and one backward (the
  ReLU6 mask, the multiplier and the transposed taps in one pass), ``benchmarks/native/*.cc``, compiled here
  with ``g++ -O3 -march=native`` against jaxlib's FFI headers (needs g++).

Prints per-layer milliseconds, the largest difference to the jax path, and the totals weighted by how often
each shape occurs in the network. The step itself only speeds up by the share of this part in it.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# (side, channels, kernel, stride, occurrences) of Lite0's depthwise convs at 224 px
LAYERS = ((112, 32, 3, 1, 1), (112, 96, 3, 2, 1), (56, 144, 3, 1, 1), (56, 144, 5, 2, 1), (28, 240, 5, 1, 1),
          (28, 240, 3, 2, 1), (14, 480, 3, 1, 2), (14, 480, 5, 1, 1), (14, 672, 5, 1, 2), (14, 672, 5, 2, 1),
          (7, 1152, 5, 1, 3), (7, 1152, 3, 1, 1))


def _build() -> str:
    import jax

    out = os.path.join(tempfile.mkdtemp(prefix="jaxviz-native-"), "libdepthwise.so")
    source = os.path.join(HERE, "native", "depthwise_bn_relu6.cc")
    subprocess.run(["g++", "-O3", "-march=native", "-shared", "-fPIC", "-std=c++17", "-w", f"-I{jax.ffi.include_dir()}",
                    source, "-o", out], check=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.native_depthwise", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=20, help="calls per timing (best of 3 timings)")
    args = p.parse_args(argv)
    # one core, one thread: each CPU device of a render runs on its own core (jaxviz.use_cpu_cores)
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxviz.models.layers import depthwise_conv, same_padding

    library = ctypes.cdll.LoadLibrary(_build())
    for name in ("DwFwd", "DwBwd"):
        jax.ffi.register_ffi_target(f"jaxviz_bench_{name}", jax.ffi.pycapsule(getattr(library, name)), platform="cpu")

    def relu6(z):
        return jnp.minimum(jnp.maximum(z, 0.0), 6.0)

    def plain(x, k, mult, shift, s):
        return relu6(depthwise_conv(x, k[:, :, None, :], s, "shifted") * mult + shift)

    def folded(x, k, mult, shift, s):
        return relu6(depthwise_conv(x, (k * mult)[:, :, None, :], s, "shifted") + shift)

    def attrs(x, k, s):
        return dict(stride=np.int64(s), pad_top=np.int64(same_padding(x.shape[1], k.shape[0], s)[0]),
                    pad_left=np.int64(same_padding(x.shape[2], k.shape[0], s)[0]))

    @functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
    def native(x, k, mult, shift, s):
        return native_fwd(x, k, mult, shift, s)[0]

    def native_fwd(x, k, mult, shift, s):
        n, h, w, c = x.shape
        out = jax.ShapeDtypeStruct((n, -(-h // s), -(-w // s), c), jnp.float32)
        y = jax.ffi.ffi_call("jaxviz_bench_DwFwd", out)(x, k, mult, shift, **attrs(x, k, s))
        return y, (y, x, k, mult)

    def native_bwd(s, residuals, g):
        y, x, k, mult = residuals
        dx = jax.ffi.ffi_call("jaxviz_bench_DwBwd", jax.ShapeDtypeStruct(x.shape, jnp.float32))(
            g, y, k, mult, **attrs(x, k, s))
        return dx, jnp.zeros_like(k), jnp.zeros_like(mult), jnp.zeros_like(mult)  # only the image's gradient

    native.defvjp(native_fwd, native_bwd)

    def best_ms(f, *a):
        jax.block_until_ready(f(*a))
        times = []
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(args.repeats):
                r = f(*a)
            jax.block_until_ready(r)
            times.append((time.perf_counter() - t) / args.repeats * 1e3)
        return min(times)

    rng = np.random.default_rng(0)
    ways = {"jax": plain, "folded": folded, "native": native}
    totals = dict.fromkeys(ways, 0.0)
    print(f"{'layer':>22s}  " + "  ".join(f"{w + ' ms':>10s}" for w in ways) + "   max |diff| of dx vs jax")
    for side, c, kk, s, count in LAYERS:
        x = jnp.asarray(rng.normal(size=(1, side, side, c)), jnp.float32)
        k = jnp.asarray(rng.normal(size=(kk, kk, c)) * 0.3, jnp.float32)
        mult = jnp.asarray(rng.uniform(0.5, 1.5, c), jnp.float32)
        shift = jnp.asarray(rng.normal(size=c), jnp.float32)
        g = jnp.asarray(rng.normal(size=(1, -(-side // s), -(-side // s), c)), jnp.float32)
        ms, grads = {}, {}
        for name, f in ways.items():
            step = jax.jit(lambda x, g, f=f: jax.vjp(lambda x: f(x, k, mult, shift, s), x)[1](g)[0])
            ms[name], grads[name] = best_ms(step, x, g), np.asarray(step(x, g))
            totals[name] += count * ms[name]
        diff = max(float(np.abs(grads[n] - grads["jax"]).max()) for n in ways)
        print(f"{side:>4d}x{side}x{c:<5d} k{kk} s{s} x{count}  " + "  ".join(f"{ms[w]:10.3f}" for w in ways)
              + f"   {diff:.1e}")
    print("weighted total, ms: " + ", ".join(f"{w} {t:.2f}" for w, t in totals.items())
          + f"  (folded / jax {totals['folded'] / totals['jax']:.2f}, native / jax {totals['native'] / totals['jax']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
