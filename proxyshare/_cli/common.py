"""What every ``proxyshare`` command shares: exit codes, the usage error, server options."""

from __future__ import annotations

import argparse

__all__ = ["EXIT_OK", "EXIT_RUNTIME", "EXIT_USAGE", "UsageError", "add_server_options"]

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A bad option value found after argparse accepted the command line."""


def add_server_options(parser: argparse.ArgumentParser) -> None:
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
