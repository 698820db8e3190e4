# Space evolution on NAS-Bench-201 by table: NSE, AutoSpace-elite and a random-subspace baseline x seeds.
#   snakemake -s workflow/bench/space_nb201.smk --cores all [--configfile params/my-bench-space.yaml]
# Each (method, seed) is its own job (an MLflow child run); the summary plots best-in-subspace per generation.
import sys

from nasstudy import config as nasconfig
from nasstudy import pipeline


# A bench params file stands alone (no overlay): --configfile FILE, or params/bench-space-nb201.yaml.
try:
    nasconfig.recheck_files(workflow.configfiles)  # repeated keys, aliases: refused
    if not config:
        config.update(nasconfig.read_yaml(f"{workflow.basedir}/../../params/bench-space-nb201.yaml"))
    config.update(nasconfig.validate(dict(config), "bench_space"))
except nasconfig.ParamsError as err:
    print(f"params error: {err}", file=sys.stderr)
    sys.exit(1)

RES = f"results/{config['study']}"
RUNS = range(config["seeds"])
METHODS = list(config["methods"])
RUNNER = "../scripts/run_stage.py"  # relative to this file


wildcard_constraints:
    method="[a-z0-9_]+",
    run="[0-9]+",


onstart:
    pipeline.on_start(config)


onsuccess:
    pipeline.on_finish(config, success=True)


onerror:
    pipeline.on_finish(config, success=False)


rule all:
    input:
        f"{RES}/summary.md",
    default_target: True


rule bench_space_evolution:
    input:
        table=config["table"],
    output:
        history=f"{RES}/runs/{{method}}/{{run}}/history.csv",
        result=f"{RES}/runs/{{method}}/{{run}}/result.json",
    params:
        cfg=lambda w: pipeline.stage_params(
            config,
            "space",
            "search_metric",
            "report_metric",
            "generations",
            "tolerance",
            table=config["table"],
            methods={w.method: config["methods"][w.method]},
        ),
        stage="nasstudy.benchmarks.space_evolution",
        code=pipeline.module_code("nasstudy.benchmarks.space_evolution"),
    log:
        f"logs/{config['study']}/bench_space_evolution/{{method}}/{{run}}.log",
    threads: 1
    script:
        RUNNER


rule bench_space_summary:
    input:
        results=expand(f"{RES}/runs/{{method}}/{{run}}/result.json", method=METHODS, run=RUNS),
        histories=expand(f"{RES}/runs/{{method}}/{{run}}/history.csv", method=METHODS, run=RUNS),
    output:
        summary_csv=f"{RES}/summary.csv",
        summary_md=f"{RES}/summary.md",
        summary_json=f"{RES}/summary.json",
        curves_plot=f"{RES}/curves.png",
    params:
        cfg=pipeline.stage_params(
            config, "search_metric", "report_metric", "generations", table=config["table"]
        ),
        stage="nasstudy.benchmarks.space_summary",
        code=pipeline.module_code("nasstudy.benchmarks.space_summary"),
    log:
        f"logs/{config['study']}/bench_space_summary.log",
    threads: 1
    script:
        RUNNER
