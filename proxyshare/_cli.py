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

    serve = sub.add_parser("serve", help="run a proxyshare server in the foreground")
    _add_server_options(serve)
    serve.set_defaults(handler=_cmd_serve)

    status = sub.add_parser("status", help="show what a running server holds")
    _add_server_options(status)
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(handler=_cmd_status)

    bench = sub.add_parser("bench", help="benchmark proxyshare against the alternatives")
    bench.set_defaults(handler=_cmd_bench)
    return parser


def _cmd_serve(args: argparse.Namespace) -> int:
    raise UsageError("serve is not implemented yet")


def _cmd_status(args: argparse.Namespace) -> int:
    raise UsageError("status is not implemented yet")


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
