#!/usr/bin/env bash
# System packages the tests and benchmarks use; skips apt when all are present.
set -euo pipefail
need=()
# systemd: only for `systemd-analyze verify` of exported units (installing it starts nothing).
for pkg in git sqlite3 restic acl libcap2-bin systemd; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
