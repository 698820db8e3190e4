rule init_space:
    output:
        space_state=f"{RES}/space/gen0/space_state.json",
    params:
        cfg=stage_params("space"),
        code=stage_code("init_space"),
    log:
        f"{LOGS}/init_space.log",
    localrule: True
    script:
        RUNNER


def previous_space_state(wildcards):
    gen = int(wildcards.gen)
    if gen == 1:
        return f"{RES}/space/gen0/space_state.json"
    return f"{RES}/space/{wildcards.method}/gen{gen - 1}/space_state.json"


rule evolve_space:
    input:
        cls_train=f"{RES}/data/cls_train.npz",
        cls_val=f"{RES}/data/cls_val.npz",
        space_state=previous_space_state,
    output:
        space_state=f"{RES}/space/{{method}}/gen{{gen}}/space_state.json",
        front=f"{RES}/space/{{method}}/gen{{gen}}/front.csv",
        op_stats=f"{RES}/space/{{method}}/gen{{gen}}/op_stats.csv",
        supernet=f"{RES}/space/{{method}}/gen{{gen}}/supernet.pt",
        metrics=f"{RES}/space/{{method}}/gen{{gen}}/metrics.json",
    params:
        cfg=lambda w: stage_params("space", "supernet", evolution={w.method: config["evolution"][w.method]}),
        code=stage_code("evolve_space"),
    log:
        f"{LOGS}/evolve_space/{{method}}/gen{{gen}}.log",
    threads: config["threads"]
    priority: 40  # the DAG's long chain (evolve -> warmup -> search -> retrain) first
    script:
        RUNNER
