# Config validation, path helpers and the params each stage receives.
import sys

from nasstudy import config as nasconfig
from nasstudy import pipeline, zygote

try:
    nasconfig.recheck_files(workflow.configfiles)  # repeated keys, aliases: refused as in `nasstudy run`
    config.update(nasconfig.validate(dict(config)))
except nasconfig.ParamsError as err:
    print(f"params error: {err}", file=sys.stderr)
    sys.exit(1)

STUDY = config["study"]
RES = f"results/{STUDY}"
LOGS = f"logs/{STUDY}"
GENS = config["evolution"]["generations"]
SPACES = config["search"]["spaces"]
METHODS = config["search"]["methods"]
TASKS = config["transfer"]["tasks"]
TRANSFER_METHODS = config["transfer"]["methods"] or METHODS  # null: transfer every searched method's arch
REPS = list(range(config["replicates"]))  # seeds per (space, method): the `rep` wildcard of search and retrain
RANKED = list(range(config["ranking"]["sample"]))  # archs per space in the ranking sample (the `index` wildcard)
RUNNER = "../workflow/scripts/run_stage.py"


wildcard_constraints:
    space="[a-z0-9_]+",
    method="[a-z0-9_]+",
    task="[a-z0-9_]+",
    gen="[0-9]+",
    rep="[0-9]+",
    index="[0-9]+",


def stage_params(*sections, **extra):
    """The params a stage sees: seed, device, threads and only the sections it depends on."""
    return pipeline.stage_params(config, *sections, **extra)


def stage_code(rule):
    """The hash of nasstudy.stages.<rule> and every nasstudy module it imports: a param, so that an edit
    to that code reruns the rule (Snakemake does not track modules otherwise)."""
    return pipeline.stage_code(rule)


def space_state_for(space):
    """The space state a search space starts from: gen0 for `initial`, the last generation otherwise."""
    if space == "initial":
        return f"{RES}/space/gen0/space_state.json"
    return f"{RES}/space/{space}/gen{GENS}/space_state.json"


onstart:
    pipeline.on_start(config)
    zygote.start(config["threads"], workflow)  # local jobs fork from it: torch, MLflow imported once


onsuccess:
    zygote.stop()
    pipeline.on_finish(config, success=True, artifacts=ARTIFACTS)


onerror:
    zygote.stop()
    pipeline.on_finish(config, success=False, artifacts=ARTIFACTS)
