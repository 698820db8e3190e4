"""Resume inside long stages: a job stopped right after any of its checkpoints and run again ends
with exactly the outputs of an uninterrupted run (warmup, NSE and AutoSpace generations, search,
retrain, transfer); a checkpoint of other inputs, or a truncated one, is ignored, never half-used."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import test_evolve_space as evo
import test_retrain as rt
import test_search as srch
import test_transfer as trf
import test_warmup_supernet as wu
import torch
from helpers.tiny_inputs import SPACE_CFG

from nasstudy.checkpoint import Checkpoint, capture, job_checkpoint, restore
from nasstudy.spaces.mobile import build_net, initial_state
from nasstudy.stages import evolve_space, retrain, search, transfer, warmup_supernet
from nasstudy.tracking import MemoryTracker
from nasstudy.training import BatchCycle, ClsData, save_model_file
from nasstudy.utils import write_json


class Crash(Exception):
    """Stands for a kill: raised right after the n-th checkpoint was written."""


class CrashAfter(Checkpoint):
    def __init__(self, path: Path, saves: int) -> None:
        super().__init__(path, key="job")
        self.saves = saves

    def event(self, kind: str, label: str = "") -> None:
        super().event(kind, label)
        if kind == "save":
            self.saves -= 1
            if self.saves == 0:
                raise Crash(label)


def same_outputs(a: dict[str, Path], b: dict[str, Path], skip: tuple[str, ...] = ("timing",)) -> list[str]:
    """Names of outputs that differ: bytes for text/PNG, tensors for .pt checkpoints."""
    diff = []
    for name in a:
        if name in skip:
            continue
        if a[name].suffix == ".pt":
            x, y = torch.load(a[name], weights_only=True), torch.load(b[name], weights_only=True)
            if not _equal(x, y):
                diff.append(name)
        elif a[name].read_bytes() != b[name].read_bytes():
            diff.append(name)
    return diff


def _equal(x, y) -> bool:
    if isinstance(x, dict):
        return x.keys() == y.keys() and all(_equal(x[k], y[k]) for k in x)
    if isinstance(x, list | tuple):
        return len(x) == len(y) and all(_equal(u, v) for u, v in zip(x, y))
    if isinstance(x, torch.Tensor):
        return torch.equal(x, y)
    return x == y


def check_resume(run: Callable[[Path, Checkpoint | None], dict[str, Path]], tmp: Path, crash_at: list[int]) -> None:
    """`run(out_dir, checkpoint)` uninterrupted, then crashed after each save in `crash_at` and rerun."""
    whole = run(tmp / "whole", None)
    for n in crash_at:
        out, ckpt = tmp / f"crash{n}", tmp / f"ckpt{n}" / "job.pt"
        with pytest.raises(Crash):
            run(out, CrashAfter(ckpt, n))
        assert ckpt.is_file() or ckpt.with_suffix(".json").is_file()
        resumed = run(out, Checkpoint(ckpt, key="job"))
        events = [json.loads(line)["event"] for line in ckpt.with_suffix(".events").read_text().splitlines()]
        assert "resume" in events, events
        assert same_outputs(whole, resumed) == [], f"crash after save {n}"


def test_warmup_resumes_mid_training_and_mid_scoring(tmp_path: Path) -> None:
    def run(out: Path, ckpt: Checkpoint | None) -> dict[str, Path]:
        out.mkdir(exist_ok=True)
        wu._write_data(out / "train.npz", 64, 0)
        wu._write_data(out / "val.npz", 32, 1)
        write_json(out / "state.json", initial_state(wu.SPACE))
        inputs = {"cls_train": out / "train.npz", "cls_val": out / "val.npz", "space_state": out / "state.json"}
        outputs = {"supernet": out / "supernet.pt", "metrics": out / "metrics.json", "random_archs": out / "r.csv"}
        params = {"seed": 0, "study": "t", "device": "cpu", "threads": 1, "space": wu.SPACE}
        params["supernet"] = dict(wu.SUPERNET, random_archs=25)  # saves: 2 epochs, then at 10 and 20 archs
        kw = {} if ckpt is None else {"checkpoint": ckpt}
        warmup_supernet.run(inputs, outputs, params, {"space": "initial"}, MemoryTracker(), **kw)
        return outputs

    check_resume(run, tmp_path, crash_at=[1, 2, 3, 4])


def test_retrain_resumes_after_each_epoch(tmp_path: Path) -> None:
    def run(out: Path, ckpt: Checkpoint | None) -> dict[str, Path]:
        out.mkdir(exist_ok=True)
        for name, n, seed in (("train", 48, 0), ("val", 20, 1), ("test", 20, 2)):
            rt._write_cls(out / f"{name}.npz", n, seed)
        write_json(out / "best.json", {"arch": "a", "ops": rt.OPS, "supernet_acc": 40.0})
        inputs = {k: out / f"{k.removeprefix('cls_')}.npz" for k in ("cls_train", "cls_val", "cls_test")}
        inputs["best"] = out / "best.json"
        outputs = {"model": out / "model.pt", "metrics": out / "metrics.json", "timing": out / "timing.json"}
        outputs["curve"] = out / "curve.csv"
        params = {"seed": 0, "study": "t", "device": "cpu", "threads": 1, "space": rt.SPACE}
        params["retrain"] = dict(rt.RETRAIN, epochs=3)
        kw = {} if ckpt is None else {"checkpoint": ckpt}
        retrain.run(inputs, outputs, params, {"space": "initial", "method": "random"}, MemoryTracker(), **kw)
        return outputs

    check_resume(run, tmp_path, crash_at=[1, 2])


@pytest.mark.parametrize("method", ["nse", "autospace"])
def test_evolution_generation_resumes_after_each_epoch(tmp_path: Path, method: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 80), ("val", 32)):
        labels = np.arange(n, dtype=np.int64) % 3
        images = rng.integers(0, 60, size=(n, 8, 8, 3)).astype(np.uint8)
        images[..., labels % 3] += 150
        np.savez(data / f"cls_{split}.npz", images=images, labels=labels)
    write_json(data / "gen0.json", initial_state(evo.SPACE_CFG))
    knobs = dict(evo.NSE, epochs=3) if method == "nse" else {"epochs": 3, "population": 4, "score_images": 16}
    params = dict(evo._params(), evolution={method: knobs})

    def run(out: Path, ckpt: Checkpoint | None) -> dict[str, Path]:
        out.mkdir(exist_ok=True)
        outputs = {k: out / f"{k}.out" for k in evo.OUTPUTS}
        inputs = {
            "cls_train": data / "cls_train.npz",
            "cls_val": data / "cls_val.npz",
            "space_state": data / "gen0.json",
        }
        kw = {} if ckpt is None else {"checkpoint": ckpt}
        evolve_space.run(inputs, outputs, params, {"method": method, "gen": "1"}, MemoryTracker(), **kw)
        outputs["supernet"] = outputs["supernet"].rename(out / "supernet.pt")
        return outputs

    check_resume(run, tmp_path, crash_at=[1, 2])


@pytest.mark.parametrize("method", ["rea", "relativenas"])
def test_search_resumes_from_its_checkpoint_not_its_outputs(tmp_path: Path, method: str) -> None:
    torch.set_num_threads(1)
    root = tmp_path / "in"
    root.mkdir()
    torch.manual_seed(0)
    active = [p["active"] for p in initial_state(SPACE_CFG)["positions"]]
    save_model_file(build_supernet(active).to_model_file(), root / "supernet.pt")
    rng = np.random.default_rng(0)
    for split, n in (("train", 64), ("val", 48)):
        images = rng.integers(0, 256, size=(n, 16, 16, 3), dtype=np.uint8)
        np.savez(root / f"cls_{split}.npz", images=images, labels=rng.integers(0, 3, size=n))
    inputs = {"cls_train": root / "cls_train.npz", "cls_val": root / "cls_val.npz", "supernet": root / "supernet.pt"}

    def run(out: Path, ckpt: Checkpoint | None) -> dict[str, Path]:
        out.mkdir(exist_ok=True)
        outputs = {"history": out / "history.csv", "best": out / "best.json", "state": out / "state.json"}
        outputs["metrics"] = out / "metrics.json"
        kw = {} if ckpt is None else {"checkpoint": ckpt}
        search.run(
            inputs, outputs, srch.params(24, method), {"space": "initial", "method": method}, MemoryTracker(), **kw
        )
        return outputs

    check_resume(run, tmp_path, crash_at=[1, 2] if method == "rea" else [3, 7])


def build_supernet(active):
    from nasstudy.spaces.mobile import Supernet

    return Supernet(SPACE_CFG, active)


@pytest.mark.parametrize("task, option", [("detection", "fcos"), ("segmentation", "lraspp")])
def test_transfer_resumes_after_each_epoch(tmp_path: Path, task: str, option: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    trf._write_scenes(data / "train.npz", 8, 0)
    trf._write_scenes(data / "val.npz", 4, 1)
    torch.manual_seed(0)
    net = build_net(trf.SPACE, trf.OPS, 3)
    save_model_file({"space_cfg": trf.SPACE, "ops": trf.OPS, "num_classes": 3, "state_dict": net.state_dict()},
                    data / "model.pt")  # fmt: skip
    inputs = {"scenes_train": data / "train.npz", "scenes_val": data / "val.npz", "model": data / "model.pt"}
    cfg = dict(trf.DETECTION, detector=option) if task == "detection" else dict(trf.SEGMENTATION, head=option)
    params = {"seed": 0, "study": "t", "device": "cpu", "threads": 1, "space": trf.SPACE}
    params["transfer"] = {task: dict(cfg, epochs=3)}

    def run(out: Path, ckpt: Checkpoint | None) -> dict[str, Path]:
        out.mkdir(exist_ok=True)
        outputs = {"metrics": out / "metrics.json", "timing": out / "timing.json", "examples": out / "examples.png"}
        kw = {} if ckpt is None else {"checkpoint": ckpt}
        wildcards = {"task": task, "space": "initial", "method": "rea"}
        transfer.run(inputs, outputs, params, wildcards, MemoryTracker(), **kw)
        return outputs

    check_resume(run, tmp_path, crash_at=[1, 2])


def test_checkpoint_of_another_job_or_a_truncated_file_is_ignored(tmp_path: Path, capsys) -> None:
    path = tmp_path / "c.pt"
    Checkpoint(path, "a").save({"x": torch.ones(2)}, "epoch 1")
    assert torch.equal(Checkpoint(path, "a").load()["x"], torch.ones(2))
    assert Checkpoint(path, "b").load() is None
    assert "other inputs" in capsys.readouterr().err
    path.write_bytes(path.read_bytes()[:40])
    assert Checkpoint(path, "a").load() is None
    assert "unreadable" in capsys.readouterr().err
    Checkpoint(path, "a").clear()
    assert not path.exists() and not path.with_suffix(".events").exists()
    assert Checkpoint().load() is None  # no path: a no-op
    Checkpoint().save({"x": 1})


def test_job_checkpoint_key_follows_inputs_params_and_code(tmp_path: Path) -> None:
    f = tmp_path / "in.npz"
    f.write_bytes(b"1")
    a = job_checkpoint("s", "retrain", {"space": "nse", "method": "rea"}, {"lr": 1}, "c1", {"x": [f]})
    assert a.path == Path(".checkpoints/s/retrain/method=rea_space=nse.pt")
    assert a.key == job_checkpoint("s", "retrain", {"space": "nse", "method": "rea"}, {"lr": 1}, "c1", {"x": [f]}).key
    assert a.key != job_checkpoint("s", "retrain", {"space": "nse", "method": "rea"}, {"lr": 2}, "c1", {"x": [f]}).key
    assert a.key != job_checkpoint("s", "retrain", {"space": "nse", "method": "rea"}, {"lr": 1}, "c2", {"x": [f]}).key
    f.write_bytes(b"2")
    assert a.key != job_checkpoint("s", "retrain", {"space": "nse", "method": "rea"}, {"lr": 1}, "c1", {"x": [f]}).key


def test_capture_restore_and_batch_cycle_continue_the_same_sequence() -> None:
    data = ClsData(torch.arange(10.0).view(10, 1, 1, 1), torch.arange(10))
    gen, rng = torch.Generator().manual_seed(0), np.random.default_rng(0)
    cycle = BatchCycle(data, 4, gen)
    [next(cycle) for _ in range(3)]  # into the second permutation
    state = capture(gen=gen, rng=rng, cycle=cycle)
    expected = [next(cycle)[1].tolist() for _ in range(4)], rng.random(), torch.rand(1)
    gen2, rng2 = torch.Generator().manual_seed(99), np.random.default_rng(99)
    cycle2 = BatchCycle(data, 4, gen2)
    restore(state, gen=gen2, rng=rng2, cycle=cycle2)
    assert ([next(cycle2)[1].tolist() for _ in range(4)], rng2.random(), torch.rand(1)) == expected
    with pytest.raises(TypeError, match="cannot capture 'x'"):
        capture(x=object())


def test_done_keeps_the_last_checkpoint_until_the_run_has_recorded_the_job(tmp_path: Path) -> None:
    from nasstudy.checkpoint import clear_finished

    done, running = Checkpoint(tmp_path / "s" / "a" / "x.pt", "k"), Checkpoint(tmp_path / "s" / "b" / "y.pt", "k")
    for ckpt in (done, running):
        ckpt.event("start")
        ckpt.save({"x": 1}, "epoch 1")
    done.done()
    assert done.path.is_file()  # a kill before Snakemake records the job: the rerun resumes from here
    assert Checkpoint(done.path, "k").load() == {"x": 1}
    assert clear_finished("s", tmp_path) == 0  # the resume above came after "done"
    Checkpoint(done.path, "k").done()
    assert clear_finished("s", tmp_path) == 1
    assert not done.path.exists() and running.path.is_file()
