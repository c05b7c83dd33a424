"""Progress for scripts and terminals (issue 15 item 3): `--progress json|plain|none|auto`.

The real CLI in a subprocess (stderr not a TTY). `--progress json` writes one JSON object per
line on stderr (docs/progress.md) while stdout keeps the single result document; without
--progress and without a TTY (cron) stderr carries no progress at all.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import helpers
import pytest

# Every status line, not only one a second: the tests count lines within one file.
FAST = {"BACKUPCTL_PROGRESS_INTERVAL": "0"}


def progress_lines(stderr: str) -> list[dict[str, Any]]:
    """Every stderr line must be one JSON object (nothing else is written in json mode)."""
    lines = [json.loads(ln) for ln in stderr.splitlines() if ln.strip()]
    assert all(isinstance(doc, dict) and "type" in doc for doc in lines), stderr
    return lines


def statuses(lines: list[dict[str, Any]], operation: str) -> list[dict[str, Any]]:
    return [d for d in lines if d["type"] == "status" and d["operation"] == operation]


def summary(lines: list[dict[str, Any]], operation: str, count: int = 1) -> dict[str, Any]:
    found = [d for d in lines if d["type"] == "summary" and d["operation"] == operation]
    assert len(found) == count, lines
    return found[0]


def make_tree(root: Path, files: int = 300) -> tuple[int, int]:
    """A tree of `files` small files in nested directories plus a symlink; returns the
    entries that are not directories and the bytes of the regular files."""
    total = 0
    for i in range(files):
        sub = root / f"d{i % 7}" / f"e{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        data = os.urandom(100 + (i * 37) % 5000)
        (sub / f"f{i}.bin").write_bytes(data)
        total += len(data)
    (root / "link").symlink_to("d0")
    return files + 1, total


def two_destination_deployment(root: Path, tree: Path) -> dict[str, str]:
    """`app` of `tree` to a primary and a second local destination, uploaded on demand only."""
    helpers.write_config(
        root / "config.yaml", sources=[{"type": "files", "paths": [str(tree)]}], repository=root / "repo"
    )
    doc = helpers.load_yaml(root / "config.yaml")
    doc["destinations"]["second"] = {"type": "local", "path": str(root / "repo2")}
    doc["deployments"]["app"]["destinations"] = ["local", "second"]
    doc["deployments"]["app"]["upload"] = False
    helpers.dump_yaml(doc, root / "config.yaml")
    return {"BACKUPCTL_CONFIG": str(root / "config.yaml"), **FAST}


def test_full_backup_reports_the_trees_totals_before_the_end(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    files, size = make_tree(tree)
    env = two_destination_deployment(tmp_path, tree)
    result = helpers.run_ok("--progress", "json", "backup", "create", "app", "-o", "json", env=env)
    doc = result.json()  # stdout: the single result document
    assert doc["status"] == "Completed"
    lines = progress_lines(result.stderr)
    status = statuses(lines, "backup")
    assert len(status) >= 2, lines
    # The walk ahead gave the real totals before the backup's last status line.
    final_totals = [
        s for s in status[:-1] if s["totals_final"] and s["files_total"] == files and s["bytes_total"] == size
    ]
    assert final_totals, status
    percents = [s["percent"] for s in status if s["percent"] is not None]
    assert percents and percents == sorted(percents), percents
    assert status[-1]["percent"] == 100.0 and status[-1]["bytes_done"] == size
    assert status[-1]["files_done"] == files
    for s in status:
        assert {"percent", "bytes_done", "bytes_total", "files_done", "files_total", "eta_seconds"} <= set(s)
        # No percent from an estimate, and no "final" totals that are still unknown.
        assert s["totals_final"] or s["percent"] is None, s
        assert not s["totals_final"] or s["files_total"] or s["bytes_total"], s
    # A second backup: its totals start as the parent's estimate - still no percent from it.
    (tree / "new.bin").write_bytes(os.urandom(300_000))
    again = helpers.run_ok("--progress", "json", "backup", "create", "app", "-o", "json", env=env)
    for s in statuses(progress_lines(again.stderr), "backup"):
        assert s["totals_final"] or s["percent"] is None, s
        assert not s["totals_final"] or s["files_total"] or s["bytes_total"], s
    done = summary(lines, "backup")
    assert done["ok"] is True and done["result_id"] == doc["id"]
    assert lines.index(done) > lines.index(status[-1])


def test_restore_of_one_large_file_moves_within_the_file(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    big = tree / "big.bin"
    big.write_bytes(os.urandom(24 << 20))
    env = two_destination_deployment(tmp_path, tree)
    backup_id = helpers.run_ok("backup", "create", "app", "-o", "json", env=env).json()["id"]
    target = tmp_path / "restore"
    result = helpers.run_ok(
        "--progress", "json", "backup", "restore", backup_id[:8], "--target", target, "-o", "json", env=env
    )
    json.loads(result.stdout)
    status = statuses(progress_lines(result.stderr), "restore")
    # Several lines while the one file is written, with growing byte counts and no file done.
    within = [s for s in status if 0 < s["bytes_done"] < big.stat().st_size and s["files_done"] == 0]
    assert len({s["bytes_done"] for s in within}) >= 3, status
    done = [s["bytes_done"] for s in status]
    assert done == sorted(done)
    assert status[-1]["percent"] == 100.0
    assert helpers.file_digest(helpers.restored(target, big)) == helpers.file_digest(big)


def test_verify_upload_download_prune_and_check_report_progress(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    make_tree(tree, files=50)
    env = two_destination_deployment(tmp_path, tree)
    backup_id = helpers.run_ok("backup", "create", "app", "-o", "json", env=env).json()["id"]
    runs = {
        "verify": ("backup", "verify", backup_id[:8]),
        "upload": ("backup", "upload", backup_id[:8]),
        "download": ("backup", "download", backup_id[:8], "--out", tmp_path / "out.tar"),
        "prune": ("backup", "prune", "--yes"),
        "check": ("repository", "check", "--destination", "local"),
    }
    for operation, args in runs.items():
        result = helpers.run_ok("--progress", "json", *args, "-o", "json", env=env)
        json.loads(result.stdout)
        lines = progress_lines(result.stderr)
        assert statuses(lines, operation), f"{operation}: no status line\n{result}"
        # prune: one run per repository (both destinations hold one by then).
        assert summary(lines, operation, 2 if operation == "prune" else 1)["ok"] is True
    assert (tmp_path / "out.tar").stat().st_size > 0
    assert (tmp_path / "repo2" / "snapshots" / backup_id).exists()


def test_plain_progress_writes_text_lines(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    files, _ = make_tree(tree, files=40)
    env = two_destination_deployment(tmp_path, tree)
    result = helpers.run_ok("--progress", "plain", "backup", "create", "app", env=env)
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("backup app:")]
    assert lines and lines[-1].endswith("done") and f"{files}/{files} files" in lines[-1], result.stderr


@pytest.mark.parametrize("flag", [[], ["--progress", "auto"], ["--progress", "none"]])
def test_no_progress_without_a_tty(tmp_path: Path, flag: list[str]) -> None:
    tree = tmp_path / "tree"
    make_tree(tree, files=40)
    env = two_destination_deployment(tmp_path, tree)
    result = helpers.run_ok(*flag, "backup", "create", "app", "-o", "json", env=env)
    json.loads(result.stdout)
    assert '"type"' not in result.stderr and "files" not in result.stderr, result.stderr


def test_bad_progress_mode_is_a_usage_error(tmp_path: Path) -> None:
    result = helpers.run_cli("--progress", "fancy", "backup", "list")
    assert result.returncode == 2 and "--progress" in result.stderr and "Traceback" not in result.stderr


def run_on_a_terminal(args: list[str], env: dict[str, str], columns: int) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal of `columns` columns; stdout a pipe."""
    import fcntl
    import pty
    import struct
    import subprocess
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    full = helpers.cli_env({**env, "COLUMNS": str(columns), "TERM": "xterm"})
    full.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        helpers.cli_command(*args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, env=full
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    stdout = proc.stdout.read().decode() if proc.stdout else ""
    code = proc.wait(timeout=120)
    os.close(master)
    return code, stdout, b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize("columns", [80, 120])
def test_bar_on_a_terminal_fits_its_width(tmp_path: Path, columns: int) -> None:
    """auto on a terminal: the bar is drawn (with the totals from the walk ahead) and no
    line is wider than the terminal; stdout still has only the result."""
    import re

    tree = tmp_path / "tree"
    files, _ = make_tree(tree, files=2000)
    env = two_destination_deployment(tmp_path, tree)
    env["BACKUPCTL_PROGRESS_INTERVAL"] = "0"
    code, stdout, stderr = run_on_a_terminal(["backup", "create", "app"], env, columns)
    assert code == 0, stderr
    assert re.fullmatch(r"[0-9a-f]{32}\n", stdout.splitlines()[-1] + "\n"), stdout
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", stderr)  # drop the cursor and colour codes
    lines = [ln for ln in re.split(r"[\r\n]+", text) if ln.strip()]
    bars = [ln for ln in lines if ln.startswith("backup") and "files" in ln]
    assert bars, stderr
    assert any(f"/{files} files" in ln for ln in bars), bars
    assert max(len(ln) for ln in lines) <= columns, [ln for ln in lines if len(ln) > columns]


@pytest.mark.parametrize("mode", ["json", "plain", "bar"])
def test_a_reader_that_closes_stderr_does_not_fail_the_backup(tmp_path: Path, mode: str) -> None:
    """`... 2>&1 >result.json | head -1`: once stderr's reader is gone, progress is dropped,
    the backup completes, the result reaches stdout, and it restores byte for byte."""
    import subprocess

    tree = tmp_path / "tree"
    make_tree(tree, files=60)
    env = helpers.cli_env(two_destination_deployment(tmp_path, tree))
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone before the first progress line
    try:
        proc = subprocess.run(
            helpers.cli_command("--progress", mode, "-o", "json", "backup", "create", "app"),
            env=env, stdout=subprocess.PIPE, stderr=write_end, stdin=subprocess.DEVNULL, timeout=120,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert proc.returncode == 0, proc
    doc = json.loads(proc.stdout)
    assert doc["status"] == "Completed"
    helpers.run_ok("backup", "restore", doc["id"], "--target", str(tmp_path / "out"), "-y", env=env)
    restored = tmp_path / "out" / tree.relative_to("/")
    helpers.assert_same_tree(helpers.snapshot_tree(tree), helpers.snapshot_tree(restored))


def test_bar_asked_for_draws_into_a_pipe(tmp_path: Path) -> None:
    """`--progress bar` is drawn also when stderr is not a terminal (docs/progress.md); it
    printed a lone newline. `auto` in a pipe stays silent (test_no_progress_without_a_tty)."""
    tree = tmp_path / "tree"
    files, _ = make_tree(tree, files=40)
    env = two_destination_deployment(tmp_path, tree)
    result = helpers.run_ok("--progress", "bar", "backup", "create", "app", env=env)
    assert "\x1b[" in result.stderr and "backup" in result.stderr and "files" in result.stderr, repr(
        result.stderr
    )
