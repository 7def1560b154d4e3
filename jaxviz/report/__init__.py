"""What a run looks like: the result object, PNGs, the HTML gallery and metrics.json.

- :mod:`~jaxviz.report.result`: :class:`RenderResult` (images and traces of a run);
- :mod:`~jaxviz.report.gallery`: PNG, contact sheets, the gallery page, metrics.json.
"""

from jaxviz.report import gallery, result  # noqa: F401
from jaxviz.report.gallery import *  # noqa: F401,F403
from jaxviz.report.gallery import __all__ as _gallery_all
from jaxviz.report.result import RenderResult

__all__ = ["RenderResult", "gallery", "result", *_gallery_all]
