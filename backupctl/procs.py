"""Whether a process of this machine still runs: the one liveness test behind the state
database's Running jobs, the repository lock's staleness, the scheduler and tempdir's sweep.

A pid that exists but belongs to another user (PermissionError) counts as alive: when in
doubt, a lock or a Running job is left alone rather than taken over. A leaf module: it imports
only `os`.
"""

from __future__ import annotations

import os


def pid_alive(pid: int | None) -> bool:
    """True when a process with this pid exists on this machine (None and 0: no process)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stat_fields(pid: int) -> list[bytes]:
    """/proc/PID/stat from field 3 (the state) on; [] where /proc does not tell. The command
    name (field 2) may contain spaces and ')', so the split starts after its last ')'."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return []
    return data[data.rfind(b")") + 2 :].split()


def pid_running(pid: int | None) -> bool:
    """pid_alive, but a zombie (exited, not yet reaped by its parent) counts as gone."""
    if not pid or not pid_alive(pid):
        return False
    fields = stat_fields(pid)
    return not fields or fields[0] != b"Z"
