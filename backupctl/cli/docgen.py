"""Generates docs/cli.md and completions/ from the command tree.

Run `python -m backupctl.cli.docgen` after changing commands; tests/cli/test_docs_generated.py
fails when the checked-in files differ from what this produces.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from backupctl.cli.main import app
from backupctl.errors import ExitCode

EXIT_CODES = [
    (ExitCode.OK, "success"),
    (ExitCode.FAILED, "failed: the backup, restore, upload or other operation did not complete"),
    (
        ExitCode.USAGE,
        "usage error: unknown command or option, bad option value (an unreadable --to-time or --to-lsn, a non-empty --target for a restore to a moment)",
    ),
    (ExitCode.PARTIAL, "completed with warnings (files vanished or unreadable); the backup is usable"),
    (ExitCode.CONFIG, "configuration missing or invalid, or a secret reference cannot be resolved"),
    (ExitCode.NOT_FOUND, "unknown deployment, backup ID (or ambiguous prefix), destination or policy"),
    (ExitCode.DESTINATION, "destination unreachable, not writable, full, or credentials refused"),
    (ExitCode.INTEGRITY, "verify found damaged or missing objects; a damaged object stopped a restore"),
    (
        ExitCode.DRILL_FAILED,
        "a restore drill failed: the backup did not restore as recorded (`backup drill`; the failing check is named)",
    ),
    (
        ExitCode.PROBLEMS,
        "`status`: at least one deployment has a problem (overdue, last run failed, never backed up...)",
    ),
    (ExitCode.NO_REPOSITORY, "no repository at the destination"),
    (ExitCode.LOCKED, "repository locked by another process"),
    (ExitCode.WRONG_KEY, "wrong key file or passphrase"),
    (ExitCode.FORMAT, "repository written by a newer backupctl"),
    (ExitCode.ABORTED, "confirmation declined, or needed but no terminal to ask on (pass --yes)"),
    (
        ExitCode.INTERRUPTED,
        "interrupted (SIGINT/SIGTERM); a backup leaves nothing half-written, "
        "a restore says how many entries it wrote",
    ),
]

JSON_KEYS = """\
## Output formats, columns and times

`-f/--format FORMAT` (alias `-o/--output`) picks the output of every command:

