"""Step 8: all the ways side by side -- the benchmark as a library call.

``proxyshare bench`` is a command; the same measurement is a function.  This
runs each way of sharing a counter (W workers x N increments of one counter,
same run, same machine) and prints what each costs per increment, how that
compares with initializer sharing, and whether updates were lost.

Run:  python examples/08_compare.py      (or: proxyshare bench)
"""

from __future__ import annotations

import os

from proxyshare._bench.report import BenchConfig
from proxyshare._bench.run import run_bench

N = int(os.environ.get("PROXYSHARE_EXAMPLE_N", "5000"))
WORKERS = 2
SCENARIOS = [
    "initializer",  # mp.Value + its lock via initializer=: the fast, rigid way
    "initializer-nolock",  # the same without the lock: loses updates
    "proxyshare-counter",  # counter.increment(), passed as a submit() argument
    "proxyshare-lock",  # with lock: d[k] = d[k] + 1
    "proxyshare-dict",  # d.increment(k)
    "syncmanager",  # stdlib Manager().Value + Manager().Lock
    "syncmanager-nolock",  # the same without the lock: loses updates
]


def fmt_ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.1f}x"


if __name__ == "__main__":
    report = run_bench(BenchConfig(workers=[WORKERS], ops=N, scenarios=SCENARIOS, quick=True))
    print(f"{WORKERS} workers x {N:,} increments of one shared counter")
    header = (
        f"{'scenario':<20} {'us/op':>8} {'ops/s':>10} {'x initializer':>14} {'lost':>7}  correct"
    )
    print(header)
    print("-" * len(header))
    for m in report.measurements:
        print(
            f"{m.scenario:<20} {m.us_per_op:>8.2f} {m.ops_per_s:>10,.0f} "
            f"{fmt_ratio(m.ratio_to_initializer):>14} {m.lost_updates:>7,}  "
            f"{'yes' if m.correct else 'no'}"
        )
    by_name = {m.scenario: m for m in report.measurements}
    missing = [s for s in SCENARIOS if s not in by_name]
    # The racy scenarios are *expected* to lose updates; every locked one must not.
    wrong = [
        m.scenario
        for m in report.measurements
        if not m.scenario.endswith("-nolock") and (m.lost_updates or not m.correct)
    ]
    ok = not missing and not wrong
    print(
        f"result: {len(report.measurements)} measurements, missing {missing or 'none'}, "
        f"locked scenarios losing updates: {wrong or 'none'}"
    )
    raise SystemExit(0 if ok else 1)
