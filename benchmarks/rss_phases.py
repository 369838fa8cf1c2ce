"""Run a command and attribute its memory to the phases its log shows.

Each output line is echoed with the seconds since the start, the process's RSS (VmRSS) at
that moment and the highest RSS sampled (every 0.2 s) since the previous line, so the peak
of a phase is the largest ``max`` between the phase's first and last lines. At the end: wall
seconds, CPU seconds (user + system of the child) and its peak RSS (``ru_maxrss``, as
``/usr/bin/time -v`` reports it).

Example (the 1M encoder-cache measurement of docs/results/encoding-1m.md)::

    python benchmarks/rss_phases.py -- lagnh train DATA --config CFG --bits 32 --out RUN --no-progress
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time


def _rss_gib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def main(cmd: list[str]) -> int:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_gib(proc.pid))
            time.sleep(0.2)

    threading.Thread(target=sample, daemon=True).start()
    for line in proc.stdout:
        now = _rss_gib(proc.pid)
        print(f"[{time.perf_counter() - t0:8.1f}s rss {now:5.2f} max {max(peak[0], now):5.2f} GiB] {line.rstrip()}",
              flush=True)
        peak[0] = 0.0
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    code = os.waitstatus_to_exitcode(status)
    print(f"exit {code}; wall {time.perf_counter() - t0:.1f}s, CPU {usage.ru_utime + usage.ru_stime:.1f}s, "
          f"peak RSS {usage.ru_maxrss / 2**20:.2f} GiB", flush=True)
    return code


if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(main(args[1:] if args[:1] == ["--"] else args))
