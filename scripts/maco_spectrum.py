"""Measures MaCo's magnitude spectrum on real photos and writes jaxviz/assets/maco_spectrum.npz.

Usage: python scripts/maco_spectrum.py [PHOTO_DIR] [--sizes 128,224]
(PHOTO_DIR defaults to the ImageNet sample beside the project, one photo per class.)

Stores, per size S, ``z{S}`` (decorrelated colour space) and ``rgb{S}`` (per RGB channel): the
root-mean-square rfft2 magnitude of the photos resized whole to S (``jaxviz.image.param.photo_spectrum``),
as float16; ``mean``: their mean colour; ``info``: JSON with the command, folder and photo count.
Only these derived statistics ship, never the photos.
"""

import argparse
import json
import os
import sys

import numpy as np

from jaxviz.common.images import read_image
from jaxviz.image import param
from jaxviz.realism import default_real


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default=default_real())
    parser.add_argument("--sizes", default="128,224")
    parser.add_argument("--out", default=param.MACO_SPECTRUM_PATH)
    args = parser.parse_args()
    if not args.folder or not os.path.isdir(args.folder):
        print("no photo folder (pass one)", file=sys.stderr)
        return 2
    files = sorted(f for f in os.listdir(args.folder) if f.lower().endswith((".jpeg", ".jpg", ".png")))
    photos = [read_image(os.path.join(args.folder, f), draft_size=512)[0] for f in files]
    arrays, mean = {}, None
    for size in (int(s) for s in args.sizes.split(",")):
        for prefix, decorrelate in (("z", True), ("rgb", False)):
            magnitude, mean = param.photo_spectrum(photos, size, decorrelate=decorrelate)
            arrays[f"{prefix}{size}"] = magnitude.astype(np.float16)
            std = np.sqrt((magnitude[:, 1 : (size + 1) // 2] ** 2).sum((0, 1)) * 2
                          + (magnitude[:, [0] + ([size // 2] if size % 2 == 0 else [])] ** 2).sum((0, 1))) / size
            print(f"{prefix}{size}: per-channel std of a random-phase image {np.round(std, 4)}")
    info = {"command": "python scripts/maco_spectrum.py " + " ".join(sys.argv[1:]),
            "folder": os.path.basename(os.path.normpath(args.folder)), "photos": len(photos),
            "view": "short side resized, centre square; mean removed; periodic component; RMS over photos",
            "color_sqrt": param.COLOR_SQRT.tolist()}
    np.savez_compressed(args.out, mean=mean.astype(np.float32), info=np.array(json.dumps(info)), **arrays)
    print(f"mean colour {np.round(mean, 4)}; wrote {args.out} ({os.path.getsize(args.out) // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
