"""Backends: other ways of carrying the operations of ``_protocol``'s table.

Each backend implements the declared interface of ``_transport`` (a
``Transport`` the plain proxies of ``_proxies`` call through), so it brings
no proxies of its own, except where a measured hot path overrides a method:

    shm/    same host: counters and locks in shared-memory files, run in the caller
    redis/  the same resource API on a Redis server (``connect("redis://...")``)

The served backend (the manager's own server, ``_client`` + ``_server``) is the
reference: every backend checks its arguments with ``_rules``, so the same
call with the same bad argument fails the same way everywhere.
"""
