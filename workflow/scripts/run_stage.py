"""Entry point of every rule: the job runs in a worker forked from the study's fork server when one
is up (nasstudy.zygote: no second import of torch and MLflow), else here; nasstudy.runner does it."""

from nasstudy.zygote import run

run(snakemake)  # noqa: F821 - Snakemake injects `snakemake` into scripts
