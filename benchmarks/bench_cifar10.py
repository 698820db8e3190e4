"""Wall time and report table of the CIFAR-10 study (params/cifar10.yaml) on this checkout.

    python benchmarks/bench_cifar10.py            # needs ../shared/data/cifar10 and detseg/tiny_coco

Runs `nasstudy run --params params/cifar10.yaml` from scratch (its results/cifar10 folder is removed
first), prints the wall time and the report's table (retrained CIFAR-10 test accuracy on the 10,000
real test images, mAP and mIoU on tiny_coco val), and writes benchmarks/results/cifar10.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, default=ROOT / "params" / "cifar10.yaml")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cifar10.json")
    ap.add_argument("--keep-results", action="store_true", help="rerun only what is missing instead of from scratch")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from nasstudy.config import load_params

    study = load_params(args.params)["study"]
    results = ROOT / "results" / study
    if results.exists() and not args.keep_results:
        shutil.rmtree(results)
    nasstudy = Path(sys.executable).with_name("nasstudy")
    start = time.perf_counter()
    out = subprocess.run([str(nasstudy), "run", "--params", str(args.params)], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"study failed ({out.returncode}):\n{out.stderr[-3000:]}")
    report = json.loads((results / "report" / "report.json").read_text())
    summary_md = (results / "report" / "summary.md").read_text()
    result = {
        "params": str(args.params.relative_to(ROOT)),
        "study_seconds": round(wall, 1),
        "kendall_tau": report.get("kendall_tau"),
        "random_arch_spread": report.get("random_archs"),
        "summary_md": summary_md,
        "git_commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout,
        "env": {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{study} study from scratch: {wall:.1f} s ({wall / 60:.1f} min)")
    print(f"Kendall tau (supernet vs retrained): {report.get('kendall_tau')}")
    print(summary_md)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
