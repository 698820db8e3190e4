rule prepare_data:
    output:
        cls_train=f"{RES}/data/cls_train.npz",
        cls_val=f"{RES}/data/cls_val.npz",
        cls_test=f"{RES}/data/cls_test.npz",
        scenes_train=f"{RES}/data/scenes_train.npz",
        scenes_val=f"{RES}/data/scenes_val.npz",
        summary=f"{RES}/data/summary.json",
        preview=f"{RES}/data/preview.png",
    params:
        cfg=stage_params("data"),
        code=stage_code("prepare_data"),
    log:
        f"{LOGS}/prepare_data.log",
    threads: config["threads"]
    script:
        RUNNER
