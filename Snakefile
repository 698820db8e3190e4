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
include: "rules/transfer.smk"
include: "rules/report.smk"


rule all:
    input:
        rules.report.output,
    default_target: True
