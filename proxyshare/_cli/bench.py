"""``proxyshare bench``: every way of sharing a counter, measured in one run."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from proxyshare._cli.common import EXIT_OK, EXIT_RUNTIME, UsageError

if TYPE_CHECKING:
    from proxyshare._bench.report import BenchReport

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    """Add the ``bench`` command to the ``proxyshare`` parser's subcommands."""
    bench = sub.add_parser("bench", help="benchmark proxyshare against the alternatives")
    _add_bench_options(bench)
    bench.set_defaults(handler=run)


def _positive_ints(text: str) -> list[int]:
    """``"1,2,4"`` -> ``[1, 2, 4]``; argparse turns the error into exit code 2."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers like 1,2,4, got {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers like 1,2,4, got {text!r}"
        )
    return values


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):  # also refuses NaN
        raise argparse.ArgumentTypeError(f"expected a percentage like 10 or 2.5, got {text!r}")
    return value


def _scenario_names(text: str) -> list[str]:
    from proxyshare._bench.report import expand_scenarios

    names = [part.strip() for part in text.split(",") if part.strip()]
    try:
        expand_scenarios(names)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not names:
        raise argparse.ArgumentTypeError("expected at least one scenario name")
    return names


def _add_bench_options(bench: argparse.ArgumentParser) -> None:
    import multiprocessing

    from proxyshare._bench.scenarios import SCENARIOS  # light: no pydantic, no rich

    bench.description = (
        "W workers x N increments of one shared counter, through a real "
        "ProcessPoolExecutor, for proxyshare and the alternatives, in one run. "
        "Starts its own server; needs nothing else (Redis scenarios run when "
        "a server is reachable)."
    )
    bench.epilog = "scenarios: " + ", ".join(
        name if spec.default else f"{name} (opt-in)" for name, spec in SCENARIOS.items()
    )
    bench.add_argument(
        "--workers",
        type=_positive_ints,
        default=[2],
        metavar="N[,N...]",
        help="worker counts to sweep, e.g. 1,2,4 (default: 2)",
    )
    bench.add_argument(
        "--ops",
        type=_positive_int,
        metavar="N",
        help="operations per worker (default: 10000; 200 with --quick); the ~1 µs "
        "scenarios (initializer, shm, pipeline) run 10x as many",
    )
    bench.add_argument(
        "--repeat",
        type=_positive_int,
        default=1,
        metavar="R",
        help="runs per scenario; the table shows the median and the spread (default: 1)",
    )
    bench.add_argument(
        "--scenarios",
        type=_scenario_names,
        metavar="A,B",
        help="scenarios to run (default: all but the asyncio ones; 'queue' = the queue "
        "scenarios; 'aio' = the asyncio client beside the sync one; 'all' = every one)",
    )
    bench.add_argument("--json", metavar="PATH", help="write the full report as JSON")
    bench.add_argument(
        "--plot",
        metavar="PATH",
        help="write a PNG: µs/op per scenario grouped by family, and the sweep across "
        "--workers (needs matplotlib: proxyshare[plot])",
    )
    bench.add_argument(
        "--start-method",
        choices=multiprocessing.get_all_start_methods(),
        help="start method of the pools and servers (default: the platform's)",
    )
    bench.add_argument(
        "--redis",
        metavar="URL",
        help="Redis server for the redis scenarios (default: redis://127.0.0.1:6379/0; "
        "skipped if unreachable)",
    )
    bench.add_argument(
        "--clients",
        type=_positive_ints,
        default=[],
        metavar="C[,C...]",
        help="also measure aggregate ops/s of C client processes on one counter, e.g. 1,8,64",
    )
    bench.add_argument(
        "--quick", action="store_true", help="tiny sizes: seconds, for tests and smoke checks"
    )
    bench.add_argument(
        "--compare",
        metavar="OLD.json",
        help="compare this run with a report saved by --json: each scenario's change, judged "
        "on its ratios to initializer and basemanager-floor (raw µs/op beside them)",
    )
    bench.add_argument(
        "--fail-over",
        type=_percent,
        metavar="PCT",
        help="with --compare: exit with status 1 if a scenario got more than PCT %% worse "
        "(default without it: flag changes over 30 %%, exit 0)",
    )
    bench.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also print how each 'what the cost buys' fact was found and how each target "
        "was computed (--json always has everything)",
    )
    bench.add_argument(
        "--micro",
        action="store_true",
        help="microbenchmarks from one client: transport floor, get, increment, "
        "lock acquire+release, dict set/get",
    )


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from proxyshare._bench.compare import DEFAULT_FLAG_PCT, compare_reports
    from proxyshare._bench.output import render, render_comparison
    from proxyshare._bench.plot import require_matplotlib, write_plot
    from proxyshare._bench.report import BenchConfig
    from proxyshare._bench.run import run_bench

    if args.plot:
        require_matplotlib()  # fail now, not after the run
    old = _old_report(args)  # likewise
    config = BenchConfig(
        workers=args.workers,
        ops=args.ops,
        repeat=args.repeat,
        scenarios=args.scenarios,
        start_method=args.start_method,
        redis_url=args.redis,
        quick=args.quick,
        clients=args.clients,
        micro=args.micro,
    )
    err = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as bar:
        task = bar.add_task("starting", total=None)

        def progress(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=total, description=label)

        report = run_bench(config, progress)
    # Files first: a closed stdout (``| head``) must not cost the report.
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(report.model_dump_json(indent=2))
    if args.plot:
        write_plot(report, args.plot)
    out = Console()
    if not out.is_terminal:  # a file or pipe: no need to squeeze into 80 columns
        out = Console(width=max(out.width, 130))
    for renderable in render(report, verbose=args.verbose):
        out.print(renderable)
    regressed = False
    if old is not None:
        threshold = DEFAULT_FLAG_PCT if args.fail_over is None else args.fail_over
        comparison = compare_reports(old, report, threshold)
        for renderable in render_comparison(comparison, args.compare):
            out.print(renderable)
        regressed = args.fail_over is not None and bool(comparison.regressions)
    if args.json:
        out.print(f"report written to {args.json}")
    if args.plot:
        out.print(f"plot written to {args.plot}")
    return EXIT_RUNTIME if report.failed or regressed else EXIT_OK


def _old_report(args: argparse.Namespace) -> BenchReport | None:
    """The report ``--compare`` names, read and checked before a minute of benchmarking."""
    from proxyshare._bench.compare import load_report

    if args.compare is None:
        if args.fail_over is not None:
            raise UsageError("--fail-over needs --compare OLD.json")
        return None
    try:
        with open(args.compare, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read --compare {args.compare}: {exc}") from None
    try:
        old = load_report(text, args.compare)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    mode = "micro" if args.micro else "scenarios"
    if old.mode != mode:
        raise UsageError(
            f"{args.compare} is a {old.mode} report; this run measures {mode} "
            f"({'drop' if old.mode == 'scenarios' else 'add'} --micro)"
        )
    return old
