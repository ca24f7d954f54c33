"""``proxyshare serve``: a server in the foreground until SIGINT, SIGTERM or SIGHUP."""

from __future__ import annotations

import argparse
import sys
from typing import Any, cast

from proxyshare._cli.common import EXIT_OK, UsageError, add_server_options
from proxyshare._rules import FSYNC_POLICIES

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    """Add the ``serve`` command to the ``proxyshare`` parser's subcommands."""
    serve = sub.add_parser(
        "serve",
        help="run a proxyshare server in the foreground",
        description="Run a proxyshare server until SIGINT or SIGTERM. Without a key, a random "
        "one is written to a new private file whose path is printed.",
    )
    add_server_options(serve)
    serve.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="serve TLS with this certificate, PEM (default: $PROXYSHARE_TLS_SERVER_CERT)",
    )
    serve.add_argument(
        "--tls-key",
        metavar="FILE",
        help="the certificate's private key, readable by its owner only "
        "(default: $PROXYSHARE_TLS_SERVER_KEY)",
    )
    serve.add_argument(
        "--tls-client-ca",
        metavar="FILE",
        help="mutual TLS: require client certificates signed by this CA "
        "(default: $PROXYSHARE_TLS_CLIENT_CA)",
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        metavar="N",
        help="refuse connections beyond N open ones (default: $PROXYSHARE_MAX_CONNECTIONS, "
        "else the open-file limit less 64)",
    )
    serve.add_argument(
        "--max-handshakes",
        type=int,
        metavar="N",
        help="connections not yet authenticated; one more evicts the oldest "
        "(default: $PROXYSHARE_MAX_HANDSHAKES, else 256)",
    )
    serve.add_argument(
        "--state-dir",
        metavar="DIR",
        help="keep every resource in DIR (created with mode 0700) and restore it at start "
        "(default: $PROXYSHARE_STATE_DIR, else memory only)",
    )
    serve.add_argument(
        "--fsync",
        choices=FSYNC_POLICIES,
        help="with --state-dir, when the log reaches the disk: always (before every reply), "
        "everysec (once a second; the default, or $PROXYSHARE_FSYNC) or no (when the OS likes)",
    )
    serve.add_argument(
        "--log-level",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        help="log to stderr at this level (default: $PROXYSHARE_LOG_LEVEL, else WARNING)",
    )
    serve.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run a server in the foreground until SIGINT/SIGTERM (exit 0)."""
    import logging

    from proxyshare._address import Address, format_address, is_loopback
    from proxyshare._cli import config as _config
    from proxyshare._cli.status_report import state_summary
    from proxyshare._manager import ShareManager
    from proxyshare._server.state import StateDirRefused

    try:
        settings = _config.load_serve_settings(
            args.address,
            args.authkey_file,
            args.log_level,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            tls_client_ca=args.tls_client_ca,
            max_connections=args.max_connections,
            max_handshakes=args.max_handshakes,
            state_dir=args.state_dir,
            fsync=args.fsync,
        )
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
        manager = ShareManager(settings.address, authkey=authkey, **settings.server_options())
        try:
            server = manager.get_server(
                tls_cert=settings.tls_server_cert,
                tls_key=settings.tls_server_key,
                tls_client_ca=settings.tls_client_ca,
                max_connections=settings.max_connections,
                max_handshakes=settings.max_handshakes,
            )
        except StateDirRefused as exc:  # like a key file others can read: a usage error
            raise UsageError(str(exc)) from None
        except OSError as exc:
            raise _listen_error(where, exc) from None
        try:
            stopper.attach(server)
            if server.journal is not None:
                state = server.journal.describe()
                print(f"proxyshare serve: {state_summary(state)}", flush=True)
            listening = format_address(cast(Address, server.address))
            if not settings.serves_tls and not is_loopback(settings.address):
                print(
                    f"proxyshare serve: warning: {listening} is reachable from other machines "
                    "without TLS: the authkey is checked, but anyone on the way can read and "
                    "alter the traffic (give --tls-cert and --tls-key)",
                    file=sys.stderr,
                    flush=True,
                )
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
