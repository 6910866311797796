"""Child process of the ledger crash test: meters 100 events and flushes them, then meters one
event every few milliseconds, printing ``rec <i> <monotonic time>`` after each, until it is killed.

Usage: python ledger_crash_child.py LEDGER FLUSH_INTERVAL_S
"""

from __future__ import annotations

import sys
import time

from kiln.metering import Metering, UsageEvent


def main() -> None:
    path, interval = sys.argv[1], float(sys.argv[2])
    meter = Metering.open(path, flush_interval_s=interval)
    for i in range(100):
        meter.record(UsageEvent(time.time(), "acked", "ctr", f"a{i}", 1, 0.001))
    print(f"flushed {meter.flush()} {time.monotonic()}", flush=True)
    i = 0
    while True:
        meter.record(UsageEvent(time.time(), "stream", "ctr", str(i), 1, 0.001))
        print(f"rec {i} {time.monotonic()}", flush=True)
        i += 1
        time.sleep(0.005)


if __name__ == "__main__":
    main()
