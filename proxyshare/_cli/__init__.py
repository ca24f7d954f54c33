"""The ``proxyshare`` command: ``serve``, ``status`` and ``bench``.

This package is the only place that prints or exits.  Library code raises;
here an error becomes one line on stderr and an exit code:

    0  success
    1  runtime error (server unreachable, key rejected, port in use, ...)
    2  usage error (bad option or value)

One module per command (``serve``, ``status``, ``bench``), each with
``register(subparsers)`` and ``run(args)``; ``config`` reads options and
the environment into pydantic settings; ``status_report`` is the status
schema and its table.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from proxyshare._cli import bench, serve, status
from proxyshare._cli.common import EXIT_RUNTIME, EXIT_USAGE, UsageError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="proxyshare",
        description="Serve, inspect and benchmark shared counters, locks and dicts.",
    )
    from proxyshare import __version__

    parser.add_argument("--version", action="version", version=f"proxyshare {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in (serve, status, bench):
        command.register(sub)
    return parser


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
