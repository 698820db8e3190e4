"""Mixed precision: off (CPU, or amp false) is exactly the plain float32 step; on CUDA with amp on,
training runs under float16 autocast with a GradScaler and its state goes into checkpoints."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nasstudy.checkpoint import capture, restore
from nasstudy.training import ClsData, MixedPrecision, make_generator, sgd, train_epoch


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    )


def _data(device: str = "cpu") -> ClsData:
    g = torch.Generator().manual_seed(0)
    return ClsData(torch.randn(32, 3, 8, 8, generator=g).to(device), torch.randint(0, 3, (32,), generator=g).to(device))


def test_amp_is_off_on_cpu_and_the_step_is_the_plain_one() -> None:
    torch.set_num_threads(1)
    assert not MixedPrecision("cpu", enabled=True).enabled
    a, b = _net(), _net()
    train_epoch(a, sgd(a, 0.1, 0.9, 0.0), _data(), 8, make_generator(0, "x"))
    opt = sgd(b, 0.1, 0.9, 0.0)
    gen = make_generator(0, "x")
    b.train()
    data = _data()
    for idx in torch.randperm(32, generator=gen).split(8):
        loss = nn.functional.cross_entropy(b(data.images[idx]), data.labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_clip_limits_the_gradient_norm() -> None:
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    x = torch.randn(4, 3, 8, 8) * 100
    MixedPrecision("cpu").step(net(x).pow(2).sum(), opt, clip=(net.parameters(), 1.0))
    norm = torch.norm(torch.stack([p.grad.norm() for p in net.parameters()]))
    assert norm <= 1.0 + 1e-5


def test_scaler_state_round_trips_through_a_checkpoint() -> None:
    a, b = MixedPrecision("cpu"), MixedPrecision("cpu")
    restore(capture(precision=a), precision=b)  # disabled: an empty state, accepted


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_amp_trains_on_cuda_with_a_scaler() -> None:
    net = _net().cuda()
    precision = MixedPrecision("cuda", enabled=True)
    assert precision.enabled
    loss, acc = train_epoch(net, sgd(net, 0.1, 0.9, 0.0), _data("cuda"), 8, make_generator(0, "x"), precision=precision)
    assert loss == loss and 0 <= acc <= 100  # finite
    assert precision.state_dict()["scale"] > 0
