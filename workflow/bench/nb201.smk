# Tabular benchmark: every search method x seeds against a NAS-Bench-201-style lookup table.
#   snakemake -s workflow/bench/nb201.smk --cores all [--configfile params/my-bench.yaml]
# Each job runs one method on `seeds_per_job` seeds: Snakemake runs them in parallel and resumes after a crash.
import sys

from nasstudy import config as nasconfig
from nasstudy import pipeline


# A bench params file stands alone (no overlay): --configfile FILE, or params/bench-nb201.yaml.
try:
    nasconfig.recheck_files(workflow.configfiles)  # repeated keys, aliases: refused
    if not config:
        config.update(nasconfig.read_yaml(f"{workflow.basedir}/../../params/bench-nb201.yaml"))
    config.update(nasconfig.validate(dict(config), "bench"))
except nasconfig.ParamsError as err:
    print(f"params error: {err}", file=sys.stderr)
    sys.exit(1)

RES = f"results/{config['study']}"
FIRSTS = range(0, config["seeds"], config["seeds_per_job"])  # the first seed of each job
METHODS = list(config["methods"])
RUNNER = "../scripts/run_stage.py"  # relative to this file


wildcard_constraints:
    method="[a-z0-9_]+",
    first="[0-9]+",


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


rule bench_search:
    input:
        table=config["table"],
    output:
        history=f"{RES}/runs/{{method}}/seeds-{{first}}/history.csv",
        results=f"{RES}/runs/{{method}}/seeds-{{first}}/results.json",
        timings=f"{RES}/runs/{{method}}/seeds-{{first}}/timings.json",
    params:
        cfg=lambda w: pipeline.stage_params(
            config,
            "space",
            "budgets",
            "search_metric",
            "report_metric",
            "loss_metric",
            table=config["table"],
            methods={w.method: config["methods"][w.method]},
            runs=list(range(int(w.first), min(int(w.first) + config["seeds_per_job"], config["seeds"]))),
        ),
        stage="nasstudy.benchmarks.search",
        code=pipeline.module_code("nasstudy.benchmarks.search"),
    log:
        f"logs/{config['study']}/bench_search/{{method}}/seeds-{{first}}.log",
    threads: 1
    script:
        RUNNER


rule bench_summary:
    input:
        results=expand(f"{RES}/runs/{{method}}/seeds-{{first}}/results.json", method=METHODS, first=FIRSTS),
        timings=expand(f"{RES}/runs/{{method}}/seeds-{{first}}/timings.json", method=METHODS, first=FIRSTS),
        histories=expand(f"{RES}/runs/{{method}}/seeds-{{first}}/history.csv", method=METHODS, first=FIRSTS),
    output:
        summary_csv=f"{RES}/summary.csv",
        summary_md=f"{RES}/summary.md",
        summary_json=f"{RES}/summary.json",
        curves_plot=f"{RES}/curves.png",
    params:
        cfg=pipeline.stage_params(config, "budgets", "search_metric", "report_metric", table=config["table"]),
        stage="nasstudy.benchmarks.summary",
        code=pipeline.module_code("nasstudy.benchmarks.summary"),
    log:
        f"logs/{config['study']}/bench_summary.log",
    threads: 1
    script:
        RUNNER
