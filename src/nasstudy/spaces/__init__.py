"""Spaces of the nasstudy pipeline: one line each in `SPACES` (like `nasstudy.methods.METHODS`).

The registry names each space's class by its module path and imports it on first use, so a table
job (nb201) never imports the mobile space's torch modules.
"""

from __future__ import annotations

from typing import Any

from nasstudy.utils import resolve

SPACES: dict[str, str] = {
    "mobile": "nasstudy.spaces.mobile:MobileSpace",
    "nb201": "nasstudy.spaces.nb201:Nb201Space",
}


def space_class(name: str) -> type:
    """The class of space `name`, imported now."""
    return resolve(SPACES, name, "space")


def make_space(space_cfg: dict, state: dict | None) -> Any:
    """The space object for a config (its `name` picks the class) and a space_state dict."""
    return space_class(space_cfg.get("name"))(space_cfg, state)


__all__ = ["SPACES", "make_space", "space_class"]
