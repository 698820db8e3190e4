"""Benchmarks apart from the study: the stages of the tabular (NAS-Bench-201 style) benchmarks that
workflow/bench/*.smk runs. Each rule there names its module here (`stage=`)."""