| format | output |
|---|---|
| `table` | the default: a table or the details of one record; fitted to the terminal's width |
| `json` | one JSON document on stdout |
| `yaml` | the same document as YAML |
| `value` | values only, space-separated, one record per line (as the OpenStack CLI's `-f value`; a line break inside a value is written `\\n`); a list gives its table's columns unless `-c` picks others |
| `csv` | a header of keys, then one row per record (RFC 4180: CRLF line ends, `"` doubled); columns as for `value` |

`-c/--column NAME` (repeatable) keeps only those columns, in that order, in every format: a table
header (`Started`, `"created by"`) or any key of the record (`size_bytes`, `hostname`); for one
record (`show`) it keeps those keys or fields. `--sort-column NAME` (repeatable) orders a list,
`--sort-ascending` (the default) or `--sort-descending`; empty values come last. A name that does
not exist is a usage error (exit code 2) with one line listing the columns that do.

Tables on a terminal fit its width (`$COLUMNS` wins; `--fit-width` fits in a pipe too, `--max-width N`
sets the width, 0 for none): IDs, names and status are never cut; free text (errors, locations,
recurrences) is wrapped first, then the least important columns are left out and a line on stderr
names them. `--wide` shows every column, with extra ones (`backup list`: created by, finished,
files, stored, comment). In a pipe a table has every column, upper-case headers and no colours.

Lists in `json`, `yaml`, `value` and `csv` are complete unless `--limit` is given; `backup list`
as a table shows the newest 20 and says how many more there are (`--all`, `--limit N`).

Times: every document carries UTC ISO 8601 with milliseconds and `Z` (`2026-12-03T15:00:00.000Z`),
in every command (a point-in-time window's start is rounded up to the millisecond, its end down).
Tables show local time with the zone (`2026-12-03 16:00 CET`), or UTC with `--utc`. A schedule's
next run is also shown in its own zone: `policy show` (`2026-12-04 03:30 CET (Europe/Berlin),
21:30 EST`) and `schedule list` (column "In its zone"; JSON key `timezone`).

## JSON output

Every command accepts `-f json` (`-o json`; and `yaml`, `value`, `csv`) and then prints exactly
one document on stdout. Keys are stable: new keys may be added, existing ones are never renamed or
removed. JSON Schemas (Draft 2020-12, every key described) of the documents of `backup list`,
`show`, `create`, `restore` and `verify`, `policy list` and `show`, `schedule list`,
`destination list` and `repository check` and `stats` are in
[docs/schemas/](schemas/) (`backup-list.json`...); tests/cli/test_json_schemas.py checks real output
against them.

A backup record (`backup list` gives a list of them; `backup create` and `backup show` one):

| key | type | meaning |
|---|---|---|
| `id` | string | full backup ID (32 hex characters); any unique prefix is accepted as an argument |
| `short_id` | string | the first 8 characters |
| `deployment` | string | deployment name |
| `method` | string | `files`, `sqlite`, `pg_dump`, `pg_basebackup`, `mariadb-dump`, `mariabackup`; several joined by `,` |
| `type` | string | `full` or `incremental` |
| `status` | string | `Queued`, `Running`, `Completed` (its manifest exists: restorable from its primary destination) or `Failed` (never restorable) |
| `created_by` | string | `manual` or the policy name |
| `started`, `finished` | string | UTC, ISO 8601 with milliseconds (`2026-11-22T05:00:02.123Z`), as every time in JSON |
| `duration_s` | number | seconds |
| `size_bytes` | integer | bytes read from the sources |
| `stored_bytes` | integer | bytes newly written to the repository (after dedup and compression) |
| `files` | integer | file entries |
| `expires` | string or null | when retention deletes it; null for manual backups |
| `comment` | string | |
| `warnings` | integer | number of warnings |
| `error` | string or null | why a backup failed; for a Completed one, which upload failed |
| `parent` | string or null | the backup an incremental one was based on |
| `source_versions` | object | recorded versions (`pg_dump.server_version`, `sqlite.sqlite_version`...) |
| `hostname` | string | where it was taken |
| `destinations` | object | destination name -> `{"state": "stored"\\|"uploaded"\\|"failed"\\|"pending"\\|"not uploaded", "error": ...}` |
| `repository_id` | string | the repository holding it |
| `failed_uploads` | list of strings | destinations whose copy of a Completed backup failed (their error is in `destinations`); the table shows them as "Upload failed" |

`backup list` adds `recoverable_until`: for a completed `pg_basebackup`/`mariabackup` backup whose
deployment archives WAL or binary logs, the last continuously archived moment it can be rolled
forward to (as `pitr show` gives it); null otherwise. The table shows it as "PITR until" when a
listed backup has one.

`backup list` also adds `verified_at` and `drill_passed` (restore drills, `backup drill`): when the
newest passed drill of the backup started (null: none passed), and whether the newest drill passed
(null: never drilled). The table shows them as "Verified": that time, `failed` or `-`.

`backup show` adds `sources`: a list of `{type, method, describe, info, files, dirs, bytes, reused_files, warnings}`,
and, for a `pg_basebackup`/`mariabackup` backup whose deployment has archived WAL or binary logs,
`pitr`: `{"earliest": ..., "latest": ..., "gaps": N}`, the point-in-time window reachable from
this backup (from its end to the last continuously archived moment; both null, with a `reason`,
when the WAL/binlogs it needs are missing) and the number of gaps in the archive after its start.
It also adds `drills`: the backup's drill records, newest first, as `backup drill` prints them.

`backup drill` prints one drill record: `id`, `backup_id`, `deployment`, `started` (UTC),
`seconds` (restore and checks), `restore_seconds`, `passed`, `to_time` (null unless `--to-time`),
`checks` (a list of `{name, passed, detail}`; `name` is `<source type>.<check>`, e.g.
`files.content`, `sqlite.rows`; a failed check's `detail` names the path or table with the
expected and found values) and `host`. It is printed also when the drill failed (exit code 8).

`policy show` adds `pitr` when any of its deployments archives WAL or binary logs: deployment
name -> `{"earliest": ..., "latest": ..., "gaps": N}`, as in `pitr show` (`error` when it
could not be computed).

`schedule run-due` prints a list of rows, one per due run: `kind` (`backup` or `binlog_sync`),
`deployment`, `policy`, `schedule`, `type`, `slot`, `backup_id`, `status`, `error`; backups add
`pruned`, binary log syncs (`pitr.binlog_sync`) add `flush`, `archived` and `already_archived`
(counts) and `current` (the binary log still being written). `schedule list` prints one row per
deployment and kind: `kind`, `deployment`, `policy`, `schedule`, `type`, `next_run`, `last_run`,
`last_status`, `last_error` and `timezone` (the schedule's IANA zone; null for binary log syncs).

With `-f json`, an error is printed on **stderr** as
`{"error": {"kind": "...", "message": "...", "hint": "...", "exit_code": N}}`.
"""


def _commands(cmd: Any, path: list[str]) -> list[tuple[list[str], Any]]:
    out = [(path, cmd)]
    if hasattr(cmd, "commands"):
        for name in sorted(cmd.commands):
            out.extend(_commands(cmd.commands[name], [*path, name]))
    return out


def _param_line(param: Any) -> str:
    help_text = (getattr(param, "help", None) or "").replace("|", "/")
    if param.param_type_name == "argument":
        return f"| `{(param.name or '').upper()}` | {help_text}{'' if param.required else ' (optional)'} | argument |"
    names = ", ".join(f"`{o}`" for o in param.opts + param.secondary_opts)
    default = param.default
    shown = "" if default in (None, False, ()) or callable(default) else f" (default: `{default}`)"
    return f"| {names} | {help_text}{shown} | option |"


def render_cli_md() -> str:
    root = typer.main.get_command(app)
    lines = [
        "# CLI reference",
        "",
        "Generated by `python -m backupctl.cli.docgen`; do not edit by hand.",
        "",
        "Global options go anywhere on the command line (`backupctl backup list -f json`).",
        "",
    ]
    for path, cmd in _commands(root, ["backupctl"]):
        if cmd.hidden:
            continue
        lines.append(f"{'#' * min(2 + len(path) - 1, 4)} `{' '.join(path)}`")
        lines.append("")
        if cmd.help:
            lines.append(cmd.help.strip())
            lines.append("")
        params = [p for p in cmd.params if not getattr(p, "hidden", False) and p.name not in ("help",)]
        if params:  # a group's own options too (`metrics --textfile`); most groups have none
            lines.append("| parameter | meaning | kind |")
            lines.append("|---|---|---|")
            lines.extend(_param_line(p) for p in params)
            lines.append("")
    lines.append("## Exit codes")
    lines.append("")
    lines.append("| code | meaning |")
    lines.append("|---|---|")
    lines.extend(f"| {code} | {text} |" for code, text in EXIT_CODES)
    lines.append("")
    lines.append(JSON_KEYS)
    return "\n".join(lines)


def render_completions() -> dict[str, str]:
    """completions/: what `backupctl completion SHELL` prints (cli/completion.py)."""
    from backupctl.cli.completion import FILES, script

    return {FILES[shell]: script(shell) for shell in FILES}


def main(root: Path = Path(".")) -> int:
    (root / "docs").mkdir(exist_ok=True)
    (root / "docs" / "cli.md").write_text(render_cli_md())
    (root / "docs" / "config.md").write_text(render_config_md())
    (root / "completions").mkdir(exist_ok=True)
    for name, text in render_completions().items():
        (root / "completions" / name).write_text(text)
    return 0


CONFIG_INTRO = """\
# Configuration reference

Generated by `python -m backupctl.cli.docgen` from the configuration models; the prose
is in `backupctl/cli/docgen.py`. Do not edit by hand.

backupctl reads one YAML file: `--config PATH`, else `$BACKUPCTL_CONFIG`, else
`$XDG_CONFIG_HOME/backupctl/config.yaml` (`~/.config/backupctl/config.yaml`).
`backupctl init` writes a commented starter file. Unknown keys are rejected; every error
names the file, the key path and the problem, and exits with code 4.

Secrets are never written inline: every secret option comes as a pair `NAME_env`
(the name of an environment variable) and `NAME_file` (a file whose content, minus a
trailing newline, is the secret). `backupctl config show` prints the effective
configuration with any secret-looking value redacted.

```yaml
destinations:            # name -> destination (docs/destinations.md)
  local: {type: local, path: /var/backups/backupctl}
deployments:             # name -> what to back up, and where
  shop:
    sources:
      - {type: files, paths: [/srv/shop/uploads], exclude: ["*.tmp"]}
      - {type: sqlite, path: /srv/shop/app.db}
    destinations: [local]
    policy: nightly      # omitted: the `default` policy; `none`: no schedule
policies: {}             # name -> schedules and retention (docs/scheduling.md)
encryption:
  key_file: ~/.config/backupctl/repo.key   # or passphrase_env / passphrase_file
settings: {}             # engine tuning
```
"""


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) or str(annotation)
    for module in ("typing.", "pathlib.", "backupctl.config.models.", "backupctl.policy.models."):
        text = text.replace(module, "")
    return text.replace("NoneType", "None")


def _model_table(title: str, model: Any, skip: tuple[str, ...] = ()) -> list[str]:
    from pydantic_core import PydanticUndefined

    lines = [f"### {title}", "", "| key | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        if name in skip or field.exclude:
            continue
        if field.is_required():
            default = "required"
        elif field.default is PydanticUndefined or field.default_factory is not None:
            default = ""
        else:
            default = f"`{field.default}`"
        desc = (field.description or "").replace("|", "/")
        lines.append(
            f"| `{field.alias or name}` | {_type_name(field.annotation).replace('|', '/')} | {default} | {desc} |"
        )
    lines.append("")
    return lines


def render_config_md() -> str:
    from backupctl.config import models
    from backupctl.destinations.base import DESTINATION_TYPES, options_model
    from backupctl.sources.base import SOURCE_TYPES, source_class

    lines = [CONFIG_INTRO, "## Top level", ""]
    lines += _model_table("Top-level keys", models.Config, skip=("path",))
    lines += _model_table("`deployments.NAME`", models.DeploymentConfig)
    lines += _model_table("`deployments.NAME.pitr`", models.PitrConfig)
    lines += _model_table("`encryption`", models.EncryptionConfig)
    lines += _model_table("`settings`", models.Settings)
    lines += ["## Sources", ""]
    for type_name in SOURCE_TYPES:
        try:
            lines += _model_table(f"`type: {type_name}`", source_class(type_name).Options)
        except Exception:  # a plugin module that is not present in this build
            continue
    lines += [
        "## Destinations",
        "",
        "Every destination also takes `connections` (parallel transfers) and `retries`.",
        "",
    ]
    for type_name in DESTINATION_TYPES:
        try:
            lines += _model_table(f"`type: {type_name}`", options_model(type_name))
        except Exception:
            continue
    try:
        from backupctl.policy import models as policy_models

        lines += ["## Policies", "", "See docs/scheduling.md for worked examples.", ""]
        for name in ("Policy", "Schedule", "Hourly", "Daily", "Monthly", "Retention", "Drills"):
            model = getattr(policy_models, name, None)
            if model is not None and hasattr(model, "model_fields"):
                lines += _model_table(f"`{name}`", model)
    except ImportError:
        pass
    lines += _notification_tables()
    return "\n".join(lines)


def _notification_tables() -> list[str]:
    from backupctl.config import notifications as notify_models

    lines = ["## Notifications", "", "See docs/monitoring.md for worked examples.", ""]
    lines += _model_table("`notifications`", notify_models.NotificationsConfig)
    lines += _model_table("`type: webhook`", notify_models.WebhookChannel)
    lines += _model_table("`type: email`", notify_models.EmailChannel)
    lines += _model_table("`type: ping`", notify_models.PingChannel)
    lines += _model_table("`notify` entries (deployments, policies)", notify_models.NotifyRule)
    lines += _model_table("secret reference (header values)", notify_models.SecretRef)
    return lines


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")))
