"""Scheduling: `schedule run-due` and the daemon (scheduler.py) and the scheduled PITR log
syncs (scheduled_sync.py). Above the engine's Service; below the CLI."""
