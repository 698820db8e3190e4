"""Params validation: every malformed file stops with one line naming the key, the value, what is allowed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nasstudy.config import ParamsError, deep_merge, load_params, read_yaml, validate

ROOT = Path(__file__).resolve().parents[1]

# (params overlay, expected substring of the one-line message)
BAD = [
    ({"search": {"budget": 7}}, "search.budget = 7 must be even when search.methods has relativenas (members are scored in pairs)"),
    ({"transfer": {"methods": ["rea", "ganas"]}, "search": {"methods": ["rea"]}}, "transfer.methods has ['ganas'] but search.methods = ['rea'] does not search with them"),
    ({"search": {"methods": ["random", "gradient_magic"]}}, "search.methods[1] = 'gradient_magic' is not allowed; allowed: random, rea, relativenas, ganas, weaknas"),
    ({"retrain": {"epochs": -3}}, "retrain.epochs = -3 is out of range: must be >= 1"),
    ({"supernet": {"lr": "fast"}}, "supernet.lr = 'fast' has the wrong type: expected number, got str"),
    ({"supernet": {"epochs": 2.5}}, "supernet.epochs = 2.5 has the wrong type: expected integer"),
    ({"colour": "blue"}, "unknown key 'colour'; allowed keys here: amp, data, device"),
    ({"search": {"rea": {"populaton": 10}}}, "unknown key 'search.rea.populaton'; allowed keys here: population, tournament"),
    ({"data": {"source": "npz", "root": "/no/such/folder"}}, "data.root = '/no/such/folder' is not an existing folder"),
    ({"data": {"source": "npz"}}, "data.root is missing: data.source = 'npz' needs a local data folder"),
    ({"data": {"source": "imagenet"}}, "data.source = 'imagenet' is not allowed; allowed: synthetic, npz"),
    ({"data": {"num_classes": 10}}, "data.num_classes = 10 is too many for synthetic data (at most 8 shapes)"),
    ({"device": "tpu"}, "device = 'tpu' is not allowed; allowed: auto, cpu, cuda"),
    ({"study": "../escape"}, "study = '../escape' is not allowed: must match"),
    ({"seed": -1}, "seed = -1 is out of range: must be >= 0"),
    ({"space": {"pool": ["mb3_e3", "conv99"]}}, "space.pool[1] = 'conv99' is not allowed: must match"),
    ({"space": {"k": 40}}, "space.k = 40 is larger than the op pool"),
    ({"search": {"rea": {"population": 4, "tournament": 8}}}, "search.rea.tournament = 8 is larger than search.rea.population = 4"),
    ({"search": {"spaces": ["initial", "nse"]}, "evolution": {"methods": []}}, "search.spaces has 'nse' but evolution.methods"),
    ({"search": {"spaces": []}}, "search.spaces = [] must have at least 1 item"),
    ({"search": {"methods": ["rea", "rea"]}}, "search.methods = ['rea', 'rea'] has repeated items"),
    ({"transfer": {"detection": {"min_size": 200, "max_size": 100}}}, "transfer.detection.min_size = 200 is larger than max_size = 100"),
    ({"evolution": {"nse": {"branch_prob": 1.5}}}, "evolution.nse.branch_prob = 1.5 is out of range: must be <= 1"),
    ({"transfer": {"segmentation": {"head": "unet"}}}, "transfer.segmentation.head = 'unet' is not allowed; allowed: fcn, deeplabv3, lraspp"),
]  # fmt: skip


def default_cfg() -> dict:
    return read_yaml(ROOT / "params" / "default.yaml")


@pytest.mark.parametrize("overlay,expected", BAD, ids=[e[:40] for _, e in BAD])
def test_bad_params_give_one_clear_line(overlay: dict, expected: str) -> None:
    with pytest.raises(ParamsError) as err:
        validate(deep_merge(default_cfg(), overlay))
    message = str(err.value)
    assert expected in message
    assert "\n" not in message


def test_default_params_validate_and_get_defaults() -> None:
    cfg = load_params()
    assert cfg["study"] == "default"
    assert cfg["tracking"]["experiment"] == "nasstudy"
    assert cfg["data"]["root"] is None  # filled from the schema's default


def test_overlay_file_merges_onto_default(tmp_path: Path) -> None:
    p = tmp_path / "tiny.yaml"
    p.write_text("study: tiny\nsearch:\n  budget: 8\n")
    cfg = load_params(p)
    assert cfg["study"] == "tiny" and cfg["search"]["budget"] == 8
    assert cfg["search"]["methods"] == ["random", "rea", "relativenas", "ganas", "weaknas"]


def test_unreadable_yaml_is_a_params_error(tmp_path: Path) -> None:
    p = tmp_path / "broken.yaml"
    p.write_text("search: [unclosed\n")
    with pytest.raises(ParamsError, match="is not valid YAML"):
        load_params(p)
    p.write_text("- just\n- a list\n")
    with pytest.raises(ParamsError, match="must hold a mapping"):
        load_params(p)
    with pytest.raises(ParamsError, match="does not exist"):
        load_params(tmp_path / "missing.yaml")


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    p = tmp_path / "evil.yaml"
    p.write_text("study: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(p)


def test_cli_rejects_bad_params_without_traceback_or_writes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"study": "badstudy", "retrain": {"epochs": -1}}))
    out = subprocess.run(
        [sys.executable, "-m", "nasstudy.cli", "run", "--params", str(bad)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert out.stderr.strip() == "params error: retrain.epochs = -1 is out of range: must be >= 1"
    assert "Traceback" not in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_snakemake_rejects_bad_params_before_any_job(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"search": {"methods": ["nope"]}}))
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "-n",
         "--configfile", str(bad)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode != 0
    assert "params error: search.methods[0] = 'nope' is not allowed; allowed: random, rea" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "results").exists()


def test_schema_defaults_match_the_default_study() -> None:
    """A key left out of a params file means the same as in params/default.yaml."""
    from nasstudy.config import fill_defaults, schema

    filled = fill_defaults({"space": {}}, schema())
    mismatches = []

    def walk(defaults: dict, values: dict, prefix: str = "") -> None:
        for k, v in values.items():
            if isinstance(v, dict):
                walk(defaults.get(k, {}), v, f"{prefix}{k}.")
            elif k in defaults and defaults[k] != v:
                mismatches.append(f"{prefix}{k}: schema {defaults[k]!r} != default.yaml {v!r}")

    cfg = default_cfg()
    cfg.pop("study")
    walk(filled, cfg)
    assert mismatches == []


def test_defaults_fill_mappings_of_named_objects() -> None:
    """additionalProperties with a schema (method name -> knobs) gets its defaults filled too."""
    from nasstudy.config import fill_defaults

    sch = {"properties": {"methods": {"type": "object", "additionalProperties": {"properties": {"k": {"default": 2}}}}}}
    assert fill_defaults({"methods": {"a": {}, "b": {"k": 5}}}, sch) == {"methods": {"a": {"k": 2}, "b": {"k": 5}}}
