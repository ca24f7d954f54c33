"""The ``proxyshare`` command: ``serve``, ``status`` and ``bench``.

This is the only module that prints or exits.  Library code raises; here an
error becomes one line on stderr and an exit code:

    0  success
    1  runtime error (server unreachable, key rejected, port in use, ...)
    2  usage error (bad option or value)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, cast

__all__ = ["main"]

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A bad option value found after argparse accepted the command line."""


def _add_server_options(parser: argparse.ArgumentParser) -> None:
    """The options every command that talks to a server shares."""
    parser.add_argument(
        "--address",
        help="HOST:PORT or unix:/path (default: $PROXYSHARE_ADDRESS, else 127.0.0.1:50000)",
    )
    parser.add_argument(
        "--authkey-file",
        help="file holding the authkey (default: $PROXYSHARE_AUTHKEY, "
        "else $PROXYSHARE_AUTHKEY_FILE)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="proxyshare",
        description="Serve, inspect and benchmark shared counters, locks and dicts.",
    )
    from proxyshare import __version__

    parser.add_argument("--version", action="version", version=f"proxyshare {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    serve = sub.add_parser(
        "serve",
        help="run a proxyshare server in the foreground",
        description="Run a proxyshare server until SIGINT or SIGTERM. Without a key, a random "
        "one is written to a new private file whose path is printed.",
    )
    _add_server_options(serve)
    serve.add_argument(
        "--log-level",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        help="log to stderr at this level (default: $PROXYSHARE_LOG_LEVEL, else WARNING)",
    )
    serve.set_defaults(handler=_cmd_serve)

    status = sub.add_parser(
        "status",
        help="show what a running server holds",
        description="Show a server's resources, lock holders and waiters, clients, "
        "operations served and uptime.",
    )
    _add_server_options(status)
    status.add_argument(
        "--json",
        action="store_true",
        help="print a JSON report (schema: proxyshare._status.StatusReport)",
    )
    status.set_defaults(handler=_cmd_status)

    bench = sub.add_parser("bench", help="benchmark proxyshare against the alternatives")
    _add_bench_options(bench)
    bench.set_defaults(handler=_cmd_bench)
    return parser


def _cmd_serve(args: argparse.Namespace) -> int:
    """Run a server in the foreground until SIGINT/SIGTERM (exit 0)."""
    import logging

    from proxyshare import _config
    from proxyshare._address import Address, format_address
    from proxyshare._manager import ShareManager

    try:
        settings = _config.load_serve_settings(args.address, args.authkey_file, args.log_level)
        logging.basicConfig(
            stream=sys.stderr,
            level=settings.log_level,
            format="%(asctime)s %(name)s %(levelname)s: %(message)s",
        )
        if isinstance(settings.address, str) and _config.prepare_unix_socket(settings.address):
            logging.getLogger("proxyshare").info("removed a stale socket file")
    except _config.ConfigError as exc:
        raise UsageError(str(exc)) from None
    stopper = _Stopper()  # installed before the server exists: no signal is lost
    generated = None
    if settings.authkey is None:
        generated = _config.generate_key_file()
        authkey = generated.authkey.get_secret_value()
        key_note = f"authkey file: {generated.path}"
    else:
        authkey = settings.key_bytes()
        key_note = f"authkey from {settings.key_source}"
    try:
        where = settings.display_address
        try:
            server = ShareManager(settings.address, authkey=authkey).get_server()
        except OSError as exc:
            raise _listen_error(where, exc) from None
        try:
            stopper.attach(server)
            listening = format_address(cast(Address, server.address))
            print(f"proxyshare serve: listening on {listening} ({key_note})", flush=True)
        except BaseException:
            server.close()  # serve_forever() would have; the socket file must go
            raise
        server.serve_forever()
    finally:
        stopper.restore()
        if generated is not None:
            _config.remove_generated_key(generated)
    return EXIT_OK


