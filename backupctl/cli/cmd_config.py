"""`backupctl config ...`: show the effective config, validate it."""

from __future__ import annotations

import typer

from backupctl import redact as url_redact
from backupctl.cli import context, output
from backupctl.config.secrets import redact

app = typer.Typer(help="Inspect and check the configuration file.", no_args_is_help=True)


@app.command("show")
def show() -> None:
    """Print the effective configuration with secrets redacted.

    Example: backupctl config show -o json
    """
    cfg = context.config()
    # Secret-named keys, and passwords written inside URLs (endpoints), are masked.
    doc = url_redact.document(redact(cfg.model_dump(mode="json", exclude_none=True, by_alias=True)))
    # A notification URL written literally often is the token (Slack, Discord, healthchecks.io):
    # only its scheme://host shows.
    channels = doc.get("notifications", {}).get("channels", {})
    if channels:
        from backupctl.notify.channels import masked_url

        for channel in channels.values():
            if isinstance(channel.get("url"), str):
                channel["url"] = masked_url(channel["url"])
    if output.OPTS.output == "table":
        output.OPTS.output = "yaml"
    output.emit_document(doc)


@app.command("validate")
def validate() -> None:
    """Check the configuration file; exit code 4 and one line naming the problem if it is wrong.

    Example: backupctl --config /etc/backupctl.yaml config validate
    """
    cfg = context.config()
    result = {
        "path": str(cfg.path),
        "valid": True,
        "deployments": sorted(cfg.deployments),
        "destinations": sorted(cfg.destinations),
        "policies": sorted(cfg.policies),
    }
    if output.structured():
        output.emit_document(result)
    else:
        output.message(
            f"{cfg.path}: valid ({len(cfg.deployments)} deployments, {len(cfg.destinations)} destinations, "
            f"{len(cfg.policies)} policies)"
        )
