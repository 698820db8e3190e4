rule warmup_supernet:
    input:
        cls_train=f"{RES}/data/cls_train.npz",
        cls_val=f"{RES}/data/cls_val.npz",
        space_state=lambda w: space_state_for(w.space),
    output:
        supernet=f"{RES}/supernet/{{space}}/supernet.pt",
        metrics=f"{RES}/supernet/{{space}}/metrics.json",
        random_archs=report(
            f"{RES}/supernet/{{space}}/random_archs.csv",
            caption="../workflow/report/supernet.rst",
            category="Supernet",
            subcategory="{space}",
        ),
    params:
        cfg=stage_params("space", "supernet"),
        code=stage_code("warmup_supernet"),
    log:
        f"{LOGS}/warmup_supernet/{{space}}.log",
    threads: config["threads"]
    priority: 30  # the DAG's long chain (evolve -> warmup -> search -> retrain) first
    script:
        RUNNER
