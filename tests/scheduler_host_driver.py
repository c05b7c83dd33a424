"""One "host" for tests/schedule/test_scheduler_hosts.py: a scheduler process driven slot by slot.

Reads simulated instants (ISO 8601, one per line) on stdin; for each, builds a fresh
Service + Scheduler on a FakeClock set to that instant (as a `run-due` process started
by cron at that moment would) and prints one JSON line:
{"now": ..., "pid": ..., "rows": [run_due() rows]}. Local state comes from
XDG_STATE_HOME, so two drivers with different XDG_STATE_HOME are two machines.
`--jitter S` sleeps up to S seconds before each run so that neither host always wins.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from datetime import datetime

from backupctl.backups.service import Service
from backupctl.config.loader import load_config
from backupctl.policy.schedule import FakeClock
from backupctl.schedule.scheduler import Scheduler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--jitter", type=float, default=0.0)
    args = parser.parse_args()
    config = load_config(args.config)
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        clock = FakeClock(datetime.fromisoformat(line))
        time.sleep(random.uniform(0, args.jitter))
        service = Service(config, clock=clock)
        try:
            rows = Scheduler(service, clock).run_due()
        finally:
            service.close()
        print(json.dumps({"now": line, "pid": os.getpid(), "rows": rows}, default=str), flush=True)


if __name__ == "__main__":
    main()
