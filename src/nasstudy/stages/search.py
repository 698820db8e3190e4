"""Stage `search`: one search method in one space, scored by the space's warmed-up supernet.

Asks and tells through the ask/tell loop the table benchmark uses too (nasstudy.search_loop): in
batches, one arch at a time for a sequential method such as REA; an arch told again is answered from
the evaluator's cache and costs no query, so the budget counts distinct archs and history.csv has one
row per query. After every `search_loop.BATCH` queries the method's state goes to `state.json`, so a
crashed job started again with the same inputs and knobs continues where it stopped (the supernet
scores an arch the same way every time, so a resumed search ends exactly as an uninterrupted one).

RelativeNAS with `joint` knobs learns jointly with the supernet, as in its paper: each pair's two
members train a copy of the shared weights along their own paths for `joint.steps` batches, are
validated, and the merged weights go back into the supernet before the next pair. Its state.json
then also holds the supernet weights and the batch-order generator, saved after every pair. It keeps
its own loop (`search_jointly`): a pair is trained before it is scored, so a repeat is scored again
and charged, and the shared weights change with every tell (no evaluator cache, no batches).
"""

from __future__ import annotations

import base64
import csv
import io
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from nasstudy import search_loop
from nasstudy.checkpoint import NO_CHECKPOINT, Checkpoint
from nasstudy.evaluators import Evaluator, SupernetEvaluator
from nasstudy.methods import SearchMethod, make_method
from nasstudy.spaces.mobile import MobileSpace
from nasstudy.tracking import Tracker, log_cost
from nasstudy.utils import atomic_write_bytes, file_md5, make_rng, read_json, replicate_names, seed_torch, write_json

STAGE = "search"
HISTORY_COLUMNS = ["query", "arch", "acc", "loss", "flops", "params", "best_acc"]


def run(
    inputs: dict[str, Path],
    outputs: dict[str, Path],
    params: dict,
    wildcards: dict[str, str],
    tracker: Tracker,
    checkpoint: Checkpoint = NO_CHECKPOINT,
) -> None:
    """Inputs cls_train, cls_val, supernet; outputs history, best, state, metrics. The state goes to the
    job's checkpoint (outside the outputs, which Snakemake deletes after a crash) after every batch of
    queries, or to the `state` output itself when run without one."""
    space_name, method_name = wildcards["space"], wildcards["method"]
    rep = replicate_names(wildcards)  # () for replicate 0: its seeds are those of a one-replicate study
    seed_torch(params["seed"], STAGE, space_name, method_name, *rep, threads=params["threads"])
    rng = make_rng(params["seed"], STAGE, space_name, method_name, *rep)  # the method draws all from it
    budget = int(params["search"]["budget"])
    if budget < 1:
        raise ValueError(f"search.budget must be at least 1 query, got {budget}")
    knobs = dict(params["search"].get(method_name) or {})
    joint = knobs.pop("joint", None) if method_name == "relativenas" else None
    if joint and budget % 2:
        raise ValueError(f"search.budget must be even for relativenas (members are scored in pairs), got {budget}")

    evaluator = SupernetEvaluator.for_stage(inputs, params)
    space = evaluator.space
    method = make_method(method_name, space, knobs, rng)
    run_key = {
        "space": space_name,
        "method": method_name,
        "seed": params["seed"],
        "supernet_md5": file_md5(inputs["supernet"]),
        "cls_train_md5": file_md5(inputs["cls_train"]),
        "cls_val_md5": file_md5(inputs["cls_val"]),
        "scoring": {k: params["supernet"][k] for k in ("bn_recal_batches", "batch_size")},
        "joint": joint,
        **({"rep": rep[1]} if rep else {}),
    }
    state_path = checkpoint.json_path or outputs["state"]
    if joint:
        search_jointly(method, evaluator, joint, budget, state_path, run_key, tracker, params["seed"], checkpoint, rep)
        write_outputs(outputs, method, space, space_name, method_name, state_path, repeats_free=False)
        tracker.log_artifact(outputs["best"])
        log_cost(tracker, read_json(outputs["best"]))
        return
    resumed = resume(state_path, run_key, method, evaluator, budget)
    if resumed:
        checkpoint.mark_resumed(f"{resumed}/{budget} queries")
        print(f"[search] resuming {space_name}/{method_name} after {resumed} queries", file=sys.stderr)
    for q, best_acc in enumerate(best_so_far(method), start=1):  # this run's curve is complete too
        tracker.log_metric("best_acc", best_acc, step=q)

    def told(new: list[search_loop.Query]) -> None:
        curve = best_so_far(method)
        for query in new:
            tracker.log_metric("best_acc", curve[query.number - 1], step=query.number)

    def save() -> None:
        write_json(state_path, {"run": run_key, "method": method.state_dict()})
        checkpoint.event("save", f"{evaluator.queries}/{budget} queries")

    search_loop.search(method, evaluator, budget, f"search {space_name}/{method_name}", told=told, save=save)
    if evaluator.stalled():
        print(f"[search] {method_name} proposed only seen archs: stopped after {evaluator.queries} queries",
              file=sys.stderr)  # fmt: skip

    write_outputs(outputs, method, space, space_name, method_name, state_path)
    tracker.log_artifact(outputs["best"])
    log_cost(tracker, read_json(outputs["best"]))


