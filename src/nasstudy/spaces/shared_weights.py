"""What every weight-sharing supernet does the same way: hand out a standalone subnet with its
weights, and save/load itself as plain tensors (loadable with `torch.load(weights_only=True)`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn


class SharedWeights:
    """Mixin for a supernet `nn.Module` with `space_cfg`, `active`, `num_classes` and a class
    attribute `build_net(space_cfg, ops, num_classes)` whose modules are named like its own."""

    build_net: Callable[..., nn.Module]
    space_cfg: dict
    active: Any
    num_classes: int

    def subnet(self, ops: Any) -> nn.Module:
        """A standalone net of `ops` with the supernet's weights copied in (same module names)."""
        net = type(self).build_net(self.space_cfg, ops, self.num_classes).to(next(self.parameters()).device)
        mine = self.state_dict()
        net.load_state_dict({k: mine[k].clone() for k in net.state_dict()})
        return net

    def to_model_file(self) -> dict:
        """What the supernet's model file holds (training.save_model_file): plain types and tensors."""
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        return {
            "space_cfg": self.space_cfg,
            "active": self.active,
            "num_classes": self.num_classes,
            "state_dict": state,
        }

    @classmethod
    def from_model_file(cls, saved: dict) -> Any:
        """Rebuild from `to_model_file()` output."""
        net = cls(saved["space_cfg"], saved["active"], saved["num_classes"])
        net.load_state_dict(saved["state_dict"])
        return net


def count_params(module: nn.Module) -> int:
    """Sum of numel of a module's parameters: what a space's analytic `params(arch)` predicts."""
    return sum(p.numel() for p in module.parameters())
