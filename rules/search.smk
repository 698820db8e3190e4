rule search:
    input:
        cls_train=f"{RES}/data/cls_train.npz",
        cls_val=f"{RES}/data/cls_val.npz",
        supernet=f"{RES}/supernet/{{space}}/supernet.pt",
    output:
        history=f"{RES}/search/{{space}}/{{method}}/rep{{rep}}/history.csv",
        best=f"{RES}/search/{{space}}/{{method}}/rep{{rep}}/best.json",
        state=f"{RES}/search/{{space}}/{{method}}/rep{{rep}}/state.json",
        metrics=f"{RES}/search/{{space}}/{{method}}/rep{{rep}}/metrics.json",
    params:
        cfg=lambda w: stage_params(
            "space",
            supernet={k: config["supernet"][k] for k in ("bn_recal_batches", "batch_size")},
            search={"budget": config["search"]["budget"], w.method: config["search"][w.method]},
        ),
        code=stage_code("search"),
    log:
        f"{LOGS}/search/{{space}}/{{method}}/rep{{rep}}.log",
    threads: config["threads"]
    priority: 20  # the DAG's long chain (evolve -> warmup -> search -> retrain) first
    script:
        RUNNER
