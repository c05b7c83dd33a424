"""The size rules of CONTRIBUTING.md, checked on every module of the package.

- No module over 500 lines: a module has one purpose, and a longer one has become two.
- No function body over 80 lines (the signature and the docstring do not count, so Typer
  commands may declare many options), unless its body starts with a comment `# long: <why>`
  that says why it must stay in one piece.

Complexity is ruff's C901 (pyproject.toml, `max-complexity`), run in CI by `ruff check`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import backupctl

PACKAGE = Path(backupctl.__file__).parent
MAX_FILE_LINES = 500
MAX_BODY_LINES = 80


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _body_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[int, int]:
    """(first line, number of lines) of the body after the docstring."""
    body = fn.body
    if len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    first = body[0].lineno
    assert fn.end_lineno is not None
    return first, fn.end_lineno - first + 1


def _says_why_long(lines: list[str], fn: ast.FunctionDef | ast.AsyncFunctionDef, first: int) -> bool:
    """A `# long:` comment between the end of the signature/docstring and the first statement."""
    has_docstring = first != fn.body[0].lineno
    start = (fn.body[0].end_lineno or first) if has_docstring else fn.lineno
    return any(line.strip().startswith("# long:") for line in lines[start - 1 : first])


def test_no_module_over_500_lines() -> None:
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in _modules()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_FILE_LINES
    }
    assert long == {}, f"split these modules by purpose (lines): {long}"


def test_no_function_over_80_lines_without_a_reason() -> None:
    long = []
    for path in _modules():
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            first, n = _body_lines(node)
            if n > MAX_BODY_LINES and not _says_why_long(lines, node, first):
                long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({n} lines)")
    assert long == [], "split these functions, or start the body with `# long: <why>`:\n" + "\n".join(long)


def test_the_checker_sees_long_bodies_and_reasons(tmp_path: Path) -> None:
    """The rule itself: a 90-line body is caught, the same with `# long:` is not."""
    body = "\n".join(f"    x{i} = {i}" for i in range(90))
    plain = ast.parse(f'def f():\n    """doc"""\n{body}\n').body[0]
    source = f'def g():\n    """doc"""\n    # long: one table\n{body}\n'
    reasoned = ast.parse(source).body[0]
    assert isinstance(plain, ast.FunctionDef) and isinstance(reasoned, ast.FunctionDef)
    assert _body_lines(plain)[1] == 90
    first, n = _body_lines(reasoned)
    assert n == 90 and _says_why_long(source.splitlines(), reasoned, first)
    assert not _says_why_long(f'def f():\n    """doc"""\n{body}\n'.splitlines(), plain, _body_lines(plain)[0])
