"""The ground floor: helpers every stage may use and that use no stage.

:mod:`~jaxviz.common.errors` (every user-facing error), :mod:`~jaxviz.common.files` (atomic writes,
JSON, folder locks), :mod:`~jaxviz.common.images` (decoding, the one resizer),
:mod:`~jaxviz.common.progress`, :mod:`~jaxviz.common.cache` (the persistent compilation cache),
:mod:`~jaxviz.common.hardware` (CPU devices and compiler options).
"""

import os

__version__ = "0.1.0"
ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")  # shipped data files
