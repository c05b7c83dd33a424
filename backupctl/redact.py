"""Credentials written inside URLs (`scheme://user:password@host`) never reach the user's screen.

`url_credentials(text)` replaces the password part of every URL in a text with `***`,
keeping the user name and host so the location stays recognisable
(`http://user:pass@host` -> `http://user:***@host`). It is applied where text leaves
the program: every BackupctlError message and hint (errors.py), and the documents that
`config show`, `destination list` and `destination check` print (any output format).
It has no dependencies so that errors.py, the lowest module, can use it.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"
# scheme "://" user ":" password "@" - the password runs to the last "@" before the host
# (an unescaped "@" inside it is common in hand-written configs).
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#:@]*):(?P<password>[^\s/?#]*)@")


def url_credentials(text: str) -> str:
    """`text` with the password of every `scheme://user:password@` replaced by ***."""
    if "://" not in text:
        return text
    return _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)


def document(value: Any) -> Any:
    """Copy of a JSON-like structure with `url_credentials` applied to every string in it."""
    if isinstance(value, str):
        return url_credentials(value)
    if isinstance(value, dict):
        return {k: document(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [document(v) for v in value]
    return value