class _Stopper:
    """SIGINT/SIGTERM/SIGHUP → ``server.stop()``, from a thread.

    ``stop()`` sets a ``threading.Event``; doing that inside the signal
    handler could deadlock on the Event's lock if the main thread holds it at
    that moment, so the handler only starts a thread.
    """

    def __init__(self) -> None:
        import signal

        self._server: Any = None
        self._requested = False
        self._previous = {
            # SIGHUP too: closing the terminal that runs `serve` should clean up the
            # socket and the generated key file like Ctrl-C does.
            sig: signal.signal(sig, self._handle)
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        }

    def _handle(self, signum: int, frame: Any) -> None:
        import threading

        self._requested = True
        if self._server is not None:
            threading.Thread(target=self._server.stop, name="proxyshare-stop").start()

    def attach(self, server: Any) -> None:
        self._server = server
        if self._requested:
            server.stop()

    def restore(self) -> None:
        import signal

        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _listen_error(where: str, exc: OSError) -> Exception:
    import errno

    from proxyshare._errors import ProxyShareError

    if exc.errno == errno.EADDRINUSE:
        hint = (
            "address already in use: another server runs there; stop it or pick another --address"
        )
    elif exc.errno == errno.EADDRNOTAVAIL:
        hint = "this machine has no such address: use one of its own addresses or 0.0.0.0"
    elif exc.errno == errno.EACCES:
        hint = "permission denied: ports below 1024 need privileges; pick a higher port"
    else:
        hint = exc.strerror or str(exc)
    return ProxyShareError(f"cannot listen on {where}: {hint}")


def _cmd_status(args: argparse.Namespace) -> int:
    """Print what a running server holds: a table, or JSON with ``--json``."""
    from proxyshare import _config
    from proxyshare._errors import ProxyShareError
    from proxyshare._manager import connect
    from proxyshare._status import StatusReport, render_status

    try:
        settings = _config.load_client_settings(args.address, args.authkey_file)
    except _config.ConfigError as exc:
        raise UsageError(str(exc)) from None
    key = None if settings.authkey is None else settings.key_bytes()
    client = connect(settings.address, authkey=key)
    try:
        raw = client.status()
        own = _own_client_id(client)
    finally:
        _close_client(client)
    if own is not None:  # this command's own connection is not worth reporting
        raw = {**raw, "clients": [c for c in raw.get("clients", []) if c.get("client") != own]}
    try:
        report = StatusReport.from_status(raw, address=settings.display_address)
    except ValueError as exc:  # pydantic's ValidationError: a server we do not understand
        raise ProxyShareError(
            f"the server at {settings.display_address} sent a status this version cannot "
            f"read ({exc.__class__.__name__}: {str(exc).splitlines()[0]}): "
            "are client and server the same proxyshare version?"
        ) from None
    if args.json:
        print(report.model_dump_json(indent=2))
    else:
        from rich.console import Console

        Console(soft_wrap=False).print(render_status(report))
    return EXIT_OK


def _own_client_id(client: Any) -> Any:
    """The server-side id of this process's connection (proxyshare servers only)."""
    from proxyshare._client import ServerRef

    ref = getattr(client, "server_ref", None)
    if not isinstance(ref, ServerRef):  # e.g. the Redis backend: no connection ids
        return None
    return ref.channel().server_info.get("client")


def _close_client(client: Any) -> None:
    close = getattr(client, "close", None)
    if close is not None:
        close()
    else:
        from proxyshare._client import close_all_channels

        close_all_channels()


# -- bench ------------------------------------------------------------------------


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


def _scenario_names(text: str) -> list[str]:
    from proxyshare._bench import expand_scenarios

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

    from proxyshare._bench_scenarios import SCENARIOS  # light: no pydantic, no rich

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
        help="scenarios to run (default: all; 'queue' = the queue scenarios)",
    )
    bench.add_argument("--json", metavar="PATH", help="write the full report as JSON")
    bench.add_argument(
        "--plot",
        metavar="PATH",
        help="write a PNG of µs/op against workers (needs matplotlib: proxyshare[plot])",
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
        "--micro",
        action="store_true",
        help="microbenchmarks from one client: transport floor, get, increment, "
        "lock acquire+release, dict set/get",
    )


def _cmd_bench(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from proxyshare._bench import BenchConfig, run_bench
    from proxyshare._bench_output import render, require_matplotlib, write_plot

    if args.plot:
        require_matplotlib()  # fail now, not after the run
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
    for renderable in render(report):
        out.print(renderable)
    if args.json:
        out.print(f"report written to {args.json}")
    if args.plot:
        out.print(f"plot written to {args.plot}")
    return EXIT_RUNTIME if report.failed else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``proxyshare`` console script."""
    from proxyshare._errors import ProxyShareError

    parser = build_parser()
    args = parser.parse_args(argv)  # exits with 2 on a usage error
    try:
        code: int = args.handler(args)
    except UsageError as exc:
        print(f"proxyshare {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ProxyShareError, OSError) as exc:
        print(f"proxyshare {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        return EXIT_RUNTIME
    return code
