"""Shared helpers for the core tests: running the CLI, writing configs, comparing trees.

Imported by the test modules as `import helpers` (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from backupctl.repo.crypto import generate_key_file

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass
class CliResult:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def __str__(self) -> str:  # shown in assertion messages
        return (
            f"backupctl {' '.join(self.args)} -> exit {self.returncode}\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["NO_COLOR"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


def cli_command(*args: str | os.PathLike[str]) -> list[str]:
    return [sys.executable, "-m", "backupctl", *map(str, args)]


def run_cli(
    *args: str | os.PathLike[str],
    env: dict[str, str] | None = None,
    input: str | None = None,
    timeout: float = 120,
    cwd: str | os.PathLike[str] | None = None,
) -> CliResult:
    """Run `backupctl ARGS` in a subprocess (stdin not a TTY) and capture everything."""
    proc = subprocess.run(
        cli_command(*args),
        env=cli_env(env),
        input=input if input is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )
    return CliResult([str(a) for a in args], proc.returncode, proc.stdout, proc.stderr)


def run_ok(*args: str | os.PathLike[str], **kwargs: Any) -> CliResult:
    result = run_cli(*args, **kwargs)
    assert result.returncode == 0, str(result)
    assert "Traceback" not in result.stderr, str(result)
    return result


def assert_one_line_error(result: CliResult, exit_code: int, *needles: str) -> None:
    """The documented exit code, a single `error:` line on stderr, no traceback."""
    assert result.returncode == exit_code, str(result)
    assert "Traceback" not in result.stderr, str(result)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, f"expected exactly one error line\n{result}"
    for needle in needles:
        assert needle in errors[0], f"{needle!r} not in the error line\n{result}"


# ---- configuration ------------------------------------------------------------------


def write_config(
    path: Path,
    *,
    sources: Sequence[dict[str, Any]],
    repository: Path,
    key_file: Path | None = None,
    deployment: str = "app",
    settings: dict[str, Any] | None = None,
    extra_deployments: dict[str, Any] | None = None,
) -> Path:
    """A config with one deployment of `sources` to a local destination and a new key file."""
    key_file = key_file or path.parent / "repo.key"
    if not key_file.exists():
        generate_key_file(key_file)
    doc: dict[str, Any] = {
        "destinations": {"local": {"type": "local", "path": str(repository)}},
        "deployments": {deployment: {"sources": [dict(s) for s in sources], "destinations": ["local"]}},
        "encryption": {"key_file": str(key_file)},
    }
    if extra_deployments:
        doc["deployments"].update(extra_deployments)
    if settings:
        doc["settings"] = settings
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        YAML(typ="safe", pure=True).dump(doc, fh)
    return path


def load_yaml(path: Path) -> Any:
    return YAML(typ="safe", pure=True).load(path.read_text())


def dump_yaml(doc: Any, path: Path) -> None:
    with path.open("w") as fh:
        YAML(typ="safe", pure=True).dump(doc, fh)


# ---- trees --------------------------------------------------------------------------


def restored(target: Path, source: Path) -> Path:
    """Where a source path lands under a restore --target (its absolute path re-rooted)."""
    return target / Path(os.path.abspath(source)).relative_to("/")


def snapshot_tree(root: Path, *, with_content: bool = True) -> dict[str, Any]:
    """Everything a round trip must preserve, keyed by path relative to root.

    Files: mode, mtime_ns, uid, gid, sha256 (or bytes); symlinks: target; dirs: mode,
    mtime_ns; hard links: the group of paths sharing an inode (as the sorted tuple).
    """
    out: dict[str, Any] = {}
    inodes: dict[int, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("symlink", os.readlink(full), st.st_uid, st.st_gid)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_uid, st.st_gid)
            elif stat.S_ISREG(st.st_mode):
                digest = file_digest(Path(full)) if with_content else None
                out[rel] = [
                    "file",
                    stat.S_IMODE(st.st_mode),
                    st.st_mtime_ns,
                    st.st_uid,
                    st.st_gid,
                    st.st_size,
                    digest,
                ]
                inodes.setdefault(st.st_ino, []).append(rel)
            else:
                out[rel] = ("other", stat.S_IFMT(st.st_mode))
    for paths in inodes.values():
        group = tuple(sorted(paths))
        for p in paths:
            out[p].append(group)
            out[p] = tuple(out[p])
    return out


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def assert_same_tree(expected: dict[str, Any], actual: dict[str, Any]) -> None:
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    assert not missing, f"missing after restore: {missing[:20]}"
    assert not extra, f"unexpected after restore: {extra[:20]}"
    diffs = [(p, expected[p], actual[p]) for p in sorted(expected) if expected[p] != actual[p]]
    assert not diffs, "differences (path, expected, actual):\n" + "\n".join(map(repr, diffs[:20]))


def make_sample_tree(root: Path, *, seed: int = 1) -> Path:
    """A small tree with every kind of object the files source handles."""
    import random

    rnd = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "docs").mkdir()
    (root / "docs" / "readme.txt").write_text("hello backupctl\n" * 100)
    (root / "docs" / "empty.txt").write_bytes(b"")
    (root / "docs" / "name with spaces ü€.md").write_text("unicode ✓\n")
    (root / "data").mkdir()
    (root / "data" / "random.bin").write_bytes(rnd.randbytes(700 * 1024))  # > 512 KiB: CDC-chunked
    (root / "data" / "small.bin").write_bytes(rnd.randbytes(3000))
    (root / "data" / "script.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "data" / "script.sh", 0o750)
    os.chmod(root / "data" / "small.bin", 0o600)
    (root / "empty_dir").mkdir()
    (root / "deep" / "a" / "b" / "c").mkdir(parents=True)
    (root / "deep" / "a" / "b" / "c" / "leaf").write_text("leaf")
    os.symlink("docs/readme.txt", root / "link_rel")
    os.symlink("/nonexistent/target", root / "link_dangling")
    os.symlink("docs", root / "link_dir")
    os.link(root / "docs" / "readme.txt", root / "data" / "hardlink_to_readme")
    os.chmod(root / "empty_dir", 0o700)
    # Distinct, old mtimes (set last; directories after their content).
    t = 1_600_000_000_123_456_789
    for i, p in enumerate(sorted(root.rglob("*"), key=lambda p: -len(p.parts))):
        os.utime(p, ns=(t + i * 1_000_000_007, t + i * 1_000_000_007), follow_symlinks=False)
    os.utime(root, ns=(t, t))
    return root


def service(config_path: Path, reporter: Any = None) -> Any:
    """The engine façade on a config file, in-process (state dir from XDG_STATE_HOME)."""
    from backupctl.backups.service import Service
    from backupctl.config.loader import load_config

    return Service(load_config(config_path), reporter)
