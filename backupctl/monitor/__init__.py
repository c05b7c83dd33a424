"""Monitoring: per-deployment protection state (health), Prometheus metrics, `status`.

`health.compute` gathers the state once; `metrics` and the `status` command render it.
Below the CLI: never imports Typer/Rich and never prints.
"""
