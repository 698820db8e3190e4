# The ranking sample (nasstudy.stages.ranking): seeded uniform archs per space, scored by the
# supernet as search scores them, then each trained from scratch as retrain trains a winner.
rule ranking_sample:
    input:
        cls_train=f"{RES}/data/cls_train.npz",
        cls_val=f"{RES}/data/cls_val.npz",
        supernet=f"{RES}/supernet/{{space}}/supernet.pt",
    output:
        sample=f"{RES}/ranking/{{space}}/sample.csv",
    params:
        cfg=stage_params(
            "space", "ranking", supernet={k: config["supernet"][k] for k in ("bn_recal_batches", "batch_size")}
        ),
        code=stage_code("ranking_sample"),
    log:
        f"{LOGS}/ranking/{{space}}/sample.log",
    threads: config["threads"]
    script:
        RUNNER


rule ranking:
    input:
        cls_train=f"{RES}/data/cls_train.npz",
        cls_val=f"{RES}/data/cls_val.npz",
        cls_test=f"{RES}/data/cls_test.npz",
        sample=f"{RES}/ranking/{{space}}/sample.csv",
    output:
        metrics=f"{RES}/ranking/{{space}}/arch{{index}}/metrics.json",
        timing=f"{RES}/ranking/{{space}}/arch{{index}}/timing.json",
        curve=f"{RES}/ranking/{{space}}/arch{{index}}/curve.csv",
    params:
        cfg=stage_params("space", "retrain"),
        code=stage_code("ranking"),
    log:
        f"{LOGS}/ranking/{{space}}/arch{{index}}.log",
    threads: config["threads"]
    script:
        RUNNER
