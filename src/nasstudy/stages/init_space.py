"""init_space: the initial search space (generation 0) from params: first k pool ops active."""

from __future__ import annotations

from pathlib import Path

from nasstudy.spaces.mobile import initial_state
from nasstudy.tracking import Tracker
from nasstudy.utils import write_json


def run(
    inputs: dict[str, Path], outputs: dict[str, Path], params: dict, wildcards: dict[str, str], tracker: Tracker
) -> None:
    state = initial_state(params["space"])
    write_json(outputs["space_state"], state)
    tracker.log_metrics({"positions": len(state["positions"]), "active_per_position": params["space"]["k"]})
