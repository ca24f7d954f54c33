"""Helpers shared by the test suites (importable as ``tests.support``).

Worker functions live here, at module level, so that spawn and forkserver
workers can import them by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

START_METHODS = ["fork", "spawn", "forkserver"]
# Sets the default start method for a whole test run (see conftest.py).
START_METHOD_ENV = "PROXYSHARE_TEST_START_METHOD"


@contextlib.contextmanager
def running_manager(**kwargs: Any) -> Iterator[Any]:
    """A started ShareManager, shut down (and this process's connections closed) after."""
    import proxyshare
    from proxyshare._client import close_all_channels

    mgr = proxyshare.ShareManager(**kwargs)
    mgr.start()
    try:
        yield mgr
    finally:
        close_all_channels()
        mgr.shutdown()


@contextlib.contextmanager
def released(gate: threading.Event) -> Iterator[threading.Event]:
    """Set ``gate`` on the way out, so no thread or job stays blocked on it after a test."""
    try:
        yield gate
    finally:
        gate.set()


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kill_hard(proc: Any) -> None:
    """SIGKILL a Process/Popen (or pid) and reap it."""
    pid = proc if isinstance(proc, int) else proc.pid
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if hasattr(proc, "join"):
        proc.join(5)
    elif hasattr(proc, "wait"):
        proc.wait(5)


def stop_hard(pid: int) -> None:
    """SIGSTOP ``pid`` and wait until every one of its threads has stopped.

    ``kill`` returns before the stop takes hold: a thread woken by a request
    in the meantime can still answer it. Resume with ``SIGCONT``.
    """
    os.kill(pid, signal.SIGSTOP)
    wait_until(lambda: all(state in "Tt" for state in _thread_states(pid)))


def _thread_states(pid: int) -> list[str]:
    states = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that just ended
            stat = (task / "stat").read_text()
            states.append(stat.rpartition(")")[2].split()[0])
    return states


ROOT = Path(__file__).resolve().parent.parent


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a subprocess run as a user would: this checkout on the
    path and no stray ``PROXYSHARE_*`` settings from the caller's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXYSHARE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m proxyshare ARGS`` (clean environment) and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "proxyshare", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(env),
        cwd=ROOT,
    )


# -- worker functions (module level: picklable under every start method) ------


def increment_many(counter: Any, n: int) -> int:
    for _ in range(n):
        counter.increment()
    return n


def locked_read_modify_write(lock: Any, d: Any, key: str, n: int) -> int:
    for _ in range(n):
        with lock:
            d[key] = d.get(key, 0) + 1
    return n


def call_method(obj: Any, method: str, *args: Any) -> Any:
    return getattr(obj, method)(*args)


def hold_lock_forever(lock: Any, ready: Any) -> None:
    lock.acquire()
    ready.set()
    while True:
        time.sleep(1)


def write_pid(path: str) -> None:
    """An initializer: record which process ran it."""
    Path(path).write_text(str(os.getpid()))


def pid_of_worker() -> int:
    return os.getpid()


@contextlib.contextmanager
def loky_safe_logging() -> Iterator[None]:
    """Detach handlers from the ``multiprocessing`` logger while loky starts workers.

    pytest >= 9.2 attaches its capture handlers to non-propagating loggers such
    as ``multiprocessing``'s (at the start of each test phase, so this runs
    inside the test).  loky then tells its workers to format that logger's
    first handler, which they do not have, and every worker dies at start-up
    (IndexError in loky/backend/spawn.py).
    """
    import multiprocessing

    mp_logger = multiprocessing.get_logger()
    saved = mp_logger.handlers[:]
    for handler in saved:
        mp_logger.removeHandler(handler)
    try:
        yield
    finally:
        for handler in saved:
            mp_logger.addHandler(handler)


# Printed by a child after its code: what a client must never load (the server,
# the CLI, the bench, or the heavy libraries those use).
_HEAVY_PROBE = (
    "\nimport sys as _sys\n"
    "print(sorted(m for m in _sys.modules if m.split('.')[0] in\n"
    "             ('pydantic', 'rich', 'matplotlib', 'redis')\n"
    "             or m.split('.')[:2] in (['proxyshare', '_server'], ['proxyshare', '_cli'],\n"
    "                                     ['proxyshare', '_bench'])))\n"
)


def heavy_modules_after(manager: Any, key_dir: Path, code: str, stdin: bytes = b"") -> str:
    """Run ``code`` in a fresh client of ``manager`` (found through the environment,
    outside the checkout); return the heavy modules it loaded, as printed, ``[]`` if none."""
    from proxyshare._keys import write_key_file

    ref = manager.server_ref
    key_file = write_key_file(key_dir / "key", ref.authkey)
    env = cli_env(
        {"PROXYSHARE_ADDRESS": f"unix:{ref.address}", "PROXYSHARE_AUTHKEY_FILE": str(key_file)}
    )
    out = subprocess.run(
        [sys.executable, "-c", code + _HEAVY_PROBE],
        input=stdin,
        capture_output=True,
        timeout=60,
        env=env,
        cwd=ROOT.parent,
    )
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout.decode().strip().splitlines()[-1]
