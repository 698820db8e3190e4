"""Spaces of the nasstudy pipeline: `make_space` picks one by `space_cfg["name"]`."""

from __future__ import annotations

from typing import Any


def make_space(space_cfg: dict, state: dict) -> Any:
    """The space object for a config and a space_state dict (`mobile` or `nb201`)."""
    name = space_cfg.get("name")
    if name == "mobile":
        from nasstudy.spaces.mobile import MobileSpace

        return MobileSpace(space_cfg, state)
    if name == "nb201":
        from nasstudy.spaces.nb201 import Nb201Space

        return Nb201Space(space_cfg, state)
    raise ValueError(f"unknown space {name!r}: known spaces are ['mobile', 'nb201']")
