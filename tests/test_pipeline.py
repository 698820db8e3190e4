"""Stage params and code hashes: what decides which jobs rerun."""

from __future__ import annotations

from nasstudy import pipeline
from nasstudy.config import load_params


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


def test_code_hash_changes_with_the_code(tmp_path, monkeypatch) -> None:
    (tmp_path / "utils.py").write_text("a = 1\n")
    (tmp_path / "tracking.py").write_text("")
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "x.py").write_text("x = 1\n")
    monkeypatch.setattr(pipeline, "PACKAGE_ROOT", tmp_path)
    before = pipeline.code_hash("stages")
    assert before == pipeline.code_hash("stages")
    (tmp_path / "stages" / "x.py").write_text("x = 2\n")
    assert pipeline.code_hash("stages") != before
    (tmp_path / "other.py").write_text("unrelated\n")
    assert pipeline.code_hash("stages") == pipeline.code_hash("stages")


def test_dvc_stages_for_lists_only_finished_phases_of_the_study(tmp_path) -> None:
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  a:\n    cmd: x\n    outs:\n      - results/s/data:\n          persist: true\n"
        "  b:\n    cmd: y\n    outs:\n      - results/s/search\n"
    )
    assert pipeline.dvc_stages_for("s", tmp_path) == []
    (tmp_path / "results/s/data").mkdir(parents=True)
    assert pipeline.dvc_stages_for("s", tmp_path) == ["a"]
    assert pipeline.dvc_stages_for("other", tmp_path) == []
