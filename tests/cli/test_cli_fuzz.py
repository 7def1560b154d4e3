"""Every CLI flag and target string with hostile values: exit status 2 and exactly one line on stderr.

Values are checked before the model loads where they can be, so most cases take milliseconds; the
table is built so that every case is invalid (a valid one would start a long run).
"""

import os

import numpy as np
from PIL import Image

from jaxviz.cli import main

HUGE = str(2**63)
LONG = "7" * 5000
NUMBERS = ["٣", "²", "nan", "inf", "-inf", "-1", HUGE, LONG, ""]  # invalid for every whole-number flag
POSITIVE = ["0", *NUMBERS]  # ... and 0 for flags that need at least 1
FLOATS = ["nan", "inf", "-inf", "-1", "٣", "", LONG]
EVERY = ["0", "-1", "٣", "nan", "", LONG]  # a huge --checkpoint-every is valid (no checkpoint before the end)


def _cases():
    vis = ["visualize", "--target", "logits:1", "--steps", "2"]
    stats = ["stats", "--layers", "blocks.2"]
    demo = ["demo", "--steps", "40"]
    cases = []
    for flag, values in [("--steps", POSITIVE), ("--size", POSITIVE), ("--seed", NUMBERS),
                         ("--batch-size", POSITIVE), ("--checkpoint-every", EVERY),
                         ("--redirect-steps", NUMBERS), ("--lr", [*FLOATS, "0"]),
                         ("--param", ["", "fourier2", LONG]), ("--prior", ["", "nan", LONG]),
                         ("--transforms", ["x"]), ("--precision", ["float16"])]:
        cases += [(vis + [flag, v], "vis") for v in values]
    # prior options without a prior that takes them
    for flag in ("--weight", "--top-k", "--every", "--warmup", "--quantile"):
        cases += [(vis + [flag, v], "vis") for v in ("nan", "0", "-1", HUGE)]
    cases += [(vis + ["--prior", "outliers"], "vis")]  # needs --stats
    for target in ["", ":", "blocks.99", "logits:", "logits:²", "logits:٣", "logits:-1", "logits:1.5", "logits:nan",
                   f"logits:{HUGE}", f"logits:{LONG}", "x" * 5000, "logits:1:2", "\x00:1"]:
        cases.append((["visualize", "--target", target, "--steps", "2"], "vis"))
    for flag, values in [("--batch-size", POSITIVE), ("--size", [*POSITIVE, "7", "4096"]), ("--seed", NUMBERS),
                         ("--max-images", POSITIVE), ("--checkpoint-every", EVERY),
                         ("--view", ["", "patch2", "pixels", LONG]), ("--shrinkage", ["nan", "-1", "2", "inf", "x"])]:
        cases += [(stats + [flag, v], "stats") for v in values]
    cases += [(["stats", "--layers", v], "stats") for v in ["", ",", " , "]]
    for flag, values in [("--steps", POSITIVE), ("--size", POSITIVE)]:
        cases += [(["demo", flag, v], "demo") for v in values]
    cases += [(demo + ["--target", v], "demo") for v in ["logits:²", "", "logits"]]
    cases += [(["classify", "--top", v, "x.png"], "classify") for v in POSITIVE]
    cases += [(["classify", v], "classify") for v in ["", "/nonexistent.png", LONG, "thin.png", "fifo.png"]]
    cases += [([cmd, "--model", v], cmd) for cmd in ("layers",) for v in ["", "nan", LONG, "efficientnet_lite9"]]
    return cases


# a few cases that only fail once the model is loaded (layer names, statistics): ~1 s each
SLOW = [
    (["visualize", "--target", "blocks.99:1", "--steps", "2"], "vis"),
    (["visualize", "--target", "logits:1000", "--steps", "2"], "vis"),
    (["visualize", "--target", "logits:5-2", "--steps", "2"], "vis"),
    (["visualize", "--target", "logits:1", "--steps", "2", "--prior", "bn", "--weight", "nan"], "vis"),
    (["visualize", "--target", "logits:1", "--steps", "2", "--prior", "outliers", "--stats", "/nonexistent"], "vis"),
    (["visualize", "--target", "logits:1", "--steps", "2", "--out", "o" * 5000], "raw"),
    (["visualize", "--target", "logits:1", "--steps", "2", "--out", ""], "raw"),
    (["stats", "--layers", "nope", "--out", "s"], "raw"),
    (["stats", "--layers", "blocks.2", "--out", "s", "--data", "folder:/nonexistent"], "raw"),
    (["stats", "--layers", "blocks.2", "--out", "s", "--data", "weird"], "raw"),
]


def test_every_flag_and_target_fails_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.zeros((1, 15000, 3), np.uint8)).save(tmp_path / "thin.png")
    os.mkfifo(tmp_path / "fifo.png")
    out = str(tmp_path / "out")
    failures = []
    for argv, kind in _cases() + SLOW:
        if kind in ("vis", "stats"):
            argv = [*argv, "--out", out]
        if kind in ("vis", "stats", "demo", "raw"):
            argv = [*argv, "--quiet"]
        code = main(argv)
        err = capsys.readouterr().err
        if code != 2 or err.count("\n") != 1 or "Traceback" in err:
            failures.append((argv, code, err[:300]))
    assert not failures, failures[:5]
    assert not os.path.exists(os.path.join(out, "index.html"))
