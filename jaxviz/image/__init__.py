"""The image being optimized: how parameters become pixels, and the random transforms before each pass.

- :mod:`~jaxviz.image.param`: parameterizations (``pixel``, ``fourier``, ``maco``; the protocol);
- :mod:`~jaxviz.image.color`, :mod:`~jaxviz.image.spectrum`: the decorrelated colour space and the
  spectra they use;
- :mod:`~jaxviz.image.transforms`: robustness transforms (the protocol, chains, the anchors' presets),
  built on :mod:`~jaxviz.image.resample` (one bilinear resampler) and :mod:`~jaxviz.image.crops`
  (the anchors' crops, noise, flips and rolls).
"""

from jaxviz.image import color, crops, param, resample, spectrum, transforms  # noqa: F401

__all__ = ["color", "crops", "param", "resample", "spectrum", "transforms"]
