#!/usr/bin/env python
"""Flake hunt: run test suites many times and report every test that failed even once.

    python tools/flake_hunt.py                          # 20 runs of tests/integration tests/faults
    python tools/flake_hunt.py --runs 8 --stress-runs 4 # 8 plain runs, then 4 with every core busy
    python tools/flake_hunt.py tests/unit --runs 5 -- -x --count 3   # after "--": pytest's own args

Each run is a fresh ``python -m pytest`` (so every run re-imports, starts its
own servers and its own forkserver), with ``PROXYSHARE_TEST_START_METHOD``
set to the next start method in turn (fork, spawn, forkserver): the default
start method of that whole run.  Stress runs keep ``--stress-procs`` busy-loop
processes (one per core by default) running for the run's duration.

Nothing is retried and nothing can hang: a run that outlives ``--timeout``
is killed with every process it started (its process group, and on Linux any
orphan, which this process adopts as a child subreaper).  Processes a run
leaves behind for more than a few seconds are reported and killed.  Exits 1
if any test failed (or any run timed out, crashed or left processes behind),
after printing a table of them: test id, failures/runs, where it failed
(start method, stress) and its first failure's short message.  Every run's
output and a JSON summary go to ``--out``.

This file is also the pytest plugin (``-p flake_hunt``) that records each
run's results: the ``pytest_*`` hooks below write one JSON line per event to
the file named by ``FLAKE_HUNT_EVENTS``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

EVENTS_ENV = "FLAKE_HUNT_EVENTS"
START_METHOD_ENV = "PROXYSHARE_TEST_START_METHOD"
START_METHODS = ("fork", "spawn", "forkserver")
DEFAULT_PATHS = ("tests/integration", "tests/faults")
LEFTOVER_GRACE = 5.0  # an embedded server notices its parent's death well within this
_PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


# -- the plugin side: runs inside each pytest ---------------------------------------


def _record(event: dict[str, Any]) -> None:
    path = os.environ.get(EVENTS_ENV)
    if not path or os.environ.get("PYTEST_XDIST_WORKER"):
        return  # under xdist the controller records what its workers report
    # One line per write, appended and closed at once: a run killed midway
    # still leaves every event before the kill (and the test it was running).
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(event) + "\n")


def _short_message(report: Any) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        text = str(crash.message)
    elif isinstance(report.longrepr, tuple):  # a skip: (path, line, reason)
        text = str(report.longrepr[-1])
    else:
        text = str(report.longrepr)
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[0][:300] if lines else ""


def pytest_runtest_logstart(nodeid: str, location: Any) -> None:
    _record({"event": "start", "nodeid": nodeid})


def pytest_runtest_logreport(report: Any) -> None:
    event = {"event": "report", "nodeid": report.nodeid, "when": report.when}
    event["outcome"] = "xfailed" if hasattr(report, "wasxfail") else report.outcome
    if report.failed:
        event["message"] = _short_message(report)
    _record(event)


def pytest_collectreport(report: Any) -> None:
    if report.failed:
        _record(
            {
                "event": "report",
                "nodeid": report.nodeid or "<collection>",
                "when": "collect",
                "outcome": "failed",
                "message": _short_message(report),
            }
        )


# -- the hunt --------------------------------------------------------------------------


@dataclass
class Run:
    index: int
    start_method: str
    stress: bool
    exit_code: int | None = None
    seconds: float = 0.0
    tests: int = 0
    failed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # timeouts, crashes, leftovers
    log: str = ""

    @property
    def label(self) -> str:
        return f"{self.start_method}{'+stress' if self.stress else ''}"


@dataclass
class Tally:
    nodeid: str
    runs: int = 0
    failures: int = 0
    where: list[str] = field(default_factory=list)  # one label per failure
    first_message: str = ""


def _become_subreaper() -> bool:
    """Adopt orphaned descendants (Linux), so a run cannot leave processes unseen."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _children(exclude: set[int]) -> dict[int, str]:
    """This process's children (pid -> state + command), from /proc; none elsewhere."""
    me = os.getpid()
    found: dict[int, str] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        pid = int(entry.name)
        if pid in exclude:
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # it exited while we looked
            continue
        fields = stat.rpartition(")")[2].split()
        if int(fields[1]) == me:
            found[pid] = f"{fields[0]} {cmd.strip()[:200]}"
    return found


