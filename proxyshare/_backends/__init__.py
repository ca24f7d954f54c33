"""Backends other than the served connection: each one a transport behind the same proxies.

shm/    same host: counters, locks and adders in shared-memory files
redis/  the same resource API on a Redis server
"""
