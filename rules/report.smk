def each(pattern, **extra):
    """`pattern` for every space x method x replicate, in that order."""
    return expand(pattern, space=SPACES, method=METHODS, rep=REPS, **extra)


rule report:
    input:
        random_archs=expand(f"{RES}/supernet/{{space}}/random_archs.csv", space=SPACES),
        fronts=expand(
            f"{RES}/space/{{m}}/gen{{g}}/front.csv", m=config["evolution"]["methods"], g=range(1, GENS + 1)
        ),
        op_stats=expand(
            f"{RES}/space/{{m}}/gen{{g}}/op_stats.csv", m=config["evolution"]["methods"], g=range(1, GENS + 1)
        ),
        search_best=each(f"{RES}/search/{{space}}/{{method}}/rep{{rep}}/best.json"),
        search_history=each(f"{RES}/search/{{space}}/{{method}}/rep{{rep}}/history.csv"),
        retrain_metrics=each(f"{RES}/retrain/{{space}}/{{method}}/rep{{rep}}/metrics.json"),
        retrain_timing=each(f"{RES}/retrain/{{space}}/{{method}}/rep{{rep}}/timing.json"),
        ranking_sample=expand(f"{RES}/ranking/{{space}}/sample.csv", space=SPACES if RANKED else []),
        ranking_metrics=expand(f"{RES}/ranking/{{space}}/arch{{index}}/metrics.json", space=SPACES, index=RANKED),
        transfer_metrics=expand(
            f"{RES}/transfer/{{task}}/{{space}}/{{method}}/metrics.json", task=TASKS, space=SPACES, method=TRANSFER_METHODS
        ),
        transfer_examples=expand(
            f"{RES}/transfer/{{task}}/{{space}}/{{method}}/examples.png", task=TASKS, space=SPACES, method=TRANSFER_METHODS
        ),
    output:
        summary_csv=report(f"{RES}/report/summary.csv", caption="../workflow/report/summary.rst", category="Summary"),
        summary_md=f"{RES}/report/summary.md",
        summary_html=report(
            f"{RES}/report/summary.html", caption="../workflow/report/summary_html.rst", category="Summary"
        ),
        summary_json=f"{RES}/report/summary.json",
        replicates_csv=report(
            f"{RES}/report/replicates.csv", caption="../workflow/report/replicates.rst", category="Summary"
        ),
        report_json=f"{RES}/report/report.json",
        pareto_plot=report(f"{RES}/report/pareto.png", caption="../workflow/report/pareto.rst", category="Search"),
        search_plot=report(f"{RES}/report/search.png", caption="../workflow/report/search.rst", category="Search"),
        ops_plot=report(f"{RES}/report/ops.png", caption="../workflow/report/ops.rst", category="Space evolution"),
        correlation_plot=report(
            f"{RES}/report/correlation.png", caption="../workflow/report/correlation.rst", category="Retrain"
        ),
    params:
        # Params order of rows and op rows (rules pass no section otherwise: rows came out alphabetically).
        cfg=stage_params(
            order={
                "spaces": SPACES,
                "methods": METHODS,
                "evolution": config["evolution"]["methods"],
                "pool": config["space"]["pool"],
            }
        ),
        code=stage_code("report"),
    log:
        f"{LOGS}/report.log",
    threads: 1
    script:
        RUNNER
