"""``proxyshare status``: what a running server holds, as a table or JSON."""

from __future__ import annotations

import argparse
from typing import Any

from proxyshare._cli.common import EXIT_OK, UsageError, add_server_options

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    """Add the ``status`` command to the ``proxyshare`` parser's subcommands."""
    status = sub.add_parser(
        "status",
        help="show what a running server holds",
        description="Show a server's resources, lock holders and waiters, clients, "
        "operations served and uptime.",
    )
    add_server_options(status)
    status.add_argument(
        "--tls-ca",
        metavar="FILE",
        help="tls://: the CA that signed the server's certificate "
        "(default: $PROXYSHARE_TLS_CA, else the system's CAs)",
    )
    status.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="tls://: client certificate, for mutual TLS (default: $PROXYSHARE_TLS_CERT)",
    )
    status.add_argument(
        "--tls-key",
        metavar="FILE",
        help="tls://: the client certificate's private key (default: $PROXYSHARE_TLS_KEY)",
    )
    status.add_argument(
        "--json",
        action="store_true",
        help="print a JSON report (schema: proxyshare._cli.status_report.StatusReport)",
    )
    status.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print what a running server holds: a table, or JSON with ``--json``."""
    from proxyshare._cli import config as _config
    from proxyshare._cli.status_report import StatusReport, render_status
    from proxyshare._errors import ProxyShareError
    from proxyshare._manager import connect

    try:
        settings = _config.load_client_settings(
            args.address,
            args.authkey_file,
            tls_ca=args.tls_ca,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
        )
    except _config.ConfigError as exc:
        raise UsageError(str(exc)) from None
    key = None if settings.authkey is None else settings.key_bytes()
    tls: dict[str, Any] = {}
    if settings.is_tls:
        tls = dict(tls_ca=settings.tls_ca, tls_cert=settings.tls_cert, tls_key=settings.tls_key)
    client = connect(settings.address, authkey=key, **tls)
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
