"""Queries to NAS-Bench-201's best arch, per search method, in-process (no Snakemake).

    python benchmarks/bench_methods_nb201.py --methods rea relativenas --seeds 100

Runs `nasstudy.benchmarks.search`'s search for each (method, seed) with the method specs of
params/bench-nb201.yaml (or `--params`) in this process, then prints the summary row per
method that `nasstudy.benchmarks.summary` would write (found, stalled, mean/median queries, s/run) and
writes it to benchmarks/results/methods_nb201.json. A quick check of one method's mechanics before
the full benchmark (workflow/bench/nb201.smk).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, default=ROOT / "params" / "bench-nb201.yaml")
    ap.add_argument("--methods", nargs="+", default=["rea"])
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--first", type=int, default=0, help="first seed (run number)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KNOB=VALUE", help="override a method knob (json value)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "methods_nb201.json")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from nasstudy import config as nasconfig
    from nasstudy.benchmarks import search, summary

    params = nasconfig.validate(nasconfig.read_yaml(args.params), "bench")
    params["table"] = str((ROOT / params["table"]).resolve())  # relative to the repo root, as Snakemake reads it
    rows = []
    for method in args.methods:
        spec = json.loads(json.dumps(params["methods"][method]))
        for item in args.set:
            key, value = item.split("=", 1)
            spec.setdefault("params", {})[key] = json.loads(value)
        results, timings = [], []
        start = time.perf_counter()
        for run in range(args.first, args.first + args.seeds):
            _, result, seconds = search.search_one({**params, "methods": {method: spec}}, method, run)
            results.append(result)
            timings.append({"run": run, "seconds": seconds})
        (row,) = summary.summarise(results, timings, list(params["budgets"]))
        row["spec"], row["wall_seconds"] = spec, round(time.perf_counter() - start, 1)
        rows.append(row)
        keys = ("found", "stalled", "stalled_queries_mean", "queries_mean", "queries_median",
                "queries_mean_with_misses", "found_or_predicted", "queries_or_predicted_mean")  # fmt: skip
        print(f"{method} {spec}: " + ", ".join(f"{k}={row[k]}" for k in keys) + f"; {row['seconds_mean']} s/run")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
