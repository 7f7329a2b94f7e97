"""SDS metrics (installed as `radar_tasks.metrics`): `catalogue` the metrics our tasks report, `sds` pure math,
`items` per-item records and M3-Bench aggregation, `lmms` lmms-eval glue, `lm_eval` lm-eval 0.4 glue."""