def _reap(pid: int) -> bool:
    """Collect an exited child of ours; True if it is gone."""
    try:
        done, _status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done == pid


def _sweep_leftovers(exclude: set[int], grace: float) -> list[str]:
    """Wait up to ``grace`` s for adopted processes to exit; kill and name the rest."""
    deadline = time.monotonic() + grace
    while True:
        alive = {}
        for pid, desc in _children(exclude).items():
            if not (desc.startswith(("Z", "X")) and _reap(pid)):
                alive[pid] = desc
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in alive:
        end = time.monotonic() + 5
        while not _reap(pid) and time.monotonic() < end:
            time.sleep(0.01)
    return [f"pid {pid}: {desc[2:]}" for pid, desc in alive.items()]


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


@contextlib.contextmanager
def _stress(procs: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``procs`` busy loops for the duration of the block, always killed after."""
    loops: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(procs):
            loops.append(
                subprocess.Popen(
                    [sys.executable, "-c", "while True: pass"],
                    start_new_session=True,
                    stdin=subprocess.DEVNULL,
                )
            )
        yield loops
    finally:
        for loop in loops:
            _kill_group(loop)


def _read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # a line cut by a kill
            events.append(json.loads(line))
    return events


def _test_key(nodeid: str, repeat: bool) -> str:
    """pytest-repeat's ``--count`` appends ``-i-N`` to ids: count them as one test."""
    if not repeat:
        return nodeid
    return re.sub(r"(\[)?-?\d+-\d+\]$", lambda m: "" if m.group(1) else "]", nodeid)


def _run_once(
    run: Run, args: argparse.Namespace, out: Path, tools_dir: Path, exclude: set[int]
) -> dict[str, dict[str, Any]]:
    """One pytest run; returns nodeid -> {"failed": bool, "message": str}."""
    events_path = out / f"run-{run.index:03d}.jsonl"
    log_path = out / f"run-{run.index:03d}.log"
    run.log = str(log_path)
    env = dict(os.environ)
    env[EVENTS_ENV] = str(events_path)
    env[START_METHOD_ENV] = run.start_method
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tools_dir), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "pytest", *args.paths, "-p", "flake_hunt", "-q"]
    cmd += ["-p", "no:cacheprovider", *args.pytest_args]
    started = time.monotonic()
    with open(log_path, "wb") as log:
        log.write(f"$ {START_METHOD_ENV}={run.start_method} {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            cmd,
            cwd=args.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: one killpg reaches what it started
        )
        try:
            run.exit_code = proc.wait(args.timeout)
        except subprocess.TimeoutExpired:
            run.problems.append(f"timed out after {args.timeout:.0f} s")
        finally:
            # Always: the group of a run that timed out, or of one interrupted
            # (Ctrl-C, SIGTERM) while it ran; a finished run's group is empty.
            _kill_group(proc)
    run.seconds = time.monotonic() - started
    exclude = exclude | {proc.pid}
    leftovers = _sweep_leftovers(exclude, LEFTOVER_GRACE)
    if leftovers:
        run.problems.append(f"left {len(leftovers)} process(es) running: " + "; ".join(leftovers))

    events = _read_events(events_path)
    results: dict[str, dict[str, Any]] = {}
    running: str | None = None
    for event in events:
        nodeid = event["nodeid"]
        if event["event"] == "start":
            running = nodeid
            continue
        entry = results.setdefault(nodeid, {"failed": False, "message": ""})
        if event["outcome"] == "failed" and not entry["failed"]:
            entry["failed"] = True
            entry["message"] = f"[{event['when']}] {event.get('message', '')}"
        if event["when"] == "teardown" and running == nodeid:
            running = None
    if running is not None:  # killed while this test ran: it is the one that hung
        entry = results.setdefault(running, {"failed": False, "message": ""})
        if not entry["failed"]:
            entry["failed"] = True
            entry["message"] = f"[run killed] {run.problems[0] if run.problems else 'ended'}"
    if run.exit_code not in (0, 1, None):
        run.problems.append(f"pytest exited with {run.exit_code} (see {log_path.name})")
    elif run.exit_code == 1 and not any(r["failed"] for r in results.values()):
        run.problems.append(f"pytest exited with 1 but no test failed (see {log_path.name})")
    run.tests = len(results)
    run.failed = sorted(n for n, r in results.items() if r["failed"])
    return results


