"""`schedule export`: the same schedules as entries for an existing scheduler.

Contract: what is printed runs as printed on a fresh machine, under cron's environment
(PATH=/usr/bin:/bin, no XDG variables, no virtualenv) or systemd's. Every entry therefore
names the executable by its absolute path (the running console script, or
`<this interpreter> -m backupctl`), the config file by its absolute path (`--config`), and
passes `--quiet` (output only on failure: cron mails only then) and `--retry-lock` (a
backup that finds the repository locked by a prune or a manual backup waits for it instead
of failing its slot; run-due itself is safe to run concurrently, so no `flock` is needed).

Every entry runs `backupctl schedule run-due`, never `backup create` directly: run-due is
what knows time zones, `interval` rules, made-up-once, full-over-incremental, the
per-slot lease and the retention pass, and it starts nothing twice. The external
scheduler only has to wake it up at (or after) the right moments:

* crontab: one `* * * * *` line (`mode="minutely"`, the default; any cron works), or one
  line per schedule under `CRON_TZ=` (`mode="per-schedule"`, for cronie and others that
  support CRON_TZ; fewer wake-ups, same result).
* systemd: a oneshot service (`User=`, `Nice=`, `IOSchedulingClass=`) and one timer:
  `OnCalendar=minutely` by default (a policy edit needs no re-export), or with
  `mode="per-schedule"` an `OnCalendar=` per schedule in the schedule's time zone;
  `Persistent=true` either way.
* kubernetes: per scheduled deployment a ConfigMap (the config of that deployment alone,
  with the pod's paths), a PersistentVolumeClaim for its state, and a CronJob
  (`concurrencyPolicy: Forbid`, `startingDeadlineSeconds`); a claim per local repository;
  the key and every `*_env`/`*_file` secret referenced from Secrets, never inlined.

What the target cannot express (intervals; `L`, the last day of the month, outside
systemd; for Kubernetes, a deployment whose schedules differ) is woken up more often
(every 5 minutes; days 28-31) and run-due decides.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

from croniter import croniter

from backupctl.errors import BackupctlError
from backupctl.policy.models import Policy, Schedule
from backupctl.policy.resolve import deployments_using, policies_in_use
from backupctl.policy.schedule import recurrence_text

if TYPE_CHECKING:
    from backupctl.config.models import Config

Format = Literal["crontab", "systemd", "kubernetes"]
FORMATS: tuple[str, ...] = ("crontab", "systemd", "kubernetes")
# How long a scheduled backup waits for a repository lock held elsewhere (a prune, a manual
# backup) before it fails. A failed slot is not retried until the next slot, so waiting is
# better than failing; run-due runs started meanwhile find the slot taken and exit.
RETRY_LOCK = "30m"
NICE = 10  # systemd: backups yield the CPU and the disk to the services they protect
_FALLBACK_CRON = "*/5 * * * *"
_DOW_NAMES = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _schedules(config: Config) -> Iterator[tuple[str, Policy, str, Schedule]]:
    for name, policy in policies_in_use(config).items():
        if policy.paused:
            continue
        for key, schedule in zip(policy.schedule_keys(), policy.schedules, strict=True):
            yield name, policy, key, schedule


def running_command() -> list[str]:
    """The argv prefix that starts this same backupctl from any environment: the absolute
    path of the console script that is running, or `<this interpreter> -m backupctl` when
    run as a module (sys.executable is kept as it is: resolving a virtualenv's python
    symlink would leave the virtualenv)."""
    argv0 = sys.argv[0] if sys.argv else ""
    module = [sys.executable or shutil.which("python3") or "python3", "-m", "backupctl"]
    if not argv0 or argv0 in ("-c", "-m") or argv0.endswith(".py"):
        return module
    if os.sep not in argv0:  # found on PATH by a caller that passed the bare name
        found = shutil.which(argv0)
        return [os.path.abspath(found)] if found else module
    return [os.path.abspath(argv0)]


def run_due_args(config_path: str) -> list[str]:
    """The arguments after the executable (also the Kubernetes container's `args`)."""
    return ["schedule", "run-due", "--config", config_path, "--quiet", "--retry-lock", RETRY_LOCK]


def _config_path(config: Config, config_path: str | None) -> str:
    path = config_path or (str(config.path) if config.path else None)
    if not path:
        raise BackupctlError("schedule export needs the path of the config file", hint="pass --config PATH")
    return os.path.abspath(os.path.expanduser(path))


def export(
    config: Config,
    format: str,
    *,
    command: Sequence[str] | None = None,
    config_path: str | None = None,
    mode: Literal["minutely", "per-schedule"] = "minutely",
    user: str | None = None,
    image: str = "backupctl:latest",
    namespace: str | None = None,
) -> str:
    """Text to install in the target scheduler (see module docstring).

    `command`: the executable's argv prefix (default: running_command()); `config_path`:
    the config file (default: the one `config` was read from), made absolute; `user`:
    systemd's User= (default: the current user).
    """
    if format not in FORMATS:
        raise BackupctlError(f"unknown export format {format!r}", hint=f"use one of {', '.join(FORMATS)}")
    if format == "kubernetes":
        return _kubernetes(config, image, namespace)
    argv = [*(command or running_command()), *run_due_args(_config_path(config, config_path))]
    if format == "crontab":
        return _crontab(config, argv, mode)
    return _systemd(config, argv, mode, user or _current_user())


def _current_user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _header(config: Config, prefix: str) -> list[str]:
    lines = [f"{prefix}Generated by `backupctl schedule export`; runs `schedule run-due`, which starts"]
    lines.append(f"{prefix}whatever is due and nothing twice. Schedules (policy, deployments, recurrence):")
    entries = list(_schedules(config))
    for name, _, key, schedule in entries:
        deps = ", ".join(deployments_using(config, name))
        lines.append(f"{prefix}  {name}/{key} [{deps}]: {recurrence_text(schedule)}")
    if not entries:
        lines.append(f"{prefix}  (no active policy is used by any deployment)")
    return lines


# ---- crontab -------------------------------------------------------------------------


def cron_command(argv: Sequence[str]) -> str:
    """A crontab command field: shell-quoted, with cron's `%` (a newline to cron) escaped."""
    return shlex.join(argv).replace("%", "\\%")


def _crontab(config: Config, argv: list[str], mode: str) -> str:
    lines = _header(config, "# ")
    run = cron_command(argv)
    if mode == "minutely":
        lines.append(f"* * * * * {run}")
        return "\n".join(lines) + "\n"
    by_tz: dict[str, set[str]] = {}
    for _, _, _, schedule in _schedules(config):
        expr, tz = portable_cron(schedule)
        by_tz.setdefault(tz, set()).add(expr)
    for tz in sorted(by_tz):
        lines.append(f"CRON_TZ={tz}")
        lines.extend(f"{expr} {run}" for expr in sorted(by_tz[tz]))
    return "\n".join(lines) + "\n"


# ---- systemd -------------------------------------------------------------------------


def _field(values: list[Any], width: int = 2) -> str:
    if values == ["*"]:
        return "*"
    return ",".join(f"{int(v):0{width}d}" for v in values)


def on_calendar(expr: str, timezone: str) -> list[str]:
    """systemd OnCalendar= values equal to a cron expression (two when cron ORs the days)."""
    minutes, hours, doms, months, dows = croniter(expr).expanded
    time = f"{_field(hours)}:{_field(minutes)}:00"
    month = _field(months)
    day_part = f"*-{month}~01" if doms == ["l"] or "l" in doms else f"*-{month}-{_field(doms)}"
    if dows == ["*"]:
        return [f"{day_part} {time} {timezone}"]
    names = ",".join(dict.fromkeys(_DOW_NAMES[int(d)] for d in dows))
    if doms == ["*"]:
        return [f"{names} *-{month}-* {time} {timezone}"]
    # cron runs when EITHER the day of month OR the weekday matches; systemd needs both.
    return [f"{day_part} {time} {timezone}", f"{names} *-{month}-* {time} {timezone}"]


_SYSTEMD_PLAIN = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


def systemd_exec(argv: Sequence[str]) -> str:
    """An ExecStart= command line: words quoted as systemd parses them, `%` and `$` escaped."""
    words = []
    for arg in argv:
        word = arg.replace("%", "%%").replace("$", "$$")
        if not _SYSTEMD_PLAIN.fullmatch(arg):
            word = '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
        words.append(word)
    return " ".join(words)


def _systemd(config: Config, argv: list[str], mode: str, user: str) -> str:
    service = (
        "# /etc/systemd/system/backupctl-run-due.service\n"
        "[Unit]\n"
        "Description=backupctl: run the backups that are due\n"
        "Wants=network-online.target\n"
        "After=network-online.target\n\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"User={user}\n"
        f"ExecStart={systemd_exec(argv)}\n"
        f"Nice={NICE}\n"
        "IOSchedulingClass=best-effort\n"
        "IOSchedulingPriority=7\n"
    )
    timer = ["# /etc/systemd/system/backupctl-run-due.timer", *_header(config, "# ")]
    if mode == "minutely":
        timer += ["[Unit]", "Description=backupctl: wake the scheduler every minute", "", "[Timer]"]
        timer += ["OnCalendar=minutely"]
    else:
        timer += ["[Unit]", "Description=backupctl: wake the scheduler at each policy's times", "", "[Timer]"]
        calendars: list[str] = []
        for _, _, _, schedule in _schedules(config):
            expr = schedule.cron_expression()
            for value in on_calendar(expr, schedule.timezone) if expr else ["*:0/5"]:
                if value not in calendars:
                    calendars.append(value)
        timer += [f"OnCalendar={c}" for c in calendars] or ["# no active schedules"]
    timer += ["Persistent=true", "AccuracySec=1s", "", "[Install]", "WantedBy=timers.target"]
    return service + "\n" + "\n".join(timer) + "\n"


def portable_cron(schedule: Schedule) -> tuple[str, str]:
    """(expression, time zone) any cron understands; run-due filters the extra wake-ups."""
    expr = schedule.cron_expression()
    if expr is None:
        return _FALLBACK_CRON, "UTC"
    fields = expr.split()
    if "L" in fields[2].upper():  # no `L` outside croniter: wake on days 28-31
        fields[2] = "28-31"
    return " ".join(fields), schedule.timezone


def _kubernetes(config: Config, image: str, namespace: str | None) -> str:
    from backupctl.policy.export_k8s import dump_all, manifests

    notes, docs = manifests(config, image=image, namespace=namespace, run_args=run_due_args)
    header = "\n".join(_header(config, "# ") + [f"# {n}" for n in notes]) + "\n"
    return header + (dump_all(docs) if docs else "")
