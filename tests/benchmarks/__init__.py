"""Benchmarks a PBX admin sizes hardware by: `python -m tests.benchmarks [--quick] [--json PATH]`.

Each figure is measured next to the comparison it is judged by, in the same run, and each run
checks correctness while it measures (every call stored and delivered exactly once). Load
generators and comparison baselines run in their own processes (`worker.py`), talking to the
process under test over 127.0.0.1 only. docs/benchmarks.md has the figures and what bounds them.
"""
