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


def pid_running(pid: int | None) -> bool:
    """pid_alive, but a zombie (exited, not yet reaped by its parent) counts as gone."""
    if not pid_alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc: pid_alive's answer
    return state != b"Z"
