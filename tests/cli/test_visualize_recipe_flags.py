"""Every recipe × every render flag: the record shows the recipe's own parts with exactly the flag applied,
or the flag is refused in one line (exit 2) — never ignored, never a silent swap of a part."""

import json
import os

import pytest

from jaxviz import priors, registry
from jaxviz.cli import build_parser, main
from jaxviz.cli.visualize import recipe_from_flags, render_config, stats_source
from jaxviz.common.errors import UsageError
from jaxviz.image import param
from jaxviz.render.loop import build_parts
from jaxviz.stats.store import shipped_stats_dir

RECIPES = registry.names("recipe")
SHIPPED = shipped_stats_dir("efficientnet_lite0", "pixel")


def _args(recipe, *flags):
    return build_parser().parse_args(["visualize", "--target", "logits:1", "--out", "unused", "--recipe", recipe,
                                      "--size", "64", *flags])


def _record(model, recipe_name, *flags):
    args = _args(recipe_name, *flags)
    recipe = recipe_from_flags(args, model)
    _, record = build_parts(model, recipe, render_config(args, model, recipe))
    return recipe, record


def _changed(before: dict, after: dict) -> set:
    return {k for k in before if before[k] != after[k]}


@pytest.mark.parametrize("name", RECIPES)
def test_weight_edits_the_recipes_own_prior(lite0, name):
    recipe, base = _record(lite0, name)
    if recipe.prior is None:
        with pytest.raises(UsageError, match=r"--weight does not apply: recipe \S+ has no prior"):
            _record(lite0, name, "--weight", "2.5")
        return
    edited, record = _record(lite0, name, "--weight", "2.5")
    assert _changed(base, record) == {"prior"}
    assert "weight=2.5" in record["prior"]
    others = {k: v for k, v in recipe.prior.options if k != "weight"}
    assert {k: v for k, v in edited.prior.options if k != "weight"} == others  # e.g. deepinversion's first_weight


@pytest.mark.parametrize("name", RECIPES)
def test_stats_edits_a_statistics_prior_and_is_refused_elsewhere(lite0, name):
    recipe, base = _record(lite0, name)
    takes = isinstance(recipe.prior, priors.PriorSpec) and "stats" in recipe.prior.accepts()
    if not takes:
        with pytest.raises(UsageError, match="--stats does not apply"):
            _record(lite0, name, "--stats", SHIPPED)
        return
    edited, record = _record(lite0, name, "--stats", SHIPPED, "--stats-layers", "blocks.2")
    assert dict(edited.prior.options)["stats"] == SHIPPED and stats_source(edited, lite0) == SHIPPED
    assert _changed(base, record) == {"prior"} and "blocks.4" not in record["prior"]


@pytest.mark.parametrize("name", RECIPES)
def test_lr_edits_the_recipes_optimizer(lite0, name):
    _, base = _record(lite0, name)
    _, record = _record(lite0, name, "--lr", "0.123")
    assert _changed(base, record) == {"optimizer"}
    assert "learning_rate=0.123" in record["optimizer"]
    # the rest of the optimizer (its options, the crops it accumulates) is the recipe's
    assert base["optimizer"].split(")", 1)[1] == record["optimizer"].split(")", 1)[1]


@pytest.mark.parametrize("name", RECIPES)
def test_param_replaces_another_kind_and_keeps_the_recipes_own(lite0, name):
    recipe, base = _record(lite0, name)
    _, record = _record(lite0, name, "--param", "pixel")
    if type(recipe.parameterization).__name__ == "Pixel":  # deepinversion: its own pixels (clip, sd) stay
        assert record == base
    else:
        assert _changed(base, record) == {"parameterization"} and record["parameterization"] == repr(param.pixel())


@pytest.mark.parametrize("name", RECIPES)
def test_transforms_replaces_the_transform_only(lite0, name):
    _, base = _record(lite0, name)
    _, record = _record(lite0, name, "--transforms", "none")
    assert _changed(base, record) <= {"transform"} and record["transform"] == "Identity()"


@pytest.mark.parametrize("name", RECIPES)
def test_steps_sets_the_passes_only(lite0, name):
    args = _args(name, "--steps", "12")
    recipe = recipe_from_flags(args, lite0)
    config = render_config(args, lite0, recipe)
    assert config.steps == 12 and recipe == recipe_from_flags(_args(name), lite0)


def test_flags_of_one_prior_are_refused_on_another(lite0):
    with pytest.raises(UsageError, match="--top-k does not apply to the prior batchnorm_prior"):
        _record(lite0, "deepinversion", "--top-k", "3")
    _, record = _record(lite0, "outliers", "--top-k", "3", "--every", "4")
    assert "k=3" in record["prior"] and "every=4" in record["prior"]


# --- the three cases the issue found, end to end through the command (each failed before) -------------

def _run(tmp_path, capsys, *argv):
    code = main(["visualize", "--target", "logits:1", "--steps", "2", "--size", "64", "--quiet", *argv])
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines()


def test_a_bad_stats_path_is_refused_not_swapped_for_no_prior(tmp_path, capsys):
    code, err = _run(tmp_path, capsys, "--recipe", "gaussian", "--stats", "/nonexistent", "--out", str(tmp_path / "q"))
    assert code == 2 and len(err) == 1 and "/nonexistent" in err[0], err
    assert not (tmp_path / "q" / "metrics.json").exists()


def test_weight_on_a_statistics_recipe_is_accepted(tmp_path, capsys):
    out = tmp_path / "q"
    code, err = _run(tmp_path, capsys, "--recipe", "quantile", "--weight", "2", "--warmup", "0", "--out", str(out))
    assert code == 0, err
    assert json.loads((out / "metrics.json").read_text())["config"]["prior"].startswith("quantile(") and \
        "weight=2.0" in json.loads((out / "metrics.json").read_text())["config"]["prior"]


def test_weight_on_deepinversion_keeps_its_first_layer_factor(tmp_path, capsys):
    out = tmp_path / "d"
    code, err = _run(tmp_path, capsys, "--recipe", "deepinversion", "--weight", "0.02", "--out", str(out))
    assert code == 0, err
    prior = json.loads((out / "metrics.json").read_text())["config"]["prior"]
    assert prior == "bn(layers=49, weight=0.02, first_weight=10.0)", prior


def test_the_saved_record_is_the_one_the_flags_built(lite0, tmp_path, capsys):
    out = tmp_path / "m"
    flags = ("--recipe", "outliers", "--weight", "3", "--lr", "0.5", "--warmup", "0")
    code, err = _run(tmp_path, capsys, *flags, "--out", str(out))
    assert code == 0, err
    saved = json.loads((out / "metrics.json").read_text())["config"]
    _, record = _record(lite0, "outliers", "--weight", "3", "--lr", "0.5", "--warmup", "0", "--steps", "2")
    assert {k: saved[k] for k in record} == record
    assert saved["stats"] == SHIPPED and os.path.isdir(saved["stats"])
