"""The commented starter config written by `backupctl init`."""

from __future__ import annotations

from pathlib import Path

TEMPLATE = """\
# backupctl configuration. Reference: docs/config.md
# Secrets are never written here: use *_env (an environment variable) or *_file (a file).

destinations:
  # Where backups are stored. Each destination holds a complete repository.
  local:
    type: local
    path: {repository}
  # More destination types (see docs/destinations.md):
  # offsite:
  #   type: s3
  #   bucket: my-backups
  #   prefix: backupctl/
  #   region: eu-central-1

deployments:
  # A deployment is one thing you back up and restore as a unit.
  example:
    sources:
      - type: files
        paths: [{example_path}]
        exclude: ["*.tmp"]
      # - type: sqlite
      #   path: /srv/app/app.db
      # - type: postgres
      #   host: 127.0.0.1
      #   user: postgres
      #   databases: [shop]
      #   password_env: PGPASSWORD_SHOP
    destinations: [local]
    # No `policy:` key means the default policy below; `policy: none` disables schedules.
    # With a mariadb source (method: mariabackup), the scheduler can also archive binary logs
    # for point-in-time recovery (docs/pitr.md):
    # pitr: {{binlog_sync: 5m, flush: true}}

policies:
  # The default policy: a backup every two hours, like managed database platforms.
  # Run `backupctl schedule run-due` every minute from cron (see `backupctl schedule export`).
  default:
    schedules:
      - type: incremental
        hourly: {{every: 2, minute: 0}}
        timezone: UTC
    retention:
      keep_last: 12
      keep_daily: 14
      keep_weekly: 8
      keep_monthly: 12

encryption:
  # The repository key. Keep a copy somewhere else: without it backups cannot be read.
  key_file: {key_file}
  # or: passphrase_env: BACKUPCTL_PASSPHRASE   /   passphrase_file: /path/to/file
"""


def starter_config(*, repository: Path, key_file: Path, example_path: Path) -> str:
    return TEMPLATE.format(repository=repository, key_file=key_file, example_path=example_path)
