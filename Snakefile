# nasstudy: the whole NAS study as one DAG. Params: params/default.yaml, overlaid by --configfile.
from snakemake.utils import min_version

min_version("9.0")


configfile: f"{workflow.basedir}/params/default.yaml"


report: "workflow/report/workflow.rst"


include: "rules/common.smk"
include: "rules/prepare_data.smk"
include: "rules/evolve_space.smk"
include: "rules/warmup_supernet.smk"
include: "rules/search.smk"
include: "rules/retrain.smk"
include: "rules/ranking.smk"
include: "rules/transfer.smk"
include: "rules/report.smk"


def every_artifact():
    """Every output of every job of the study, not only the report's: Snakemake reruns a job whose
    output is missing only when some target or running job asks for that file, so a deleted
    model.pt (no report input) would otherwise never be rebuilt."""
    evolved = dict(method=config["evolution"]["methods"], gen=range(1, GENS + 1))
    return [
        *rules.prepare_data.output,
        *rules.init_space.output,
        *expand(rules.evolve_space.output, **evolved),
        *expand(rules.warmup_supernet.output, space=SPACES),
        *expand(rules.search.output, space=SPACES, method=METHODS, rep=REPS),
        *expand(rules.retrain.output, space=SPACES, method=METHODS, rep=REPS),
        *expand(rules.ranking_sample.output, space=SPACES if RANKED else []),
        *expand(rules.ranking.output, space=SPACES, index=RANKED),
        *expand(rules.transfer.output, task=TASKS, space=SPACES, method=TRANSFER_METHODS),
        *rules.report.output,
    ]


ARTIFACTS = every_artifact()


rule all:
    input:
        ARTIFACTS,
    default_target: True
