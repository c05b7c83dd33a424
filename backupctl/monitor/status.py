"""`backupctl status`: the health document (monitor.health) as one flat row per deployment.

The CLI renders `rows()` as a table (TTY) or plain columns (pipe); `-o json` prints the health
document itself. `problem_lines()` are the problems, one line each, "deployment: kind: message".
"""

from __future__ import annotations

from typing import Any

from backupctl.monitor.health_doc import Health


def rows(health: Health) -> list[dict[str, Any]]:
    """Per deployment: last backup (end) and its age, next run, last good drill and its
    restore seconds, RPO, PITR window end, and the problem kinds ("OK" when none)."""
    out = []
    for d in health["deployments"]:
        last = d["last_backup"]
        drill = d["last_drill"]
        pitr = d["pitr"]
        out.append(
            {
                "deployment": d["deployment"],
                "last_backup": (last["finished"] or last["started"]) if last else None,
                "age_s": last["age_s"] if last else None,
                "next_run": d["next_run"],
                "last_drill": drill["started"] if drill else None,
                "restore_s": drill["restore_seconds"] if drill else None,
                "rpo_s": d["rpo_s"],
                "pitr_until": pitr["window_end"] if pitr else None,
                "problems": ",".join(dict.fromkeys(p["kind"] for p in d["problems"])) or "OK",
            }
        )
    return out


def problem_lines(health: Health) -> list[str]:
    return [
        f"{d['deployment']}: {p['kind']}: {p['message']}"
        for d in health["deployments"]
        for p in d["problems"]
    ]