def _plan(args: argparse.Namespace) -> list[Run]:
    methods = args.start_methods
    plain = [(i, methods[i % len(methods)], args.stress) for i in range(args.runs)]
    stressed = [(i, methods[i % len(methods)], True) for i in range(args.stress_runs)]
    return [Run(n, m, s) for n, (_i, m, s) in enumerate(plain + stressed, 1)]


def _print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _summarise(runs: list[Run], tests: dict[str, Tally], args: argparse.Namespace) -> Any:
    configs: dict[tuple[str, bool], dict[str, int]] = {}
    for run in runs:
        c = configs.setdefault(
            (run.start_method, run.stress), {"runs": 0, "tests": 0, "failures": 0, "problems": 0}
        )
        c["runs"] += 1
        c["tests"] += run.tests
        c["failures"] += len(run.failed)
        c["problems"] += len(run.problems)
    flaky = sorted((t for t in tests.values() if t.failures), key=lambda t: (-t.failures, t.nodeid))
    return {
        "command": [sys.executable, *sys.argv],
        "root": str(args.root),
        "paths": args.paths,
        "pytest_args": args.pytest_args,
        "runs": len(runs),
        "test_executions": sum(r.tests for r in runs),
        "failures": sum(len(r.failed) for r in runs),
        "run_problems": sum(len(r.problems) for r in runs),
        "by_configuration": [
            {"start_method": m, "stress": s, **c} for (m, s), c in sorted(configs.items())
        ],
        "failed_tests": [asdict(t) for t in flaky],
        "run_details": [asdict(r) for r in runs],
    }


