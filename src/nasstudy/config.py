"""Load and validate study params: one clear line per mistake, before any job starts.

The JSON Schema in workflow/schemas/params.schema.yaml is the single description of every key;
this module turns its verdicts into messages that name the key, the bad value and what is
allowed, fills the schema's defaults, and adds the few checks a schema cannot express.
"""

from __future__ import annotations

import copy
import math
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = PROJECT_ROOT / "workflow" / "schemas"
SCHEMA_PATH = SCHEMAS / "params.schema.yaml"
DEFAULT_PARAMS = PROJECT_ROOT / "params" / "default.yaml"


class ParamsError(ValueError):
    """A bad params file; the message is one line meant for a person."""


@cache
def schema(name: str = "params") -> dict:
    """workflow/schemas/<name>.schema.yaml: `params` for a study, `bench` for a tabular benchmark."""
    with open(SCHEMAS / f"{name}.schema.yaml") as f:
        return yaml.safe_load(f)


class _Refused(Exception):
    """Something valid YAML allows but a params file must not hold; read_yaml adds the file's name."""


class ParamsLoader(yaml.SafeLoader):
    """yaml.SafeLoader that also refuses repeated keys and anchors/aliases.

    Plain YAML keeps the last of two equal keys, silently dropping the first mapping; and aliases let a
    few lines expand to gigabytes once validation walks the tree (an alias bomb). A params file needs
    neither, so both stop the load with the line they are on, before anything is expanded.
    """

    def compose_node(self, parent, index):  # noqa: ANN001, ANN201 - PyYAML's signature
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            what = f"alias *{event.anchor}" if isinstance(event, yaml.AliasEvent) else f"anchor &{event.anchor}"
            raise _Refused(f"has a YAML {what} (line {event.start_mark.line + 1}); anchors and aliases are not "
                           f"allowed in params files, write the values out")  # fmt: skip
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):  # noqa: ANN001, ANN201 - PyYAML's signature
        lines: dict = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):  # other keys are not hashable: PyYAML refuses them
                key, line = self.construct_object(key_node), key_node.start_mark.line + 1
                if key in lines:
                    raise _Refused(f"repeats key '{key}' (lines {lines[key]} and {line}); each key may appear once")
                lines[key] = line
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path) -> dict:
    """Load a params file with ParamsLoader; anything but a UTF-8 YAML mapping is a ParamsError."""
    path = Path(path)
    if path.is_dir():
        raise ParamsError(f"params file {path} is a folder, not a file; give the path of a YAML file")
    if not path.is_file():
        raise ParamsError(f"params file {path} does not exist")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ParamsError(
            f"params file {path} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
            f"save it as UTF-8"
        ) from None
    except OSError as e:
        raise ParamsError(f"params file {path} cannot be read: {e.strerror or e}") from None
    try:
        data = yaml.load(text, Loader=ParamsLoader)  # noqa: S506 - a SafeLoader subclass
    except _Refused as e:
        raise ParamsError(f"params file {path} {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ParamsError(f"params file {path} is not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    if data is None:
        raise ParamsError(f"params file {path} is empty (or only comments); it must hold a mapping of keys")
    if not isinstance(data, dict):
        raise ParamsError(f"params file {path} must hold a mapping of keys, found {type(data).__name__}")
    return data


def recheck_files(paths: list) -> None:
    """Re-read params files that Snakemake already loaded (`--configfile`) with nasstudy's loader:
    Snakemake's keeps the last of two equal keys and expands aliases; ours refuses both."""
    for path in paths:
        read_yaml(path)


def deep_merge(base: dict, override: dict) -> dict:
    """Snakemake's rule for several config files: mappings merge key by key, anything else replaces."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_params(path: str | Path | None = None, defaults: str | Path = DEFAULT_PARAMS) -> dict:
    """`defaults` (params/default.yaml) overlaid with `path` (as `snakemake --configfile` does), validated."""
    cfg = read_yaml(defaults)
    if path is not None and Path(path).resolve() != Path(defaults).resolve():
        cfg = deep_merge(cfg, read_yaml(path))
    return validate(cfg)


def validate(cfg: dict, schema_name: str = "params") -> dict:
    """Return `cfg` with the schema's defaults filled in, or raise ParamsError naming the first problem."""
    bad = non_finite(cfg)
    if bad is not None:
        raise ParamsError(f"{key_name(bad[0])} = {bad[1]} is not allowed: must be a finite number (not nan or inf)")
    validator = Draft202012Validator(schema(schema_name))
    errors = sorted(validator.iter_errors(cfg), key=lambda e: (list(map(str, e.absolute_path)), e.validator))
    if errors:
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        raise ParamsError(describe(errors[0]) + more)
    cfg = fill_defaults(copy.deepcopy(cfg), schema(schema_name), schema(schema_name))
    if schema_name == "params":
        check_consistency(cfg)
    return cfg


def non_finite(value: Any, path: tuple = ()) -> tuple[tuple, float] | None:
    """(key path, value) of the first nan/inf float: JSON Schema's ranges let nan through (every
    comparison with nan is false), and one nan learning rate turns a whole study into NaN models."""
    if isinstance(value, float) and not math.isfinite(value):
        return path, value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        if (found := non_finite(v, (*path, k))) is not None:
            return found
    return None


def key_name(path: Any) -> str:
    """`search.methods[2]` from a jsonschema path."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def describe(e: ValidationError) -> str:
    """One line: the key, the bad value, what is allowed."""
    key, value, v = key_name(e.absolute_path), e.instance, e.validator_value
    if e.validator == "additionalProperties":
        allowed = sorted(e.schema.get("properties", {}))
        unknown = sorted(set(value) - set(allowed))
        where = f"{key}." if e.absolute_path else ""
        return f"unknown key '{where}{unknown[0]}'; allowed keys here: {', '.join(allowed)}"
    if e.validator == "enum":
        return f"{key} = {value!r} is not allowed; allowed: {', '.join(map(str, v))}"
    if e.validator == "type":
        types = " or ".join(v) if isinstance(v, list) else v
        return f"{key} = {value!r} has the wrong type: expected {types}, got {type(value).__name__}"
    if e.validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        word = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[e.validator]
        return f"{key} = {value!r} is out of range: must be {word} {v}"
    if e.validator == "required":
        missing = [k for k in v if k not in value]
        return f"missing key '{(key + '.') if e.absolute_path else ''}{missing[0]}'"
    if e.validator == "pattern":
        return f"{key} = {value!r} is not allowed: must match {v}"
    if e.validator in ("minItems", "maxItems"):
        word = "at least" if e.validator == "minItems" else "at most"
        return f"{key} = {value!r} must have {word} {v} item{'s' if v != 1 else ''}"
    if e.validator == "uniqueItems":
        return f"{key} = {value!r} has repeated items; each may appear once"
    return f"{key} = {value!r}: {e.message}"


def fill_defaults(cfg: Any, sch: dict, root: dict | None = None) -> Any:
    """Fill `default`s from the schema into mappings, recursively (what snakemake's validate does)."""
    if not isinstance(cfg, dict):
        return cfg
    props = dict(sch.get("properties", {}))
    for sub in sch.get("allOf", []):
        ref = sub.get("$ref", "")
        if ref.startswith("#/definitions/"):
            for k, s in (root or schema())["definitions"][ref.split("/")[-1]].get("properties", {}).items():
                props.setdefault(k, s)
    for k, s in props.items():
        if k not in cfg and "default" in s:
            cfg[k] = copy.deepcopy(s["default"])
        if k in cfg:
            cfg[k] = fill_defaults(cfg[k], s, root)
    extra = sch.get("additionalProperties")
    if isinstance(extra, dict):  # a mapping of names to objects of one schema (e.g. method -> knobs)
        for k in cfg.keys() - props.keys():
            cfg[k] = fill_defaults(cfg[k], extra, root)
    return cfg


def check_consistency(cfg: dict) -> None:
    """What one key alone cannot say: keys that must agree with each other, folders that must exist."""
    data = cfg["data"]
    if data["source"] == "synthetic" and data["num_classes"] > 8:
        raise ParamsError(f"data.num_classes = {data['num_classes']} is too many for synthetic data (at most 8 shapes)")
    if data["source"] != "synthetic":
        root = data.get("root")
        if not root:
            raise ParamsError(f"data.root is missing: data.source = {data['source']!r} needs a local data folder")
        if not Path(root).is_dir():
            raise ParamsError(f"data.root = {root!r} is not an existing folder (data.source = {data['source']!r})")
    if data["scene_source"] != "synthetic":
        root = data.get("scene_root")
        if not root:
            raise ParamsError(
                f"data.scene_root is missing: data.scene_source = {data['scene_source']!r} needs a folder"
            )
        if not Path(root).is_dir():
            raise ParamsError(
                f"data.scene_root = {root!r} is not an existing folder (data.scene_source = {data['scene_source']!r})"
            )
    space = cfg["space"]
    if "pool" not in space or "stages" not in space:
        raise ParamsError("space.pool and space.stages are required")
    if space["k"] > len(space["pool"]):
        raise ParamsError(f"space.k = {space['k']} is larger than the op pool ({len(space['pool'])} ops)")
    rea = cfg["search"]["rea"]
    if rea["tournament"] > rea["population"]:
        raise ParamsError(
            f"search.rea.tournament = {rea['tournament']} is larger than search.rea.population = {rea['population']}"
        )
    for space_name in cfg["search"]["spaces"]:
        if space_name != "initial" and space_name not in cfg["evolution"]["methods"]:
            raise ParamsError(
                f"search.spaces has {space_name!r} but evolution.methods = {cfg['evolution']['methods']!r} "
                f"does not evolve it; add it there or remove it from search.spaces"
            )
    budget = cfg["search"]["budget"]
    if "relativenas" in cfg["search"]["methods"] and budget % 2:
        raise ParamsError(
            f"search.budget = {budget} must be even when search.methods has relativenas (members are scored in pairs)"
        )
    extra = sorted(set(cfg["transfer"]["methods"] or []) - set(cfg["search"]["methods"]))
    if extra:
        raise ParamsError(
            f"transfer.methods has {extra} but search.methods = {cfg['search']['methods']!r} does not search with "
            f"them; add them there or remove them from transfer.methods"
        )
    det = cfg["transfer"]["detection"]
    if det["min_size"] > det["max_size"]:
        raise ParamsError(
            f"transfer.detection.min_size = {det['min_size']} is larger than max_size = {det['max_size']}"
        )
