"""The `--progress` global option's value (cli/main.py sets it; cli/progress.py reads it).

A module of its own, importing nothing, so that the root callback can set it on every run
(TAB completion included) without loading the progress display (Rich).
"""

from __future__ import annotations

import os

# auto: a bar on a terminal (stderr a TTY, table output, not --quiet), nothing otherwise (cron);
# bar: always the bar; plain: a text line every few seconds; json: one JSON object per line;
# none: no progress at all.
MODES = ("auto", "bar", "plain", "json", "none")

mode = "auto"


def interval(default: float) -> float:
    """Seconds between two plain/json status lines: $BACKUPCTL_PROGRESS_INTERVAL or `default`."""
    value = os.environ.get("BACKUPCTL_PROGRESS_INTERVAL", "")
    try:
        return max(0.0, float(value)) if value else default
    except ValueError:
        return default
