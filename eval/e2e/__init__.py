"""End-to-end evaluation (the W2 workload): `python -m eval.e2e --config configs/eval/<name>.yaml`.

`run` holds the stages (decompose, answers, judge, report), `workdir` the state they share,
`metrics` the figures, `report` their tables and plots, `judge` the local pairwise judge.
"""
