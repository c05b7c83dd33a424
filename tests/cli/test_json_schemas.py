"""The JSON documents of the main commands against their schemas in docs/schemas/ (issue 15):
real output of the CLI on a real local repository, validated with jsonschema (Draft 2020-12,
unknown keys refused), and every key of every schema described."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import pytest

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"
COMMANDS = {
    "backup-list",
    "backup-show",
    "backup-create",
    "backup-restore",
    "backup-verify",
    "policy-list",
    "policy-show",
    "schedule-list",
    "destination-list",
    "repository-check",
    "repository-stats",
}


def schema(name: str) -> dict[str, Any]:
    doc = json.loads((SCHEMAS / f"{name}.json").read_text())
    jsonschema.Draft202012Validator.check_schema(doc)
    return doc


def validate(name: str, doc: Any) -> None:
    validator = jsonschema.Draft202012Validator(schema(name))
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, f"{name}: " + "; ".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])


def test_real_output_matches_the_schemas(files_deployment: Any, sample_tree: Path, tmp_path: Path) -> None:
    dep = files_deployment

    def run(*args: str) -> Any:
        return dep.ok(*args, "-f", "json").json()

    created = run("backup", "create", "app", "--type", "full")
    validate("backup-create", created)
    validate("backup-create", run("backup", "create", "app", "--comment", "second"))
    validate("backup-show", run("backup", "show", created["id"]))
    validate(
        "backup-restore", run("backup", "restore", created["id"], "--target", str(tmp_path / "restored"))
    )
    validate("backup-verify", run("backup", "verify", created["id"]))
    dep.ok("policy", "create", "nightly", "--daily-at", "03:30", "--timezone", "Europe/Berlin", "-d", "app")
    validate("policy-list", run("policy", "list"))
    shown = run("policy", "show", "nightly")
    validate("policy-show", shown)
    assert shown["backups"] and shown["next_runs"], shown
    validate("schedule-list", run("schedule", "list"))
    validate("destination-list", run("destination", "list"))
    validate("repository-check", run("repository", "check"))
    validate("repository-stats", run("repository", "stats"))
    # A Failed backup (its source vanished) has nulls where a Completed one has values.
    os.rename(sample_tree, sample_tree.with_name("gone"))
    dep.run("backup", "create", "app")
    listed = run("backup", "list")
    assert [r["status"] for r in listed] == ["Failed", "Completed", "Completed"], listed
    validate("backup-list", listed)


def test_the_schemas_refuse_what_is_not_documented() -> None:
    """Not a tautology: an undocumented key, a wrong type or a time of another precision fails."""
    record = {
        "name": "local",
        "type": "local",
        "location": "/srv/repo",
        "reachable": True,
        "repository": True,
        "error": None,
        "used_by": ["app"],
    }
    validate("destination-list", [record])
    for bad in (
        {**record, "secret": "x"},
        {**record, "reachable": "yes"},
        {k: v for k, v in record.items() if k != "name"},
    ):
        with pytest.raises(AssertionError):
            validate("destination-list", [bad])
    row = {"kind": "backup", "deployment": "app", "policy": "p", "schedule": "full", "type": "full",
           "next_run": "2026-12-03T15:00:00.000Z", "last_run": None, "last_status": None,
           "last_error": None, "timezone": "UTC"}  # fmt: skip
    validate("schedule-list", [row])
    drill = {**row, "kind": "drill", "type": "drill", "schedule": "every 7d, 1 older", "timezone": None}
    validate("schedule-list", [drill])
    with pytest.raises(AssertionError):
        validate("schedule-list", [{**row, "next_run": "2026-12-03T15:00:00Z"}])


def _undescribed(node: Any, path: str) -> list[str]:
    out: list[str] = []
    if isinstance(node, dict):
        for key, sub in (node.get("properties") or {}).items():
            if not (isinstance(sub, dict) and sub.get("description")):
                out.append(f"{path}.{key}")
        for key, sub in node.items():
            out += _undescribed(sub, f"{path}.{key}")
    elif isinstance(node, list):
        for n, sub in enumerate(node):
            out += _undescribed(sub, f"{path}[{n}]")
    return out


def test_every_key_is_documented() -> None:
    assert {p.stem for p in SCHEMAS.glob("*.json")} == COMMANDS
    for name in sorted(COMMANDS):
        doc = schema(name)
        assert doc.get("title", "").startswith("backupctl "), name
        assert _undescribed(doc, name) == []
