"""The face of the product: recipes as the unit, notebook display, target plumbing, saved
files, errors in Python terms, the distribution name and the short path ``jaxviz.visualize``."""

import dataclasses
import json
import os
import re
import subprocess
import sys
import tomllib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import jaxviz
from jaxviz import objectives, priors, recipes, render
from jaxviz.cli import main
from jaxviz.common.errors import UsageError
from tests.toys import ROOT

FAST = render.RenderConfig(size=32, steps=8, chunk_steps=4)


class Toy(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), name="conv1")(x))
        return nn.Conv(4, (3, 3), strides=2, name="conv2")(x)


@pytest.fixture(scope="module")
def toy():
    variables = Toy().init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    return jaxviz.from_linen(Toy(), variables, (32, 32, 3), name="toy")


# ------------------------------------------------------------------ 1. recipes are the unit


def test_recipe_config_holds_numbers_only():
    config = recipes.get("maco").config()
    assert not {"param", "transforms", "learning_rate"} & {f.name for f in dataclasses.fields(config)}
    assert set(config.numbers()) == {"size", "steps", "seed"}


def test_render_defaults_to_the_best_recipe(toy):
    assert recipes.DEFAULT == "maco"  # README "Experiments": the best measured recipe
    target = objectives.channel("conv2", 1)
    default = render.render_images(toy, [target], config=FAST, progress=False)
    best = recipes.get(recipes.DEFAULT, size=FAST.size)
    explicit = render.render_images(toy, [target], config=FAST, progress=False, parameterization=best.parameterization,
                                    transform=best.transform, optimizer=best.schedule(FAST.steps).make())
    np.testing.assert_array_equal(default.images, explicit.images)
    record = default.record
    assert record["recipe"] == "maco"
    assert record["parameterization"] == repr(best.parameterization)
    assert record["transform"] == repr(best.transform)
    assert record["optimizer"].startswith("nadam(learning_rate=1, eps=1e-07)")
    assert (record["steps"], record["size"], record["seed"], record["prior"]) == (8, 32, 0, "none")
    assert not {"param", "transforms", "learning_rate"} & set(record)  # every part once


def test_edited_recipe_parts_are_recorded(toy):
    config = render.RenderConfig(size=32, steps=4)
    recipe = jaxviz.registry.edit_recipe(recipes.get("lucid"), parameterization="pixel", transform="none",
                                         learning_rate=0.2)
    result = render.render_images(toy, "conv2:0", config=config, recipe=recipe, progress=False)
    assert result.record["recipe"] == "lucid"
    assert result.record["parameterization"].startswith("Pixel")
    assert result.record["optimizer"] == "adam(learning_rate=0.2)"
    assert result.record["transform"] == repr(jaxviz.registry.resolve("transform", "none", argument="transform"))


def test_save_records_the_run(toy, tmp_path):
    result = render.render_images(toy, "conv2:1", config=FAST, progress=False)
    metrics = result.save(str(tmp_path))
    assert metrics["config"] == json.loads((tmp_path / "metrics.json").read_text())["config"]
    assert metrics["config"]["recipe"] == "maco" and metrics["config"]["optimizer"].startswith("nadam")


