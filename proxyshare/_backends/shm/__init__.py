"""The same-host fast path: resources in shared-memory files, operated in the caller.

    layout  the file format and the kernel-lock helpers (shared with the server side,
            ``proxyshare._server.resources.shm``, which creates and removes the files)
    client  ShmTransport, SharedMemoryCounter and SharedMemoryLock

This ``__init__`` imports nothing, so a worker that unpickles a
shared-memory proxy loads only what it uses.
"""
