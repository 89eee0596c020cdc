"""Hand-run benchmarks for the pipeline (never collected by the test suite).

Each module is runnable as ``python -m bench.<name>``; see ``bench/README.md``.
"""
