"""The house (docs/design.md §2): stages import downward only, modules stay readable, tests mirror the source."""

import ast
import importlib
import pathlib
import subprocess
import sys
import warnings

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "jaxviz"
MAX_LINES = 400
# modules allowed over MAX_LINES, each with its reason (README's style rule: "~400 without a reason")
LONG_MODULES: dict[str, str] = {}


def test_import_contract_is_kept():
    """import-linter's layers contract in pyproject.toml: no circle, no import from a lower stage to a higher one."""
    lint = pathlib.Path(sys.executable).parent / "lint-imports"
    run = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=ROOT,
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0 and "1 kept, 0 broken" in run.stdout, run.stdout[-3000:] + run.stderr[-2000:]


def test_contract_names_every_stage():
    """Every top-level module or folder of jaxviz sits in a layer (a new one cannot slip past the contract)."""
    import tomllib

    layers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]["layers"]
    named = {name.strip().split(".")[1] for layer in layers for name in layer.split("|")}
    present = {p.stem for p in PACKAGE.glob("*.py") if not p.stem.startswith("_")}
    present |= {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists() and p.name != "assets"}
    assert present - named == set(), f"not in a layer of the import contract: {sorted(present - named)}"


def _module_lines():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(ROOT).as_posix(), len(path.read_text().splitlines())


def test_no_module_over_the_limit_without_a_reason():
    long = {name: n for name, n in _module_lines() if n > MAX_LINES and name not in LONG_MODULES}
    assert not long, f"modules over {MAX_LINES} lines (split them, or state the reason in LONG_MODULES): {long}"


def test_no_module_imports_another_modules_private_names():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jaxviz"):
                offenders += [f"{path.relative_to(ROOT)}: {a.name}" for a in node.names
                              if a.name.startswith("_") and a.name not in ("__version__", "__all__")]
    assert not offenders, offenders


@pytest.mark.parametrize("old", ["param", "transforms", "step", "stats_store", "collect", "views", "features",
                                 "metrics", "errors"])
def test_old_flat_module_names_are_gone(old):
    """The package was never released under them: no aliases, no import hook on ``import jaxviz``."""
    import sys

    import jaxviz

    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(f"jaxviz.{old}")
    with pytest.raises(AttributeError):
        getattr(jaxviz, old)
    assert not any(type(f).__module__.startswith("jaxviz") for f in sys.meta_path)


def test_contract_names_need_no_warning():
    """docs/design.md §3: ``from jaxviz import stats, outliers`` and ``stats.init`` are the contract."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from jaxviz import outliers, stats

        assert stats.init(3).mean.shape == (3,)
        assert outliers is importlib.import_module("jaxviz.stats.outliers")


def test_render_function_and_module_no_longer_share_a_name():
    import jaxviz
    from jaxviz import render

    assert jaxviz.render_images is render.render_images
    assert not hasattr(render, "render")


def test_no_module_shares_its_name_with_what_its_package_exports():
    """``jaxviz.priors.quantile`` is one thing: a function, or a module, never both (one name per concept)."""
    collisions = []
    for init in PACKAGE.rglob("__init__.py"):
        package = ".".join(init.parent.relative_to(ROOT).parts)
        names = set(getattr(importlib.import_module(package), "__all__", ()))
        for child in init.parent.iterdir():
            stem = child.stem if child.suffix == ".py" else child.name if (child / "__init__.py").exists() else None
            if stem and stem != "__init__" and stem in names:
                module = importlib.import_module(f"{package}.{stem}")
                if getattr(importlib.import_module(package), stem) is not module:
                    collisions.append(f"{package}.{stem}")
    assert not collisions, collisions


def test_test_files_mirror_the_source_tree():
    """The tests of ``jaxviz/priors/quantile_match.py`` are in ``tests/priors/test_quantile_match*.py``: every
    test file outside ``tests/system/`` (the whole product, end to end) names a module of its folder."""
    tests = ROOT / "tests"
    strays = []
    for path in tests.rglob("test_*.py"):
        folder = path.parent.relative_to(tests)
        if folder.parts[:1] == ("system",):
            continue
        source = ROOT / folder.parts[0] if folder.parts and folder.parts[0] in ("benchmarks", "experiments") \
            else PACKAGE.joinpath(*folder.parts)
        modules = {p.stem for p in source.glob("*.py") if p.stem != "__init__"}
        modules |= {p.name for p in source.iterdir() if (p / "__init__.py").exists()} | {source.name}
        subject = path.stem.removeprefix("test_")
        if not any(subject == m or subject.startswith(m + "_") for m in modules):
            strays.append(str(path.relative_to(ROOT)))
    assert not strays, f"test files that name no module of their folder: {strays}"


def test_no_import_circle_even_through_function_level_imports():
    """Every ``import`` of a jaxviz module, at any depth of the file, follows the stages: no two modules
    reach each other (a package and its own modules excepted: ``__init__`` re-exports them)."""
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
               for p in PACKAGE.rglob("*.py")}
    edges = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and not name.startswith(target + ".") and not target.startswith(name + "."):
                    edges[name].add(target)
    # Tarjan's strongly connected components
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"
