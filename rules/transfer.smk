rule transfer:
    input:
        scenes_train=f"{RES}/data/scenes_train.npz",
        scenes_val=f"{RES}/data/scenes_val.npz",
        model=f"{RES}/retrain/{{space}}/{{method}}/rep0/model.pt",  # replicate 0's arch and weights
    output:
        metrics=f"{RES}/transfer/{{task}}/{{space}}/{{method}}/metrics.json",
        timing=f"{RES}/transfer/{{task}}/{{space}}/{{method}}/timing.json",
        examples=report(
            f"{RES}/transfer/{{task}}/{{space}}/{{method}}/examples.png",
            caption="../workflow/report/transfer.rst",
            category="Transfer",
            subcategory="{task}",
            labels={"space": "{space}", "method": "{method}"},
        ),
    params:
        cfg=lambda w: stage_params("space", transfer={w.task: config["transfer"][w.task]}),
        code=stage_code("transfer"),
    log:
        f"{LOGS}/transfer/{{task}}/{{space}}/{{method}}.log",
    threads: config["threads"]
    script:
        RUNNER
