"""Users and grants in a MariaDB logical backup (`mariadb-dump --system=users`).

For the logical path (sources/mariadb_logical.py). At backup, `UsersDump` runs the dump with
--force and accepts the accounts the server cannot resolve (a host name under
--skip-name-resolve), listed in its `skipped`, instead of failing the backup. At restore,
`grantee_pattern` and `PROTECTED_*` name the statements that are never replayed: the
target's own accounts, the login user's and the skipped ones; `OBJECT_GRANT_RE` marks
grants on single objects, which must wait until their databases are restored.
"""

from __future__ import annotations

import re
from typing import Any

from backupctl.errors import SourceError
from backupctl.sources.dbutil import ToolProcess
from backupctl.sources.mariadb_client import quote_ident, quote_literal

# Accounts whose statements are never replayed from a backup: the target's own. By user
# name (any host): root and mariadb.sys; by account, the ones `mariadb-install-db` creates
# for the server itself: mysql@localhost (the service user, with PROXY rights a restoring
# user may lack) and the anonymous accounts (a secured target has removed them).
PROTECTED_USERS = ("root", "mariadb.sys")
PROTECTED_ACCOUNTS = (("mysql", "localhost"),)


# How mariadb-dump reports an account the server cannot find (a host name under
# --skip-name-resolve): the account is QUOTE(user)@QUOTE(host).
_UNRESOLVABLE_RE = re.compile(
    r"^mariadb-dump: Couldn't execute 'SHOW (?:CREATE USER|GRANTS FOR) (?P<account>.+)': .*\((?:1133|1141)\)$"
)
# A grant on one table, column set or routine (not `db`.* or *.*): needs the object to exist.
OBJECT_GRANT_RE = re.compile(rb"^GRANT .* ON (?:(?:PROCEDURE|FUNCTION|PACKAGE(?: BODY)?) )?`(?:[^`]|``)*`\.`")
_ACCOUNT_RE = re.compile(r"'((?:[^'\\]|\\.)*)'@'((?:[^'\\]|\\.)*)'")


class UsersDump(ToolProcess):
    """`mariadb-dump --system=users --force`: an account the server cannot resolve is skipped.

    With --force, mariadb-dump goes on past a `SHOW CREATE USER`/`SHOW GRANTS FOR` the
    server refuses and exits 2. That exit is accepted when every line of stderr is such a
    refusal for "no matching row"/"no such grant" (1133/1141); the accounts are in `skipped`.
    Any other failure fails the backup as before."""

    skipped: list[str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.skipped = []

    def check(self, timeout: float | None = None) -> str:
        try:
            return super().check(timeout)
        except SourceError:
            rc, message = self._result or (1, "")
            accounts = unresolvable_accounts(message) if rc == 2 else None
            if not accounts:
                raise
            self.skipped = accounts
            return message


def unresolvable_accounts(stderr: str) -> list[str] | None:
    """The accounts mariadb-dump could not dump, in order; None if stderr says anything else."""
    found: list[str] = []
    for line in stderr.splitlines():
        if not line.strip():
            continue
        m = _UNRESOLVABLE_RE.match(line.strip())
        if m is None:
            return None
        if m.group("account") not in found:
            found.append(m.group("account"))
    return found or None


def parse_account(quoted: str) -> tuple[str, str] | None:
    """`'user'@'host'` (SQL QUOTE() form) -> (user, host)."""
    m = _ACCOUNT_RE.fullmatch(quoted.strip())
    if m is None:
        return None

    def unquote(s: str) -> str:
        return re.sub(r"\\(.)", r"\1", s)

    return unquote(m.group(1)), unquote(m.group(2))


def _quoted_forms(value: str) -> tuple[str, str]:
    """`value` as a backtick identifier and as a QUOTE()d string (the two forms a dump uses)."""
    return quote_ident(value), quote_literal(value)


def grantee_pattern(accounts: list[tuple[str, str | None]]) -> re.Pattern[bytes]:
    """A statement of a users dump whose subject is one of `accounts` ((user, host); host
    None: any): `CREATE USER IF NOT EXISTS a`, `GRANT ... TO a`, `SET DEFAULT ROLE r FOR a`,
    `ALTER USER a`, with a in backtick or quote form."""
    alternatives: list[str] = []
    for user, host in accounts:
        users = _quoted_forms(user)
        hosts = _quoted_forms(host) if host is not None else None
        for i, any_host in enumerate((r"`(?:[^`]|``)*`", r"'(?:[^'\\]|\\.)*'")):
            h = re.escape(hosts[i]) if hosts is not None else any_host
            alternatives.append(re.escape(users[i]) + "@" + h)
    return re.compile(("(?:EXISTS | TO | FOR |ALTER USER )(?:" + "|".join(alternatives) + ")").encode())
