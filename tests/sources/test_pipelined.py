"""sources/database.pipelined: dump tools start ahead of their turn, but never a data dump
while another one streams (it would hold its snapshot and locks for the whole of it)."""

from __future__ import annotations

import os
import subprocess
import sys

from backupctl.sources.database import Stream, pipelined
from backupctl.sources.dbutil import ToolProcess


def _plan(kinds: str) -> tuple[list[Stream], list[str]]:
    """Streams named s0, h1... (s: small, h: heavy) whose start is logged in `started`."""
    started: list[str] = []

    def starter(name: str):
        def start() -> ToolProcess:
            started.append(name)
            return ToolProcess(["printf", name], env={"PATH": os.environ["PATH"]}, what=name)

        return start

    names = [f"{k}{i}" for i, k in enumerate(kinds)]
    return [Stream(n, starter(n), heavy=n[0] == "h") for n in names], started


def test_opening_a_small_stream_starts_the_next_ones_up_to_the_first_data_dump():
    streams, started = _plan("sssshh")
    entries = pipelined(streams, ahead=3)
    assert started == []  # nothing runs before the engine opens the first entry
    outputs = []
    log = []
    for entry in entries:
        assert entry.open is not None
        fh = entry.open()
        log.append(list(started))
        outputs.append(fh.read())
    assert outputs == [s.path.encode() for s in streams]  # each entry reads its own tool
    assert log == [
        ["s0", "s1", "s2", "s3"],  # s0 and the next three
        ["s0", "s1", "s2", "s3", "h4"],  # s1: s2, s3 already run, then the first data dump
        ["s0", "s1", "s2", "s3", "h4"],  # s2: stops at h4, never past it to h5
        ["s0", "s1", "s2", "s3", "h4"],
        ["s0", "s1", "s2", "s3", "h4"],  # opening a data dump starts nothing ahead
        ["s0", "s1", "s2", "s3", "h4", "h5"],  # h5 starts at its own turn
    ]
    assert len(set(started)) == len(started)  # each tool started once


def test_a_single_database_starts_its_dump_with_the_globals():
    streams, started = _plan("ssh")
    entries = pipelined(streams)
    assert entries[0].open is not None
    entries[0].open()
    assert started == ["s0", "s1", "h2"]


def test_the_console_script_collects_garbage_again_once_the_config_is_loaded(tmp_path):
    """cli/fast_start: run() pauses the cyclic collector for start-up only."""
    probe = (
        "import gc, sys\n"
        "from backupctl.cli import context, fast_start\n"
        "fast_start.pause_gc()\n"
        "assert not gc.isenabled()\n"
        "try:\n"
        "    context.config()\n"
        "except BaseException:\n"
        "    pass\n"
        "assert gc.isenabled(), 'the collector stayed off'\n"
        "assert gc.get_freeze_count() > 1000\n"
        "print('ok')\n"
    )
    env = {**os.environ, "BACKUPCTL_CONFIG": str(tmp_path / "missing.yaml")}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "ok", out.stderr


def test_a_dump_tool_is_checked_and_reaped_when_its_output_ends():
    """ToolProcess.output(): the end of the stream waits for the tool and raises its failure at
    once (not when the whole backup finishes), and closes its pipes and stderr file."""
    import pytest

    from backupctl.errors import SourceError

    env = {"PATH": os.environ["PATH"]}
    ok = ToolProcess(["sh", "-c", "printf data; echo note >&2"], env=env, what="good dump")
    out = ok.output()
    assert out.read(100) == b"data"
    assert out.read(100) == b""  # the end: checked here
    assert ok.proc.returncode == 0 and ok.stdout.closed
    assert ok.check() == "note"  # finish() gets the same result again

    bad = ToolProcess(
        ["sh", "-c", "printf part; echo 'permission denied for table b' >&2; exit 1"],
        env=env,
        what="bad dump",
    )
    out = bad.output()
    assert out.read(100) == b"part"
    with pytest.raises(SourceError, match=r"bad dump failed \(exit code 1\): permission denied for table b"):
        out.read(100)
    assert bad.proc.returncode == 1 and bad.stdout.closed
