"""Recomputes the colour statistics stored in jaxviz/param.py from the embedded photos.

Usage: python scripts/color_stats.py   (prints COLOR_SQRT and COLOR_MEAN to paste into param.py,
and whether the stored values still match)
"""

import numpy as np

from jaxviz.data import embedded_photos
from jaxviz.image import param


def main() -> int:
    mean, root = param.color_stats(embedded_photos().values())
    rows = ",\n".join("    [" + ", ".join(f"{v:.6f}" for v in row) + "]" for row in root)
    print(f"COLOR_SQRT = np.array([\n{rows},\n], np.float32)")
    print("COLOR_MEAN = np.array([" + ", ".join(f"{v:.6f}" for v in mean) + "], np.float32)")
    ok = np.allclose(root, param.COLOR_SQRT, atol=1e-5) and np.allclose(mean, param.COLOR_MEAN, atol=1e-5)
    print("stored values match" if ok else "stored values differ: update jaxviz/param.py")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
