"""The offline demo and what tests build on: a miniature M3-Bench (`fixture`), tiny random-weight checkpoints
(`tiny_models`), and the checkpoint-series demo (`synthetic` data, `training`, `series`). Not needed to evaluate
real checkpoints on real data."""
