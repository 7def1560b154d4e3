"""The jaxviz cache folder, and JAX's persistent compilation cache inside it (``<cache folder>/xla``).

What is cached, the switches and the folder rule: README "Start-up". The setting is JAX's, so it holds for
the whole process, the user's own programs included; a folder the user gave JAX
(``jax.config.update("jax_compilation_cache_dir", ...)``) is left alone. Entries are written once per key:
two processes sharing the folder may both compile a program the first time, and a reader racing a writer
sees a miss at worst.
"""

from __future__ import annotations

import os

import jax

__all__ = ["cache_dir", "compile_cache_dir", "compile_cache_disabled", "enable_compile_cache"]

_OFF = ("0", "false", "no", "off")
# Programs that compile faster than this are not worth a file (JAX's own default is 1 s, which
# would leave out the render's `init` program, ~0.6 s on a 2-core CPU).
DEFAULT_MIN_COMPILE_TIME_S = 0.1
# The folder this module gave JAX, to tell it from one the user set (theirs wins).
_ours: dict = {"path": None}


def cache_dir() -> str:
    """The jaxviz cache folder: ``$JAXVIZ_CACHE_DIR``, else ``$XDG_CACHE_HOME/jaxviz`` or ``~/.cache/jaxviz``."""
    root = os.environ.get("JAXVIZ_CACHE_DIR")
    if not root:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "jaxviz")
    return root


def compile_cache_disabled() -> bool:
    """True when ``JAXVIZ_COMPILE_CACHE`` is ``0``, ``false``, ``no`` or ``off``."""
    return os.environ.get("JAXVIZ_COMPILE_CACHE", "1").strip().lower() in _OFF


def compile_cache_dir() -> str | None:
    """The folder JAX's persistent compilation cache uses now (``None``: off)."""
    if not jax.config.jax_enable_compilation_cache:
        return None
    return jax.config.jax_compilation_cache_dir or None


def enable_compile_cache(path: str | None = None, *,
                         min_compile_time_s: float = DEFAULT_MIN_COMPILE_TIME_S) -> str | None:
    """Turns on JAX's persistent compilation cache (called by the CLI, ``render`` and ``collect_moments``).

    Does nothing when ``JAXVIZ_COMPILE_CACHE=0``, or when the user already gave JAX a cache
    folder (that one is kept and returned). Safe to call many times.

    Args:
      path: cache folder; default ``<cache_dir()>/xla``.
      min_compile_time_s: programs that compile faster are not stored.

    Returns:
      The folder in use, or ``None`` when the cache is off (disabled, or the folder cannot be
      created or written: caching is an optimization and never an error).
    """
    if compile_cache_disabled():
        return None
    current = jax.config.jax_compilation_cache_dir
    if current and current != _ours["path"]:
        return compile_cache_dir()  # the user's own setting wins
    path = os.path.abspath(os.path.expanduser(path or os.path.join(cache_dir(), "xla")))
    if path == current:
        return compile_cache_dir()
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)  # the entries are code this process will run
    except OSError:
        return None
    if not os.access(path, os.W_OK | os.X_OK):
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_s))
    if current:  # moving our own cache: JAX opened the old folder already
        from jax.experimental.compilation_cache import compilation_cache

        compilation_cache.reset_cache()
    _ours["path"] = path
    return compile_cache_dir()
