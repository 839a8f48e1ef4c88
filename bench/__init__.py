"""Benchmarks and the tuner front end: `ascend-kernels bench` / `ascend-kernels tune`.

bench/runner.py      the runner: suites -> cases -> providers -> checked, timed rows
bench/providers/     one module per op: inputs, the fp32 oracle, bytes/flops, the providers
bench/suites/*.yaml  shape suites taken from real model configurations (_models.yaml)
bench/results/       tables, CSV and plots of the runs shown in the README
"""
