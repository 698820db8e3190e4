"""Entry point of every rule: hands the job to nasstudy.runner (logs, MLflow, the stage's run)."""

from nasstudy.runner import run_job

run_job(snakemake)  # noqa: F821 - Snakemake injects `snakemake` into scripts
