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
    """SIGINT/SIGTERM → ``server.stop()``, from a thread.

    ``stop()`` sets a ``threading.Event``; doing that inside the signal
    handler could deadlock on the Event's lock if the main thread holds it at
    that moment, so the handler only starts a thread.
    """

    def __init__(self) -> None:
        import signal

        self._server: Any = None
        self._requested = False
        self._previous = {
            sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)
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
    ref = getattr(client, "server_ref", None)
    if ref is None:
        return None
    return ref.channel().server_info.get("client")


def _close_client(client: Any) -> None:
    close = getattr(client, "close", None)
    if close is not None:
        close()
    else:
        from proxyshare._client import close_all_channels

        close_all_channels()


def _cmd_bench(args: argparse.Namespace) -> int:
    raise UsageError("bench is not implemented yet")


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
