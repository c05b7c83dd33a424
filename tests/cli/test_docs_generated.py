"""Generated files (CLI reference, config reference, completions) must match the code."""

from __future__ import annotations

from pathlib import Path

from backupctl.cli.docgen import render_cli_md, render_completions, render_config_md

ROOT = Path(__file__).resolve().parents[2]


def test_cli_reference_is_current() -> None:
    assert (ROOT / "docs" / "cli.md").read_text() == render_cli_md(), "run: python -m backupctl.cli.docgen"


def test_config_reference_is_current() -> None:
    assert (ROOT / "docs" / "config.md").read_text() == render_config_md(), (
        "run: python -m backupctl.cli.docgen"
    )


def test_completions_are_current() -> None:
    for name, text in render_completions().items():
        assert (ROOT / "completions" / name).read_text() == text, "run: python -m backupctl.cli.docgen"


def test_every_command_has_help_and_an_example() -> None:
    text = render_cli_md()
    sections = text.split("#### ")[1:]
    assert len(sections) >= 8
    for section in sections:
        title = section.splitlines()[0]
        assert "Example:" in section, f"{title} has no example in its help"
