"""The packages below the CLI never depend on the UI: import-linter's contract, and no print() below the CLI."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NON_UI_PACKAGES = (
    "backups", "schedule", "pitr", "clone", "drill", "monitor", "notify", "repo", "sources",
    "destinations", "config", "policy",
)  # fmt: skip


def test_import_linter_contracts_pass() -> None:
    exe = shutil.which("lint-imports")
    if exe is None:
        cmd = [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports_command; lint_imports_command()",
        ]
    else:
        cmd = [exe]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " 0 broken" in proc.stdout, proc.stdout
    assert "never import the UI KEPT" in proc.stdout, (
        "the UI layering contract was not checked:\n" + proc.stdout
    )
    whole = [ln for ln in proc.stdout.splitlines() if ln.startswith("backupctl: the whole package in layers")]
    assert whole and all(ln.endswith(" KEPT") for ln in whole), "the package-wide layers:\n" + proc.stdout
    for package in ("pitr", "clone"):
        kept = [
            ln for ln in proc.stdout.splitlines() if ln.startswith(f"{package}: ") and ln.endswith(" KEPT")
        ]
        assert kept, f"the {package} layers contract was not checked:\n" + proc.stdout


def _print_calls(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(), filename=str(path))
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
            lines.append(node.lineno)
        # sys.stdout.write / sys.stderr.write are printing too.
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "write"
            and isinstance(node.func.value, ast.Attribute)
            and node.func.value.attr in ("stdout", "stderr")
            and isinstance(node.func.value.value, ast.Name)
            and node.func.value.value.id == "sys"
        ):
            lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("package", NON_UI_PACKAGES)
def test_no_print_below_the_cli(package: str) -> None:
    base = ROOT / "backupctl" / package
    assert base.is_dir(), f"backupctl/{package} is gone: update NON_UI_PACKAGES"
    offenders = {
        str(p.relative_to(ROOT)): lines for p in sorted(base.rglob("*.py")) if (lines := _print_calls(p))
    }
    assert not offenders, f"print()/sys.std*.write in non-UI modules (use the Reporter): {offenders}"


def test_ast_check_detects_print(tmp_path: Path) -> None:
    """The checker itself must be able to fail."""
    sample = tmp_path / "m.py"
    sample.write_text("import sys\ndef f():\n    print('x')\n    sys.stderr.write('y')\n")
    assert _print_calls(sample) == [3, 4]
