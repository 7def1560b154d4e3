"""The ``>>>`` examples in the entry points' docstrings run and print what they show."""

import doctest
import importlib

import pytest

FAST = ["jaxviz.recipes.builtin", "jaxviz.priors.suppress", "jaxviz.stats.statistics"]
RENDERING = ["jaxviz.render.loop", "jaxviz.api"]  # each renders on the real model (a few seconds of compile)


def _run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0, f"{result.failed} example(s) of {name} failed (run python -m doctest -v on it)"


@pytest.mark.parametrize("name", FAST)
def test_examples(name):
    _run(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", RENDERING)
def test_rendering_examples(name):
    _run(name)