def search_jointly(
    method: SearchMethod,
    evaluator: SupernetEvaluator,
    joint: dict,
    budget: int,
    state_path: Path,
    run_key: dict,
    tracker: Tracker,
    seed: int,
    checkpoint: Checkpoint = NO_CHECKPOINT,
    rep: tuple[object, ...] = (),
) -> None:
    """RelativeNAS's joint learning: pair after pair, train both members on copies of the shared
    weights, validate, merge into the supernet, tell; save method, weights and generator after each.
    The lr follows the paper's cosine schedule over the search epochs (budget / population), from
    `joint.lr` at the first epoch towards `joint.lr_min`, one value per epoch."""
    from nasstudy.joint_training import cosine_lr, train_pair_on_supernet
    from nasstudy.training import make_generator, sgd

    supernet, space = evaluator.supernet, evaluator.space
    generator = make_generator(seed, STAGE, "relativenas", "joint", *rep)  # rep: utils.replicate_names
    done = resume_joint(state_path, run_key, method, supernet, generator, budget)
    if done:
        print(f"[search] resuming relativenas joint learning after {done} queries", file=sys.stderr)
        checkpoint.mark_resumed(f"{done}/{budget} queries")
    for q, best_acc in enumerate(best_so_far(method, repeats_free=False), start=1):
        tracker.log_metric("best_acc", best_acc, step=q)

    epochs = budget / method.population_size
    with tqdm(total=budget, initial=done, desc="search relativenas (joint)", file=sys.stderr, mininterval=5) as bar:
        while len(method.history) < budget:
            archs = method.ask(2)
            lr = cosine_lr(method.epoch, epochs, float(joint["lr"]), float(joint["lr_min"]))

            def make_optimizer(net: torch.nn.Module, lr: float = lr) -> torch.optim.Optimizer:
                return sgd(net, lr, float(joint["momentum"]), float(joint["weight_decay"]))

            result = train_pair_on_supernet(
                supernet, space, archs[0], archs[1], evaluator.train, evaluator.val, make_optimizer, generator,
                steps=int(joint["steps"]), batch_size=int(joint["batch_size"]),
                recal_batches=evaluator.bn_recal_batches, val_batch_size=evaluator.batch_size, compare=method.compare,
            )  # fmt: skip
            method.tell(archs, list(result.metrics))
            curve = best_so_far(method, repeats_free=False)
            for q in (len(curve) - 1, len(curve)):
                tracker.log_metric("best_acc", curve[q - 1], step=q)
            tracker.log_metric("pair_train_loss", sum(m["train_loss"] for m in result.metrics) / 2, step=len(curve))
            tracker.log_metric("joint_lr", lr, step=len(curve))
            write_json(
                state_path,
                {"run": run_key, "method": method.state_dict(), "joint": joint_state(supernet, generator)},
            )
            checkpoint.event("save", f"{len(method.history)}/{budget} queries")
            bar.update(2)


