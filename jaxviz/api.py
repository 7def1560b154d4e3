"""The short path: ``jaxviz.visualize(model, "logits:207")`` → a :class:`jaxviz.render.RenderResult`.

One call with the best measured recipe (:data:`jaxviz.recipes.DEFAULT`, README "Experiments"),
like Lucent's ``render_vis``; everything else of :func:`jaxviz.render.render_images` is a keyword away.
"""

from __future__ import annotations

__all__ = ["visualize"]


def visualize(model, targets, *, recipe=None, size: int | None = None, steps: int | None = None, seed: int = 0,
              batch_size: int = 8, out: str | None = None, **render_options):
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
      out: also write the gallery there (:meth:`RenderResult.save`).
      **render_options: :func:`jaxviz.render.render_images` keywords (``prior``, ``parameterization``,
        ``progress=False``, ``images_per_target``...).

    Returns:
      A :class:`jaxviz.render.RenderResult` (shows itself as a gallery in a notebook).
    """
    from jaxviz import recipes
    from jaxviz.models import load_model
    from jaxviz.render.loop import render_images

    if isinstance(model, str):
        model = load_model(model)
    recipe = recipes.resolve(recipe, size=size or getattr(model, "resolution", None) or 224)
    config = recipe.config(steps=recipe.passes if steps is None else steps, seed=seed, batch_size=batch_size)
    result = render_images(model, targets, config=config, recipe=recipe, **render_options)
    if out is not None:
        result.save(out)
    return result
