"""Stage params and code hashes: what decides which jobs rerun."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nasstudy import pipeline
from nasstudy.config import PROJECT_ROOT, load_params


def test_stage_params_hold_only_the_named_sections() -> None:
    cfg = load_params()
    p = pipeline.stage_params(cfg, "space", search={"budget": 3})
    assert set(p) == {"seed", "study", "device", "amp", "threads", "space", "search"}
    assert p["space"]["image_size"] == cfg["data"]["image_size"]
    assert p["space"]["num_classes"] == cfg["data"]["num_classes"]
    assert "image_size" not in cfg["space"]  # the config itself is not modified


def test_stage_params_do_not_depend_on_key_order() -> None:
    cfg = load_params()
    reordered = {k: cfg[k] for k in reversed(list(cfg))}
    reordered["search"] = {k: cfg["search"][k] for k in reversed(list(cfg["search"]))}
    a = pipeline.stage_params(cfg, "space", search=cfg["search"])
    b = pipeline.stage_params(reordered, "space", search=reordered["search"])
    assert repr(a) == repr(b)


def toy_package(root: Path) -> None:
    """A stage that reaches helper.py through lib/ (a function-level import) and names methods/b.py
    in a registry string; unrelated.py is reached by nothing."""
    files = {
        "__init__.py": "",
        "stages/__init__.py": "",
        "stages/toy.py": "from nasstudy.lib import run_it\n",
        "lib/__init__.py": "def run_it():\n    from nasstudy.helper import X\n\n    return X\n",
        "helper.py": "X = 1\nREGISTRY = {'b': 'nasstudy.methods.b:B'}\n",
        "methods/__init__.py": "",
        "methods/b.py": "class B: ...\n",
        "unrelated.py": "Y = 1\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_stage_code_follows_the_import_closure(tmp_path, monkeypatch) -> None:
    toy_package(tmp_path)
    monkeypatch.setattr(pipeline, "PACKAGE_ROOT", tmp_path)
    closure = [str(p.relative_to(tmp_path)) for p in pipeline.import_closure("nasstudy.stages.toy")]
    assert "unrelated.py" not in closure
    assert {"helper.py", "lib/__init__.py", "methods/b.py", "methods/__init__.py", "__init__.py"} <= set(closure)
    before = pipeline.stage_code("toy")
    (tmp_path / "unrelated.py").write_text("Y = 2\n")
    assert pipeline.stage_code("toy") == before  # an edit elsewhere reruns nothing
    (tmp_path / "helper.py").write_text("X = 2\nREGISTRY = {'b': 'nasstudy.methods.b:B'}\n")
    assert pipeline.stage_code("toy") != before  # imported indirectly, in a function: still the stage's code


def test_stage_code_refuses_a_missing_module(tmp_path, monkeypatch) -> None:
    toy_package(tmp_path)
    monkeypatch.setattr(pipeline, "PACKAGE_ROOT", tmp_path)
    with pytest.raises(ModuleNotFoundError, match="nasstudy.stages.nope"):
        pipeline.stage_code("nope")
    (tmp_path / "helper.py").unlink()  # moved away: the stage that imports it must not hash less code
    with pytest.raises(ModuleNotFoundError, match=r"nasstudy\.helper \(imported by lib/__init__.py\)"):
        pipeline.stage_code("toy")


def test_each_rule_hashes_its_own_stage_module() -> None:
    """`code=stage_code("<rule>")` in every study rule: the runner runs nasstudy.stages.<rule>, and a
    grep for a stage module finds its rule."""
    for smk in sorted((PROJECT_ROOT / "rules").glob("*.smk")):
        for rule, body in re.findall(r"^rule (\w+):\n(.*?)(?=^\S|\Z)", smk.read_text(), re.M | re.S):
            assert f'code=stage_code("{rule}")' in body, f"{smk.name}: rule {rule}"
            assert pipeline.module_file(f"nasstudy.stages.{rule}") is not None


def test_each_benchmark_rule_names_and_hashes_its_stage_module() -> None:
    """Benchmark rules (workflow/bench/*.smk) name their module in nasstudy.benchmarks (`stage=`, what the
    runner imports) and hash that very module's import closure."""
    from nasstudy.runner import stage_module

    found = 0
    for smk in sorted((PROJECT_ROOT / "workflow" / "bench").glob("*.smk")):
        for rule, body in re.findall(r"^rule (\w+):\n(.*?)(?=^\S|\Z)", smk.read_text(), re.M | re.S):
            if rule == "all":
                continue
            (module,) = re.findall(r'stage="(nasstudy\.benchmarks\.\w+)"', body)
            assert f'code=pipeline.module_code("{module}")' in body, f"{smk.name}: rule {rule}"
            assert pipeline.module_file(module) is not None
            assert stage_module(rule, type("Params", (), {"stage": module})) == module
            found += 1
    assert found == 4
    assert stage_module("search", object()) == "nasstudy.stages.search"  # study rules: no `stage` param


def test_dvc_stages_for_lists_only_finished_phases_of_the_study(tmp_path) -> None:
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  a:\n    cmd: x\n    outs:\n      - results/s/data:\n          persist: true\n"
        "  b:\n    cmd: y\n    outs:\n      - results/s/search\n"
    )
    assert pipeline.dvc_stages_for("s", tmp_path) == []
    (tmp_path / "results/s/data").mkdir(parents=True)
    assert pipeline.dvc_stages_for("s", tmp_path) == ["a"]
    assert pipeline.dvc_stages_for("other", tmp_path) == []
