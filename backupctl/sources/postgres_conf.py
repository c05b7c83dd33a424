"""Configuration files for a restored PostgreSQL data directory that came without them.

Debian and Ubuntu keep `postgresql.conf`, `pg_hba.conf` and `pg_ident.conf` in
/etc/postgresql/<major>/<cluster>/, outside the data directory, so a base backup of such a
cluster holds none of them, and `postgres -D DIR` refuses to start without
`DIR/postgresql.conf`. `write_missing_config` gives a restored copy (a `--target` restore,
a physical clone) the files it lacks, so that it starts privately:

* postgresql.conf: built-in defaults, `listen_addresses = 'localhost'`; the settings made
  with ALTER SYSTEM come back with the backup's postgresql.auto.conf. Debian's own
  postgresql.conf is never copied: its `data_directory`, `hba_file` and `ident_file` name
  the original cluster, which the copy would then start on.
* pg_hba.conf: the Unix socket and the loopback addresses only: the data directory's owner
  (`postgres`) by peer authentication over the socket (as in Debian's default), every role
  by password (scram-sha-256; a restored copy keeps the original's passwords). A clone's
  user, which `backup clone` gives a new password, logs in by that password everywhere
  (`password_only_for`), even when it is the owner.
* pg_ident.conf: empty (no user name maps).

Files that exist are left alone; the new ones are 0600 and owned like PG_VERSION. Never
used for an in-place restore: there the files stay where the cluster's configuration is.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

HEADER = (
    "# Written by backupctl: the backed-up cluster kept its configuration files outside its\n"
    "# data directory (Debian, Ubuntu: /etc/postgresql/<major>/<cluster>/), so the backup\n"
    "# holds none. Edit to taste.\n"
)


def _postgresql_conf() -> str:
    return (
        HEADER
        + "# Built-in defaults apply, plus postgresql.auto.conf (the backup's ALTER SYSTEM settings).\n"
        "listen_addresses = 'localhost'\n"
    )


def _pg_hba_conf(owner: str | None) -> str:
    lines = [HEADER + "# Local connections only.", "# TYPE  DATABASE  USER  ADDRESS  METHOD"]
    if owner:
        lines.append(f'local   all       "{owner}"                 peer')
    lines += [
        "local   all       all                       scram-sha-256",
        "host    all       all   127.0.0.1/32        scram-sha-256",
        "host    all       all   ::1/128             scram-sha-256",
    ]
    return "\n".join(lines) + "\n"


def _pg_ident_conf() -> str:
    return HEADER + "# MAPNAME  SYSTEM-USERNAME  PG-USERNAME\n"


def _owner(datadir: Path) -> tuple[os.stat_result, str | None]:
    ref = datadir / "PG_VERSION"
    st = ref.stat() if ref.exists() else datadir.stat()
    try:
        owner: str | None = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = None
    if owner and not owner.replace("_", "").replace("-", "").isalnum():
        owner = None  # not a plain name: no peer line rather than a quoting problem
    return st, owner


def _write(path: Path, text: str, st: os.stat_result) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    if os.geteuid() == 0:
        os.chown(path, st.st_uid, st.st_gid)


def write_missing_config(datadir: Path) -> list[str]:
    """Write postgresql.conf, pg_hba.conf and pg_ident.conf into `datadir` where missing
    (only when postgresql.conf is missing: a data directory holding it has its own set).
    Returns the names written, [] when the directory had its configuration."""
    if (datadir / "postgresql.conf").exists():
        return []
    st, owner = _owner(datadir)
    contents = {
        "postgresql.conf": _postgresql_conf(),
        "pg_hba.conf": _pg_hba_conf(owner),
        "pg_ident.conf": _pg_ident_conf(),
    }
    written = []
    for name, text in contents.items():
        if not (datadir / name).exists():
            _write(datadir / name, text, st)
            written.append(name)
    return written


def password_only_for(datadir: Path, user: str) -> None:
    """Make `user` log in by password over the socket too, in a pg_hba.conf that
    write_missing_config wrote (a clone's user has the password `backup clone` set; the
    owner's peer line would refuse it to every other OS user). Any other file is left alone."""
    hba = datadir / "pg_hba.conf"
    try:
        ours = hba.read_text().startswith(HEADER)
    except OSError:
        return
    st, owner = _owner(datadir)
    if ours and owner == user:
        hba.unlink()
        _write(hba, _pg_hba_conf(None), st)
