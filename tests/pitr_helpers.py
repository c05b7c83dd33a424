"""Helpers for the point-in-time recovery tests: a config the database's OS user can read,
and a command with which that user can run backupctl's light entry point.

The throwaway servers run as `postgres` (PostgreSQL refuses root), so archive_command and
restore_command run as that user: it must be able to execute a Python that imports
backupctl, read the config and the key file, and write the repository. When this
interpreter lives where `postgres` cannot reach it (e.g. under /root), the system
python3 of the same minor version is used with a copy of the few packages the light entry
point imports (pure Python or abi-compatible extension modules), in a world-readable
directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import helpers

REPO_ROOT = Path(__file__).resolve().parent.parent
LIGHT_PACKAGES = (
    "annotated_types",
    "blake3",
    "cryptography",
    "fastcdc",
    "orjson",
    "click",
    "pydantic",
    "pydantic_core",
    "typing_extensions.py",
    "typing_inspection",
    "zstandard",
    "ruamel",
    "_cffi_backend",
    "_ruamel_yaml",
)
# What an s3 destination adds, for light_command(extra=...): boto3 and its dependencies, and
# croniter (destinations/_common imports backupctl.config.secrets, and the backupctl.config
# package loads its models, which import the policy models).
S3_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six.py", "urllib3", "croniter")


def _runs_as(user: str, argv: list[str], env: dict[str, str] | None = None) -> bool:
    res = subprocess.run(
        ["runuser", "-u", user, "--", "env", *[f"{k}={v}" for k, v in (env or {}).items()], *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    return res.returncode == 0


def _compile(python: Path, tree: Path) -> None:
    """Byte-compile the copy with the interpreter that runs it: `user` cannot write
    __pycache__ there, so without this every push would compile every module again."""
    subprocess.run([str(python), "-m", "compileall", "-q", "-j", "0", str(tree)], capture_output=True)
    (tree / ".compiled").write_text("")


def _world_readable(tree: Path) -> None:
    for root, _dirs, files in os.walk(tree):
        os.chmod(root, 0o755)
        for f in files:
            os.chmod(os.path.join(root, f), 0o644)


def light_command(user: str = "postgres", extra: tuple[str, ...] = ()) -> str:
    """A shell command prefix that runs `python -m backupctl.wal` as `user`.

    `extra`: more top-level packages the copy needs (e.g. S3_PACKAGES for an s3 destination);
    each set of packages gets a copy of its own."""
    if _runs_as(user, [sys.executable, "-c", "import backupctl.wal"]):
        return f"{sys.executable} -m backupctl.wal"
    system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if not system.exists():
        raise RuntimeError(f"{user} cannot run {sys.executable} and there is no {system}")
    suffix = "-" + "-".join(sorted(n.removesuffix(".py") for n in extra)) if extra else ""
    target = (
        Path(tempfile.gettempdir())
        / f"backupctl-light-py{sys.version_info.major}{sys.version_info.minor}{suffix}"
    )
    packages = LIGHT_PACKAGES + tuple(extra)
    if not (target / ".complete").exists():
        site = next(Path(p) for p in sys.path if p.endswith("site-packages") and Path(p, "pydantic").exists())
        tmp = Path(tempfile.mkdtemp(prefix="backupctl-light-"))
        for entry in site.iterdir():
            if any(entry.name == n or entry.name.startswith(n + ".") for n in packages):
                if entry.is_dir():
                    shutil.copytree(
                        entry, tmp / entry.name, ignore=shutil.ignore_patterns("__pycache__", "tests")
                    )
                else:
                    shutil.copy2(entry, tmp / entry.name)
        _compile(system, tmp)
        (tmp / ".complete").write_text("")
        _world_readable(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another test process made it first
            shutil.rmtree(tmp, ignore_errors=True)
    elif not (target / ".compiled").exists():  # made before the copy was byte-compiled
        _compile(system, target)
        _world_readable(target)
    pythonpath = f"{target}:{REPO_ROOT}"
    imports = ", ".join(["backupctl.wal", *(n.removesuffix(".py") for n in extra)])
    if not _runs_as(user, [str(system), "-c", f"import {imports}"], {"PYTHONPATH": pythonpath}):
        raise RuntimeError(f"{user} cannot import backupctl.wal with {system}")
    return f"PYTHONPATH={pythonpath} {system} -m backupctl.wal"


class PitrDeployment:
    """Deployment `app` in a directory the database's OS user can read (config, key, repository)."""

    def __init__(self, sources: list[dict[str, Any]], owner: str = "postgres") -> None:
        import pwd

        self.owner = pwd.getpwnam(owner)
        self.root = Path(tempfile.mkdtemp(prefix="backupctl-pitr-"))
        os.chmod(self.root, 0o755)
        self.repository = self.root / "repo"
        self.key_file = self.root / "repo.key"
        self.config = helpers.write_config(
            self.root / "config.yaml", sources=sources, repository=self.repository, key_file=self.key_file
        )
        os.chmod(self.config, 0o644)
        self.env = {"BACKUPCTL_CONFIG": str(self.config)}

    def hand_over(self) -> None:
        """Give the repository and the key file to the database's OS user (root keeps access)."""
        for path in [self.key_file, self.repository, *self.repository.rglob("*")]:
            os.chown(path, self.owner.pw_uid, self.owner.pw_gid)

    def run(self, *args: Any, **kwargs: Any) -> helpers.CliResult:
        return helpers.run_cli(*args, env={**self.env, **kwargs.pop("env", {})}, **kwargs)

    def ok(self, *args: Any, **kwargs: Any) -> helpers.CliResult:
        return helpers.run_ok(*args, env={**self.env, **kwargs.pop("env", {})}, **kwargs)

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
