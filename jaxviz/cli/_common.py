"""Flags and helpers shared by sub-commands, and the one table from library argument names to flags."""

from __future__ import annotations

import argparse
import re
import sys

from jaxviz.models import MODELS, PRETRAINED

# The library's checks name Python arguments (``RenderConfig.steps``, ``batch_size=``); the CLI
# shows the same messages with the flag the user typed. Longest names first.
FLAG_NAMES = {
    "RenderConfig.learning_rate": "--lr",
    "RenderConfig.checkpoint_every": "--checkpoint-every",
    "RenderConfig.redirect_steps": "--redirect-steps",
    "RenderConfig.compute_dtype": "--precision",
    "RenderConfig.batch_size": "--batch-size",
    "RenderConfig.steps": "--steps",
    "RenderConfig.seed": "--seed",
    "checkpoint_every=": "--checkpoint-every",
    "checkpoint_dir=": "--checkpoint-dir",
    "prior='bn'": "--prior bn",
    "shrinkage='oas'": "--shrinkage oas",
    "images_per_channel=": "--images-per-channel",
    "max_images=": "--max-images",
    "batch_size=": "--batch-size",
    "force=True": "--force",
    "steps=": "--steps",
    "out=": "--out",
    "size=": "--size",
    "k=": "--examples",
    "seed=": "--seed",
}
_FLAG_PATTERN = re.compile("|".join(rf"(?<![\w.]){re.escape(k)}" for k in FLAG_NAMES))


def as_flags(message: str) -> str:
    """A library error message with argument names replaced by flags, on one line."""
    return " ".join(_FLAG_PATTERN.sub(lambda m: FLAG_NAMES[m.group(0)], str(message)).split())


class Parser(argparse.ArgumentParser):
    """``argparse`` whose usage errors are one line (``jaxviz CMD: error: ...``), exit status 2."""

    def error(self, message):
        print(f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def whole(text: str) -> int:
    """``type=`` of integer flags: ASCII digits only (``int()`` also reads '٣' and '1_000')."""
    if not re.fullmatch(r"[+-]?[0-9]{1,30}", text.strip(), flags=re.ASCII):
        raise argparse.ArgumentTypeError(f"expected a whole number in ASCII digits, got {text[:40]!r}")
    return int(text)


def number(text: str) -> float:
    """``type=`` of real-valued flags: ASCII only (``nan``/``inf`` pass here and are refused by the checks)."""
    if not text.isascii() or len(text) > 40:
        raise argparse.ArgumentTypeError(f"expected a number in ASCII, got {text[:40]!r}")
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def check_model(name: str) -> str:
    """``--model`` among the models with published weights (the only ones the CLI can load).

    Raises:
      MissingWeightsError: a known model without weights; UnknownModelError: another name.
    """
    import difflib

    from jaxviz.common.errors import UnknownModelError

    key = str(name).strip().lower().replace("-", "_")
    if key in MODELS and key not in PRETRAINED:
        from jaxviz.common.errors import MissingWeightsError

        raise MissingWeightsError(f"no weights are published for {key} (available: {', '.join(PRETRAINED)}; "
                                  f"random weights from Python: load_model('{key}', pretrained=False))")
    if key not in PRETRAINED:
        close = difflib.get_close_matches(key, PRETRAINED, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UnknownModelError(f"unknown model '{str(name)[:60]}'{hint} (available: {', '.join(PRETRAINED)})")
    return key


def add_model_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default="efficientnet_lite0", metavar="M",
        help=f"model name ({', '.join(PRETRAINED)}; default efficientnet_lite0)",
    )