def test_cli_recipe_flags_and_whole_layer(tmp_path, capsys):
    out = tmp_path / "lucid"
    code = main(["visualize", "--target", "blocks.7", "--recipe", "lucid", "--lr", "0.1", "--size", "112",
                 "--steps", "3", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    config = metrics["config"]
    assert config["recipe"] == "lucid" and config["optimizer"] == "adam(learning_rate=0.1)"
    assert config["size"] == 64 and config["steps"] == 3  # lucid's canvas: 128/224 of what the model sees
    assert "param" not in config and "learning_rate" not in config
    assert [e["target"] for e in metrics["targets"]] == ["blocks.7"] and (out / "blocks.7.png").exists()


# ------------------------------------------------------------------------- 2. notebook display


def test_model_repr_is_one_short_line(lite0):
    text = repr(lite0)
    assert "\n" not in text and len(text) < 120 and "efficientnet_lite0" in text
    with pytest.raises(TypeError) as error:  # layers as a traced argument: jax names the function
        jax.jit(lite0.features)(lite0.params, jnp.zeros((1, 64, 64, 3)), ("logits",))
    assert len(str(error.value)) < 5000


@pytest.fixture(scope="module")
def with_prior(toy):
    """A result with the diagnostics an outlier prior reports (heat maps, suppressed neurons)."""
    result = render.render_images(toy, ["conv2:1", "conv2:2"], config=FAST, progress=False)
    prior = {"outlier_map": np.array([[[0, 1], [2, 3]], [[3, 2], [1, 0]]], np.float32),
             "rounds": np.array([4, 4], np.int32),
             "times/conv1": np.array([[0, 2, 0, 0, 0, 0, 0, 1], [1, 0, 0, 0, 0, 0, 0, 0]], np.float32),
             "score/conv1": np.ones((2, 8), np.float32)}
    return result._replace(prior=prior)


def test_result_repr_and_inline_gallery(with_prior):
    result = with_prior
    text = repr(result)
    assert "\n" not in text and len(text) < 200 and "conv2:1" in text and "maco" in text
    page = result._repr_html_()
    assert page.count("data:image/png;base64,") == 4  # two images, two heat maps
    assert page.count("<svg class=\"curve\"") == 2 and "conv1:1" in page and "rounds an outlier" in page
    assert "src='out" not in page and ".png'" not in page  # nothing refers to files


def test_show_outside_a_notebook_writes_a_page(with_prior, tmp_path, capsys):
    result = with_prior
    path = result.show(directory=str(tmp_path))
    assert capsys.readouterr().out.strip() == path
    assert "data:image/png;base64," in open(path, encoding="utf-8").read()


def test_progress_bar_on_by_default_off_with_false(toy, capsys):
    render.render_images(toy, "conv2:1", config=FAST)
    assert "jaxviz render" in capsys.readouterr().err
    render.render_images(toy, "conv2:1", config=FAST, progress=False)
    assert capsys.readouterr().err == ""


# ----------------------------------------------------------------------------- 6. targets


def test_one_objective_and_strings_are_targets(toy):
    one = render.render_images(toy, objectives.channel("conv2", 1), config=FAST, progress=False)
    assert one.images.shape == (1, 32, 32, 3) and one.targets == ("conv2:1",)
    many = render.render_images(toy, ["conv2:1", "conv2", "conv2:2-3"], config=FAST, progress=False)
    assert many.targets == ("conv2:1", "conv2", "conv2:2", "conv2:3")
    np.testing.assert_array_equal(many.images[0], one.images[0])  # the string is the same target
    with pytest.raises(UsageError, match=r"targets\[1\]"):
        render.render_images(toy, ["conv2:1", 7], config=FAST, progress=False)


def _gram_similarity(features):
    a = features.reshape(features.shape[0], -1, features.shape[-1])
    g = np.einsum("npi,npj->nij", a, a).reshape(a.shape[0], -1)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    s = g @ g.T
    n = len(s)
    return (s.sum() - np.trace(s)) / (n * (n - 1))


class Centered(nn.Module):
    """Features of a grey image are 0, so their Gram matrices show the images' structure."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(8, (3, 3), use_bias=False, name="conv1")(x - 0.5)
        return nn.Conv(4, (3, 3), strides=2, use_bias=False, name="conv2")(nn.relu(x))


def test_diversity_across_images_of_one_objective():
    variables = Centered().init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    net = jaxviz.from_linen(Centered(), variables, (32, 32, 3), name="centered", normalize=lambda x: x / 255.0)
    config = render.RenderConfig(size=32, steps=32, chunk_steps=8)
    recipe = jaxviz.registry.edit_recipe(recipes.get("maco", size=32), parameterization="pixel", transform="none",
                                         learning_rate=0.05)
    with pytest.raises(UsageError, match="images_per_target"):
        render.render_images(net, objectives.diversity("conv1"), config=config, recipe=recipe, progress=False)
    runs = [render.render_images(net, objectives.channel("conv2", 1) + w * objectives.diversity("conv1"), config=config,
                                 recipe=recipe, images_per_target=3, progress=False) for w in (0.0, 10.0)]
    assert runs[1].images.shape == (3, 32, 32, 3) and runs[1].targets == ("conv2:1#0", "conv2:1#1", "conv2:1#2")
    similarity = [_gram_similarity(np.asarray(net.features(net.params, net.normalize(r.images * 255.0),
                                                           ("conv1",))["conv1"])) for r in runs]
    assert similarity[0] > 0.9 and similarity[1] < 0.5, similarity  # measured: 0.999 and 0.09


# ------------------------------------------------------------------------- 9. saved files, errors


def test_save_names_files_like_the_cli_and_load_reads_them_back(with_prior, tmp_path):
    result = with_prior
    result.save(str(tmp_path))
    assert (tmp_path / "conv2_1.png").exists() and (tmp_path / "conv2_2.png").exists()
    back = jaxviz.RenderResult.load(str(tmp_path))
    for field in ("images", "activation", "history", "trace"):
        np.testing.assert_array_equal(getattr(back, field), getattr(result, field))
    assert back.targets == result.targets and back.record == result.record
    np.testing.assert_array_equal(back.prior["outlier_map"], result.prior["outlier_map"])
    with pytest.raises(jaxviz.common.errors.DataError, match="missing"):
        jaxviz.RenderResult.load(str(tmp_path / "missing"))


def test_model_flag_offers_only_models_with_weights(capsys):
    assert main(["visualize", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert "efficientnet_lite2" in help_text and "lite3" not in help_text and "lite4" not in help_text
    code = main(["visualize", "--model", "efficientnet_lite4", "--target", "logits:1", "--out", "x"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "efficientnet_lite0" in err


def test_python_errors_name_python_arguments(toy):
    with pytest.raises(UsageError) as error:
        priors.batchnorm_prior(toy)
    assert "--" not in str(error.value) and "batchnorm_prior(model=...)" in str(error.value)


def test_use_cpu_cores_after_jax_started_says_so():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    code = "import jax, jaxviz; jax.devices(); print(jaxviz.use_cpu_cores(3))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "0"
    assert "use_cpu_cores() had no effect" in done.stderr and "before anything uses JAX" in done.stderr


def _help_example() -> str:
    doc = jaxviz.__doc__
    assert doc.index("jaxviz.visualize(") < 600  # help(jaxviz) opens with it
    block = doc[doc.index("::") + 2: doc.index("``visualize`` uses")]
    return "\n".join(line[4:] for line in block.splitlines())


def test_help_opens_with_a_runnable_example():
    code = _help_example()
    compile(code, "help(jaxviz)", "exec")  # valid Python; every name it uses exists:
    for name in re.findall(r"jaxviz\.(\w+)", code):
        assert hasattr(jaxviz, name), name


@pytest.mark.slow
def test_help_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(_help_example(), {})
    assert (tmp_path / "out" / "logits_207.png").exists()
    page = capsys.readouterr().out.strip().splitlines()[-1]
    assert page.endswith("index.html") and os.path.isfile(page)


# ------------------------------------------------------------------ 10. distribution, short path


def test_distribution_name_is_free_of_pypis_jaxviz():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    assert project["name"] == "jaxviz-outliers" and project["scripts"]["jaxviz"] == "jaxviz.cli:entry"
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    assert "jaxviz-outliers" in readme and "cannot be installed in the same environment" in readme


def test_short_path_visualize(toy, tmp_path):
    result = jaxviz.visualize(toy, "conv2:3", size=32, steps=4, progress=False, out=str(tmp_path))
    assert isinstance(result, jaxviz.RenderResult) and result.targets == ("conv2:3",)
    assert result.record["recipe"] == recipes.DEFAULT and result.record["steps"] == 4
    assert json.loads((tmp_path / "metrics.json").read_text())["config"]["recipe"] == recipes.DEFAULT
