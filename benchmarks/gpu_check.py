"""Run every training stage of a study once on one device and time it: the CUDA and AMP check.

Snakemake, DVC and MLflow are not needed (a GPU node may lack them): this script calls each stage's
`run` the way its rule does, in DAG order, with the rule's inputs, outputs and params
(`nasstudy.pipeline.stage_params`), one job per stage kind (first space, first method, each task).

    python benchmarks/gpu_check.py --device cuda --amp          # params/default.yaml
    python benchmarks/gpu_check.py --device cpu --params tests/params/tiny.yaml

Prints one line per job and writes benchmarks/results/gpu_check-<device>[-amp].json
(seconds per job, the job's metrics.json, torch/CUDA versions, peak GPU memory).
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from nasstudy import config as nasconfig  # noqa: E402
from nasstudy.pipeline import stage_params  # noqa: E402
from nasstudy.tracking import MemoryTracker  # noqa: E402


def files(folder: Path, *names: str) -> dict[str, Path]:
    """{"metrics": folder/metrics.json, ...} from file names, keyed by their stem."""
    return {Path(n).stem: folder / n for n in names}


def jobs(cfg: dict, res: Path) -> list[tuple[str, dict, dict, dict, dict]]:
    """(rule, wildcards, inputs, outputs, params) for one job of each stage, as rules/*.smk declare them."""
    d = res / "data"
    data = {k: d / f"{k}.npz" for k in ("cls_train", "cls_val", "cls_test", "scenes_train", "scenes_val")}
    cls = {k: data[k] for k in ("cls_train", "cls_val")}
    evo = cfg["evolution"]["methods"][0]
    space, method = cfg["search"]["spaces"][0], cfg["search"]["methods"][0]
    gen0 = res / "space" / "gen0" / "space_state.json"
    last = f"gen{cfg['evolution']['generations']}"
    state = gen0 if space == "initial" else res / "space" / space / last / "space_state.json"
    g1 = res / "space" / evo / "gen1"
    sup, srch, ret = res / "supernet" / space, res / "search" / space / method, res / "retrain" / space / method
    out = [
        (
            "prepare_data",
            {},
            {},
            {**data, "summary": d / "summary.json", "preview": d / "preview.png"},
            stage_params(cfg, "data"),
        ),
        ("init_space", {}, {}, {"space_state": gen0}, stage_params(cfg, "space")),
        (
            "evolve_space",
            {"method": evo, "gen": "1"},
            {**cls, "space_state": gen0},
            files(g1, "space_state.json", "front.csv", "op_stats.csv", "supernet.pt", "metrics.json"),
            stage_params(cfg, "space", "supernet", evolution={evo: cfg["evolution"][evo]}),
        ),
        (
            "warmup_supernet",
            {"space": space},
            {**cls, "space_state": state},
            files(sup, "supernet.pt", "metrics.json", "random_archs.csv"),
            stage_params(cfg, "space", "supernet"),
        ),
        (
            "search",
            {"space": space, "method": method},
            {**cls, "supernet": sup / "supernet.pt"},
            files(srch, "history.csv", "best.json", "state.json", "metrics.json"),
            stage_params(
                cfg,
                "space",
                supernet={k: cfg["supernet"][k] for k in ("bn_recal_batches", "batch_size")},
                search={"budget": cfg["search"]["budget"], method: cfg["search"][method]},
            ),
        ),
        (
            "retrain",
            {"space": space, "method": method},
            {**cls, "cls_test": data["cls_test"], "best": srch / "best.json"},
            files(ret, "model.pt", "metrics.json", "timing.json", "curve.csv"),
            stage_params(cfg, "space", "retrain"),
        ),
    ]
    for task in cfg["transfer"]["tasks"]:
        t = res / "transfer" / task / space / method
        out.append(
            (
                "transfer",
                {"task": task, "space": space, "method": method},
                {"scenes_train": data["scenes_train"], "scenes_val": data["scenes_val"], "model": ret / "model.pt"},
                files(t, "metrics.json", "timing.json", "examples.png"),
                stage_params(cfg, "space", transfer={task: cfg["transfer"][task]}),
            )
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, default=ROOT / "params" / "default.yaml")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--amp", action="store_true", help="float16 autocast + GradScaler (CUDA only)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "tmp" / "gpu_check")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here", file=sys.stderr)
        return 2
    cfg = nasconfig.validate(nasconfig.load_params(args.params))
    cfg.update(device=args.device, amp=args.amp, threads=args.threads)
    shutil.rmtree(args.work, ignore_errors=True)
    res = args.work / "results" / cfg["study"]
    tag = args.device + ("-amp" if args.amp else "")
    record: dict = {
        "device": tag,
        "params": str(args.params.relative_to(ROOT)) if args.params.is_relative_to(ROOT) else str(args.params),
        "torch": torch.__version__,
        "jobs": [],
    }
    if args.device == "cuda":
        record["gpu"] = torch.cuda.get_device_name(0)
    for rule, wildcards, inputs, outputs, params in jobs(cfg, res):
        for p in outputs.values():
            p.parent.mkdir(parents=True, exist_ok=True)
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            torch.cuda.synchronize()
        start = time.perf_counter()
        importlib.import_module(f"nasstudy.stages.{rule}").run(inputs, outputs, params, wildcards, MemoryTracker())
        if args.device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        job = {"rule": rule, "wildcards": wildcards, "seconds": round(seconds, 2)}
        if args.device == "cuda":
            job["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        if "metrics" in outputs:
            job["metrics"] = json.loads(outputs["metrics"].read_text())
        record["jobs"].append(job)
        shown = {k: v for k, v in job.get("metrics", {}).items() if isinstance(v, int | float)}
        line = f"{tag:9s} {rule:16s} {json.dumps(wildcards):48s} {seconds:7.1f} s  {json.dumps(shown)[:100]}"
        print(line, flush=True)
    dest = ROOT / "benchmarks" / "results" / f"gpu_check-{tag}.json"
    dest.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {dest.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
