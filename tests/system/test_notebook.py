"""examples/tour.ipynb runs top to bottom in a real Jupyter kernel, and its outputs say what it promises."""

import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _texts(cell):
    out = []
    for o in cell.outputs:
        if o.output_type == "stream":
            out.append(o.text)
        elif o.output_type in ("execute_result", "display_data"):
            out.append(o.data.get("text/plain", ""))
    return "".join(out)


@pytest.mark.slow
def test_tour_notebook_runs_and_shows_results_inline(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(ROOT / "examples" / "tour.ipynb", as_version=4)
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env_path) if p)  # the kernel imports this jaxviz
    try:
        nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        os.environ["PYTHONPATH"] = env_path
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    # the model's repr is one line, not the 824 KB of its weights
    assert len(_texts(code[0]).strip().splitlines()) == 1 and len(_texts(code[0])) < 300
    # a cell ending in a result shows an inline gallery with one embedded image per target
    html = [o.data["text/html"] for o in code[1].outputs if "text/html" in getattr(o, "data", {})]
    assert html and html[0].count("data:image/png;base64") >= 4
    assert "(4, 96, 96, 3)" in _texts(code[1])
    # own nnx model: BatchNorm found, statistics from a generator of unknown length
    assert "BatchNorm: ['bn1']" in _texts(code[2]) and "'conv1': (" in _texts(code[2])
    assert "outliers prior:" in _texts(code[3])
    assert "(64, 64, 64, 3)" in _texts(code[4])  # 64 channels, 32 at a time
    dream = _texts(code[5])
    assert "saliency (1, 1, 128, 128, 3) smoothgrad (1, 1, 128, 128, 3)" in dream  # [targets, images, H, W, 3]
    assert float(dream.split("changed the photo by")[1].split()[0]) > 0.001
    assert "reloaded (4, 96, 96, 3) True" in _texts(code[6])
    assert "resumed identical: True" in _texts(code[6])