def _report(summary: Any, runs: list[Run]) -> None:
    print()
    print(f"flake hunt: {summary['runs']} runs of {' '.join(summary['paths'])}")
    _print_table(
        [
            [str(r.index), r.start_method, "yes" if r.stress else "no", str(r.tests),
             str(len(r.failed)), f"{r.seconds:.0f}", str(r.exit_code),
             "; ".join(r.problems)[:70]]
            for r in runs
        ],
        ["run", "method", "stress", "tests", "failed", "seconds", "exit", "problems"],
    )  # fmt: skip
    print()
    _print_table(
        [
            [c["start_method"], "yes" if c["stress"] else "no", str(c["runs"]), str(c["tests"]),
             str(c["failures"]), str(c["problems"])]
            for c in summary["by_configuration"]
        ],
        ["method", "stress", "runs", "tests run", "failures", "run problems"],
    )  # fmt: skip
    print()
    failed = summary["failed_tests"]
    if not failed:
        print(f"no test failed in {summary['test_executions']} test runs")
        return
    print(f"{len(failed)} test(s) failed at least once:")
    for t in failed:
        where = ", ".join(sorted(set(t["where"])))
        print(f"  {t['nodeid']}  {t['failures']}/{t['runs']}  ({where})")
        print(f"      first: {t['first_message']}")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    pytest_args: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, pytest_args = argv[:at], argv[at + 1 :]
    parser = argparse.ArgumentParser(
        prog="flake_hunt.py",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="Arguments after '--' go to every pytest run (e.g. -- -x -k reactor --count 5).",
    )
    parser.add_argument(
        "paths", nargs="*", default=list(DEFAULT_PATHS), help="test paths or node ids "
        f"(default: {' '.join(DEFAULT_PATHS)})"
    )  # fmt: skip
    parser.add_argument("--runs", type=int, default=20, help="plain runs (default 20)")
    parser.add_argument(
        "--stress-runs", type=int, default=0, help="further runs with every core busy (default 0)"
    )
    parser.add_argument(
        "--stress", action="store_true", help="run the --runs runs under stress too"
    )
    parser.add_argument(
        "--stress-procs", type=int, default=os.cpu_count() or 2,
        help="busy-loop processes during a stress run (default: one per core)",
    )  # fmt: skip
    parser.add_argument(
        "--start-methods", default=",".join(START_METHODS),
        help="start methods the runs take in turn (default fork,spawn,forkserver)",
    )  # fmt: skip
    parser.add_argument(
        "--timeout", type=float, default=1200.0,
        help="seconds after which a run is killed and counted as hung (default 1200)",
    )  # fmt: skip
    parser.add_argument(
        "--root", type=Path, default=Path(__file__).resolve().parent.parent,
        help="the checkout to test (default: the one this script is in)",
    )  # fmt: skip
    parser.add_argument(
        "--out", type=Path, default=None,
        help="directory for run logs and summary.json (default: a new temporary directory)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="also write the summary here")
    args = parser.parse_args(argv)
    args.pytest_args = pytest_args
    args.start_methods = [m for m in args.start_methods.split(",") if m]
    bad = [m for m in args.start_methods if m not in START_METHODS]
    if bad or not args.start_methods:
        parser.error(f"--start-methods: use some of {','.join(START_METHODS)}, not {bad}")
    if args.runs < 0 or args.stress_runs < 0 or args.runs + args.stress_runs == 0:
        parser.error("nothing to run: give --runs and/or --stress-runs above 0")
    return args


def _on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # so the finally blocks kill what was started


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    args.root = args.root.resolve()
    out = args.out or Path(tempfile.mkdtemp(prefix="flake-hunt-"))
    out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _on_sigterm)
    adopted = _become_subreaper()
    repeat = any(a == "--count" or a.startswith("--count=") for a in args.pytest_args)
    tools_dir = Path(__file__).resolve().parent
    runs = _plan(args)
    tests: dict[str, Tally] = {}
    print(f"flake hunt in {args.root}: {len(runs)} runs, output in {out}", flush=True)
    if not adopted:
        print("  (not Linux: processes a run leaves behind outside its group go unseen)")
    for run in runs:
        with _stress(args.stress_procs if run.stress else 0) as loops:
            exclude = {loop.pid for loop in loops}
            results = _run_once(run, args, out, tools_dir, exclude)
        for nodeid, result in results.items():
            record = tests.setdefault(_test_key(nodeid, repeat), Tally(_test_key(nodeid, repeat)))
            record.runs += 1
            if result["failed"]:
                record.failures += 1
                record.where.append(run.label)
                record.first_message = record.first_message or result["message"]
        if run.problems:  # a hang, a crash, processes left behind: the run itself failed
            name = f"<run {run.index}>"
            tests[name] = Tally(name, 1, 1, [run.label], "; ".join(run.problems))
        print(
            f"run {run.index}/{len(runs)} {run.label}: {run.tests} tests, "
            f"{len(run.failed)} failed, {run.seconds:.0f} s"
            + (f"; {'; '.join(run.problems)}" if run.problems else ""),
            flush=True,
        )
    summary = _summarise(runs, tests, args)
    text = json.dumps(summary, indent=2)
    (out / "summary.json").write_text(text)
    if args.json:
        args.json.write_text(text)
    _report(summary, runs)
    print(f"\nsummary: {out / 'summary.json'}")
    return 1 if summary["failures"] or summary["run_problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