def joint_state(supernet: torch.nn.Module, generator: torch.Generator) -> dict:
    """The shared weights and the batch-order generator, as text for state.json."""
    buf = io.BytesIO()
    torch.save({"supernet": supernet.state_dict(), "generator": generator.get_state()}, buf)
    return {"torch": base64.b64encode(buf.getvalue()).decode("ascii")}


def resume_joint(
    path: Path, run_key: dict, method: SearchMethod, supernet: torch.nn.Module, generator: torch.Generator, budget: int
) -> int:
    """Load a joint-learning state of this very run into method, supernet and generator; the
    number of queries taken over (0: start afresh, nothing loaded)."""
    try:
        state = read_json(path)
        if state["run"] != run_key or len(state["method"]["history"]) > budget:
            return 0
        saved = torch.load(io.BytesIO(base64.b64decode(state["joint"]["torch"])), weights_only=True)
        supernet.load_state_dict(saved["supernet"])
        generator.set_state(saved["generator"])
        method.load_state_dict(state["method"])
    except (OSError, ValueError, KeyError, TypeError, RuntimeError):
        return 0
    return len(method.history)


def resume(path: Path, run_key: dict, method: SearchMethod, evaluator: Evaluator, budget: int) -> int:
    """Load `path` into `method` if it is a state of this very run (same inputs, seed and knobs)
    that fits in the budget; return the number of queries taken over (0: start afresh)."""
    try:
        state = read_json(path)
        if state["run"] != run_key or len({tuple(h["arch"]) for h in state["method"]["history"]}) > budget:
            return 0
        method.load_state_dict(state["method"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0  # missing, half-written by hand, or from other knobs: start afresh
    for arch, metrics in method.history:
        evaluator.remember(arch, metrics)
    return evaluator.queries


def queried(method: SearchMethod, repeats_free: bool = True) -> list[tuple[tuple[int, ...], dict, float]]:
    """(arch, metrics, best acc so far) per query: each arch the first time it was told where a
    repeat is a free cache lookup, else every evaluation (joint learning re-scores a repeat)."""
    rows, seen, best = [], set(), float("-inf")
    for arch, metrics in method.history:
        if repeats_free and arch in seen:
            continue
        seen.add(arch)
        best = max(best, float(metrics["acc"]))
        rows.append((arch, metrics, best))
    return rows


def best_so_far(method: SearchMethod, repeats_free: bool = True) -> list[float]:
    """The best acc after each query."""
    return [best for *_, best in queried(method, repeats_free)]


def write_outputs(
    outputs: dict[str, Path],
    method: SearchMethod,
    space: MobileSpace,
    space_name: str,
    method_name: str,
    state_path: Path,
    repeats_free: bool = True,
) -> None:
    """history.csv (one row per query), best.json and metrics.json, all derived from the method's
    history; state.json (the method's final state) copied from where the job kept it."""
    if Path(state_path) != Path(outputs["state"]):
        atomic_write_bytes(outputs["state"], Path(state_path).read_bytes())
    rows = queried(method, repeats_free)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HISTORY_COLUMNS)
    for q, (arch, m, best_acc) in enumerate(rows, start=1):
        writer.writerow([q, space.to_string(arch), m["acc"], m["loss"], m["flops"], m["params"], best_acc])
    atomic_write_bytes(outputs["history"], buf.getvalue().encode())

    arch, m = method.best()
    best = method.best_index()
    queries, to_best = len(rows), (method.queries_to(best) if repeats_free else best + 1)
    write_json(
        outputs["best"],
        {
            "arch": space.to_string(arch),
            "ops": [list(o) for o in space.ops(arch)],
            "supernet_acc": m["acc"],
            "flops": m["flops"],
            "params": m["params"],
            "queries": queries,
            "queries_to_best": to_best,
            "space": space_name,
            "method": method_name,
        },
    )
    write_json(outputs["metrics"], {"best_acc": m["acc"], "queries": queries, "queries_to_best": to_best})
