"""The benchmark behind `ascend-kernels bench` (the tuner is `ascend_kernels.tuning`).

runner.py       suites -> cases -> providers -> checked, timed rows; tables, CSV, JSON, plots
providers/      one module per op: inputs, the fp32 oracle, bytes/flops, the providers
suites/*.yaml   shape suites taken from real model configurations (_models.yaml)
e2e.py          the end-to-end decode benchmark of a transformers model (`--suite e2e`)

Results of device runs live in the repository's bench/results/, beside bench/gpu/'s scripts.
"""
