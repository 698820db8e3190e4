rule retrain:
    input:
        cls_train=f"{RES}/data/cls_train.npz",
        cls_val=f"{RES}/data/cls_val.npz",
        cls_test=f"{RES}/data/cls_test.npz",
        best=f"{RES}/search/{{space}}/{{method}}/rep{{rep}}/best.json",
    output:
        model=f"{RES}/retrain/{{space}}/{{method}}/rep{{rep}}/model.pt",
        metrics=f"{RES}/retrain/{{space}}/{{method}}/rep{{rep}}/metrics.json",
        timing=f"{RES}/retrain/{{space}}/{{method}}/rep{{rep}}/timing.json",
        curve=report(
            f"{RES}/retrain/{{space}}/{{method}}/rep{{rep}}/curve.csv",
            caption="../workflow/report/retrain.rst",
            category="Retrain",
            subcategory="{space} / {method} / rep{rep}",
        ),
    params:
        cfg=stage_params("space", "retrain"),
        code=stage_code("retrain"),
    log:
        f"{LOGS}/retrain/{{space}}/{{method}}/rep{{rep}}.log",
    threads: config["threads"]
    priority: 10  # the DAG's long chain (evolve -> warmup -> search -> retrain) first
    script:
        RUNNER
