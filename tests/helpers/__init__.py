"""Code the tests share that is not itself a test: tiny inputs, a toy space, the end-to-end project
copy, a throwaway SLURM cluster, fork-server jobs. pytest puts tests/ on sys.path (rootdir-relative
imports, no tests/__init__.py), so test modules import these as `helpers.<module>`."""
