"""``python -m proxyshare`` runs the command line (see ``proxyshare._cli``)."""

from proxyshare._cli import main

raise SystemExit(main())
