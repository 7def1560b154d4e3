"""Flags and helpers shared by sub-commands."""

from __future__ import annotations

import argparse

from jaxviz.models import MODELS


def add_model_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default="efficientnet_lite0", metavar="M",
        help=f"model name ({', '.join(MODELS)}; default efficientnet_lite0)",
    )
