"""The registries (methods, spaces, evolution methods, transfer tasks, table generations) and the
schema enums name the same things, and every registry entry imports. Adding a method touches its
module, one registry line, its schema block and the enum lines these tests point at
(docs/architecture.md, "Adding a method, space, evolution method or transfer task")."""

from __future__ import annotations

import pytest

from nasstudy.config import schema
from nasstudy.evolution import EVOLUTION, SpaceEvolution, evolution_method
from nasstudy.evolution.table_evolution import GENERATIONS
from nasstudy.methods import METHODS, SearchMethod, method_class
from nasstudy.spaces import SPACES, space_class
from nasstudy.transfer import TASKS, TransferTask, transfer_task
from nasstudy.utils import resolve

PARAMS = schema("params")["properties"]
BENCH = schema("bench")["properties"]
BENCH_SPACE = schema("bench_space")["properties"]


def items_enum(section: dict, key: str) -> set[str]:
    return set(section["properties"][key]["items"]["enum"])


def test_search_methods_match_the_schema() -> None:
    assert items_enum(PARAMS["search"], "methods") == set(METHODS), "params.schema.yaml search.methods enum"
    assert items_enum(PARAMS["transfer"], "methods") == set(METHODS), "params.schema.yaml transfer.methods enum"
    assert set(BENCH["methods"]["propertyNames"]["enum"]) == set(METHODS), "bench.schema.yaml methods names"
    assert set(METHODS) <= set(PARAMS["search"]["properties"]), "each method needs its search.<name> block"


def test_spaces_match_the_schemas() -> None:
    """Each study's schema allows the spaces its stages handle (the pipeline's supernet stages: mobile;
    the table benchmarks: nb201); together they are the registry."""
    names = [s["space"]["properties"]["name"]["enum"] for s in (PARAMS, BENCH, BENCH_SPACE)]
    assert set().union(*names) == set(SPACES)


def test_evolution_methods_match_the_schema() -> None:
    assert items_enum(PARAMS["evolution"], "methods") == set(EVOLUTION), "evolution.methods enum"
    assert set(EVOLUTION) <= set(PARAMS["evolution"]["properties"]), "each method needs its evolution.<name> block"
    spaces = PARAMS["search"]["properties"]["spaces"]["items"]["enum"]
    assert set(spaces) == {"initial", *EVOLUTION}, "search.spaces enum: initial plus every evolution method"


def test_transfer_tasks_match_the_schema() -> None:
    assert items_enum(PARAMS["transfer"], "tasks") == set(TASKS)
    assert set(TASKS) <= set(PARAMS["transfer"]["properties"]), "each task needs its transfer.<name> block"


def test_table_generations_match_the_schema() -> None:
    assert set(BENCH_SPACE["methods"]["properties"]) == set(GENERATIONS)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_resolves(name: str) -> None:
    assert issubclass(method_class(name), SearchMethod)


@pytest.mark.parametrize("name", sorted(SPACES))
def test_every_space_resolves(name: str) -> None:
    assert space_class(name).__name__ == SPACES[name].split(":")[1]


@pytest.mark.parametrize("name", sorted(EVOLUTION))
def test_every_evolution_method_resolves(name: str) -> None:
    method = evolution_method(name)
    assert isinstance(method, SpaceEvolution)
    cfg = method.config.from_params({})
    assert isinstance(cfg.to_params(), dict)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_transfer_task_resolves(name: str) -> None:
    task = transfer_task(name)
    assert isinstance(task, TransferTask) and callable(task.run) and task.per_class_prefix


@pytest.mark.parametrize(
    "lookup, what", [(method_class, "search method"), (space_class, "space"), (evolution_method, "evolution method"),
                     (transfer_task, "transfer task")],
)  # fmt: skip
def test_an_unknown_name_says_what_is_allowed(lookup, what: str) -> None:
    with pytest.raises(ValueError, match=f"unknown {what} 'nope'; allowed: "):
        lookup("nope")


def test_resolve_names_the_allowed_values() -> None:
    with pytest.raises(ValueError, match=r"unknown thing 'c'; allowed: a, b$"):
        resolve({"b": "x:y", "a": "x:y"}, "c", "thing")
