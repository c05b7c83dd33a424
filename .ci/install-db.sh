#!/usr/bin/env bash
# Install what the database tests need on a fresh Debian 12 machine (run as root).
# Idempotent: re-running skips what is already installed.
#
#   PostgreSQL  postgresql (server: initdb, pg_ctl), postgresql-client (pg_dump, pg_dumpall,
#               pg_basebackup, psql)
#   MariaDB     mariadb-server (mariadbd, mariadb-install-db), mariadb-client (mariadb,
#               mariadb-dump), mariadb-backup (mariabackup, mbstream)
#
# The Debian packages start system servers on 5432/3306 in some images; the tests never use
# them: tests/dbservers.py starts throwaway servers on free high ports.
set -euo pipefail

log() { printf 'install-db: %s\n' "$*" >&2; }

need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v pg_dump >/dev/null 2>&1 && command -v pg_basebackup >/dev/null 2>&1 || need+=(postgresql-client)
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
command -v mariadb-dump >/dev/null 2>&1 || need+=(mariadb-client)
command -v mariabackup >/dev/null 2>&1 && command -v mbstream >/dev/null 2>&1 || need+=(mariadb-backup)

if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
    log "database packages already installed"
fi

# initdb and pg_ctl refuse root; the harness runs them through runuser as this user.
id postgres >/dev/null 2>&1 || { log "no postgres user after install"; exit 1; }
command -v runuser >/dev/null 2>&1 || { log "runuser (util-linux) is missing"; exit 1; }
ls /usr/lib/postgresql/*/bin/initdb >/dev/null
for tool in pg_dump pg_dumpall pg_basebackup psql mariadb mariadb-dump mariabackup mbstream mariadb-install-db; do
    command -v "$tool" >/dev/null || { log "missing $tool"; exit 1; }
done
log "done"
