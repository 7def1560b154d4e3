"""The ``jaxviz`` command. Each sub-command lives in its own module with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from jaxviz.cli._common import Parser, as_flags, check_model
from jaxviz.common.errors import JaxvizError

# Sub-command modules, in the order `jaxviz --help` lists them.
_COMMANDS = ("layers", "classify", "stats", "visualize", "atlas", "demo", "attribute", "outliers")


def build_parser() -> Parser:
    parser = Parser(prog="jaxviz", description="Feature visualization for JAX/Flax networks.")
    parser.add_argument("--no-compile-cache", action="store_true",
                        help="do not keep compiled programs on disk (also: JAXVIZ_COMPILE_CACHE=0)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    import importlib

    for name in _COMMANDS:
        importlib.import_module(f"jaxviz.cli.{name}").register(sub)
    for command in sub.choices.values():  # accepted after the sub-command too
        command.add_argument("--no-compile-cache", action="store_true", default=argparse.SUPPRESS,
                             help="do not keep compiled programs on disk (also: JAXVIZ_COMPILE_CACHE=0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 failure, 2 usage error, 130 interrupted)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2, already printed on one line)
        return e.code if isinstance(e.code, int) else 2
    from jaxviz.common import cache, hardware

    hardware.use_cpu_cores(quiet=True)  # one CPU device per core, unless the user set a count
    if args.no_compile_cache:
        os.environ["JAXVIZ_COMPILE_CACHE"] = "0"  # the library entry points check it too
    cache.enable_compile_cache()  # compiled programs are reused by the next run (README, "Start-up")
    try:
        if isinstance(getattr(args, "model", None), str):
            args.model = check_model(args.model)  # only models with published weights (README "Using it")
        return int(args.run(args) or 0)
    except JaxvizError as e:
        print(f"jaxviz: error: {as_flags(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jaxviz: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def entry() -> None:
    """The console script (``jaxviz``, ``python -m jaxviz``): :func:`main`, then a quick exit.

    Once ``main`` returns, every output file is written and closed and every checkpoint saved;
    what is left is the interpreter's teardown of JAX's backend and thousands of modules (~0.4 s
    of a 4 s warm start on a 2-core CPU, README "Start-up"). The exit handlers still run and the
    standard streams are flushed; only that teardown is skipped.
    """
    import atexit

    code = main()
    atexit._run_exitfuncs()  # what a normal exit runs first (logging, tqdm, JAX's own clean-up)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more can reach it
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
