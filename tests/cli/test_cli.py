"""The `jaxviz` command: classify, layers and one-line errors for user mistakes."""

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from jaxviz.cli import main


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory, photos):
    folder = tmp_path_factory.mktemp("photos")
    paths = {}
    for name in ("chelsea", "coffee"):
        paths[name] = folder / f"{name}.jpg"
        Image.fromarray(photos[name]).save(paths[name], quality=95)
    gray = folder / "chelsea_gray.png"
    Image.fromarray(photos["chelsea"]).convert("L").save(gray)
    rgba = folder / "coffee_rgba.png"
    Image.fromarray(photos["coffee"]).convert("RGBA").save(rgba)
    paths["gray"], paths["rgba"] = gray, rgba
    corrupt = folder / "broken.jpg"
    corrupt.write_bytes(paths["chelsea"].read_bytes()[:300])
    paths["corrupt"] = corrupt
    text = folder / "notes.txt"
    text.write_text("not an image")
    paths["text"] = text
    return paths


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_classify_json_cat_and_espresso(capsys, photo_files):
    code, out, err = _run(capsys, "classify", "--json", photo_files["chelsea"], photo_files["coffee"])
    assert code == 0, err
    result = json.loads(out)
    assert [r["image"] for r in result] == [str(photo_files["chelsea"]), str(photo_files["coffee"])]
    chelsea, coffee = result[0]["top5"], result[1]["top5"]
    assert len(chelsea) == 5 and set(chelsea[0]) == {"index", "name", "prob"}
    assert 281 <= chelsea[0]["index"] <= 285
    assert coffee[0]["index"] == 967 and coffee[0]["name"] == "espresso" and coffee[0]["prob"] > 0.8
    probs = [e["prob"] for e in chelsea]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-6


def test_classify_text_output_and_mode_conversion(capsys, photo_files):
    code, out, err = _run(capsys, "classify", photo_files["gray"], photo_files["rgba"])
    assert code == 0
    assert "converted" in err and str(photo_files["gray"]) in err and str(photo_files["rgba"]) in err
    assert "espresso" in out


def test_layers_json(capsys):
    code, out, _ = _run(capsys, "layers", "--model", "efficientnet-lite0", "--json")
    layers = json.loads(out)
    assert code == 0 and layers["head"] == [7, 7, 1280] and list(layers)[0] == "stem"


def test_layers_names_the_pre_activation_targets(capsys):
    code, out, _ = _run(capsys, "layers")
    assert code == 0 and "33 BatchNorm outputs before their activation" in out and "head.bn" in out


@pytest.mark.parametrize("argv,message", [
    (["layers", "--model", "resnet50"], "unknown model 'resnet50'"),
    (["classify", "--model", "efficientnet_lite5", "IMG"], "did you mean"),
    (["classify", "MISSING.jpg"], "MISSING.jpg"),
    (["classify", "CORRUPT"], "broken.jpg"),
    (["classify", "TEXT"], "notes.txt"),
])
def test_user_mistakes_give_one_line(capsys, photo_files, argv, message):
    substitute = {"IMG": photo_files["chelsea"], "CORRUPT": photo_files["corrupt"], "TEXT": photo_files["text"]}
    argv = [substitute.get(a, a) for a in argv]
    code, out, err = _run(capsys, *argv)
    assert code == 2
    assert err.startswith("jaxviz: error: ") and err.count("\n") == 1 and message in err
    assert "Traceback" not in err


def test_console_script_error_has_no_traceback(photo_files):
    script = os.path.join(os.path.dirname(sys.executable), "jaxviz")
    command = [script] if os.path.exists(script) else [sys.executable, "-m", "jaxviz"]
    proc = subprocess.run([*command, "classify", str(photo_files["corrupt"])],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("jaxviz: error:") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
