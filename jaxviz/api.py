"""The short path: ``jaxviz.visualize(model, "logits:207")`` → a :class:`jaxviz.render.RenderResult`.

One call with the best measured recipe (:data:`jaxviz.recipes.DEFAULT`, README "Experiments"),
like Lucent's ``render_vis``; a prior is taken by name with its statistics, as the CLI takes it, and
everything else of :func:`jaxviz.render.render_images` is a keyword away.
"""

from __future__ import annotations

__all__ = ["visualize"]


def visualize(model, targets, *, recipe=None, size: int | None = None, steps: int | None = None, seed: int = 0,
              batch_size: int = 8, out: str | None = None, prior: str | None = None, stats=None, layers=None,
              weight: float | None = None, learning_rate: float | None = None, force: bool = False,
              **render_options):
    """Renders ``targets`` on ``model`` with a whole recipe and returns the result.

    Args:
      model: a :class:`jaxviz.Model` or a model name (``efficientnet_lite0``).
      targets: a target string (``logits:207``, ``blocks.10:7``, ``blocks.7``, ``head:0-7``), an
        objective, or a list of them.
      recipe: a :class:`jaxviz.recipes.Recipe` or name; default :data:`jaxviz.recipes.DEFAULT`.
      size: side in px of what the model sees (default the model's resolution, else 224); a named
        recipe is built at it.
      steps: forward-backward passes per image (default the recipe's).
      seed: PRNG seed.
      batch_size: targets optimized together.
      out: also write the gallery there (:meth:`RenderResult.save`); claimed before the render (a folder
        holding files jaxviz did not write is refused unless ``force``; README "Guarantees").
      prior: a prior name (``outliers``, ``quantile``...; ``"none"``) replacing the recipe's, or a prior
        object; default the recipe's.
      stats, layers, weight: the prior's statistics (a ``jaxviz stats`` folder or
        :func:`jaxviz.collect_stats`'s result), which of their layers, and its weight (as ``--stats``,
        ``--stats-layers``, ``--weight``).
      learning_rate: the recipe optimizer's learning rate (``--lr``).
      **render_options: :func:`jaxviz.render.render_images` keywords (``parameterization``,
        ``progress=False``, ``images_per_target``...).

    Returns:
      A :class:`jaxviz.render.RenderResult` (shows itself as a gallery in a notebook).

    >>> import jaxviz
    >>> result = jaxviz.visualize("efficientnet_lite0", "logits:207", size=64, steps=40, prior="outliers",
    ...                           weight=5.0, progress=False)
    >>> result.record["prior"].startswith("outliers(layers=['blocks.2', 'blocks.4']")
    True
    """
    from jaxviz import recipes, registry
    from jaxviz.models import load_model
    from jaxviz.render.loop import render_images

    if isinstance(model, str):
        model = load_model(model)
    size = size or getattr(model, "resolution", None) or 224
    recipe = recipes.resolve(recipe, size=size)
    prior_object = None if prior is None or isinstance(prior, str) else prior
    recipe = registry.edit_recipe(recipe, prior=prior if isinstance(prior, str) else None, learning_rate=learning_rate,
                                  size=size, stats=stats, layers=list(layers) if layers else None, weight=weight)
    config = recipe.config(steps=recipe.passes if steps is None else steps, seed=seed, batch_size=batch_size)
    if out is None:
        return render_images(model, targets, config=config, recipe=recipe, prior=prior_object, **render_options)
    from jaxviz.common import outputs
    from jaxviz.report.gallery import GALLERY_FILES

    with outputs.claim(out, force=force, what="out=", names=GALLERY_FILES) as folder:
        result = render_images(model, targets, config=config, recipe=recipe, prior=prior_object, **render_options)
        result.save(folder.path, force=force)
    return result
