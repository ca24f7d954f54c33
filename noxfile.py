"""The test matrix beyond the current interpreter; ``.ci/run`` runs these sessions.

Each session builds its own venv from this checkout's files:

    nox -s tests-3.10 tests-3.12 tests-3.13   # `matrix`-marked tests (not `slow`) on each
    nox -s start_methods    # pool/proxy/shm/primitive tests, forkserver then spawn as default
    nox -s poll_reactor     # the server on poll(2), as on macOS and the BSDs
    nox -s build            # sdist + wheel, twine check, what each archive holds
    nox -s wheel            # that wheel in a fresh venv of each Python, run from elsewhere

The whole suite runs on the current interpreter with the README's command
(``pip install -e '.[test]' && python -m pytest``).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import nox

nox.options.error_on_missing_interpreters = True  # a Python we cannot find is a failure
nox.options.download_python = "never"  # test the interpreters installed here, nothing else
nox.options.sessions = ["tests", "start_methods", "poll_reactor", "build", "wheel"]

ROOT = Path(__file__).resolve().parent
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]  # as pyproject.toml's classifiers say
DIST = ROOT / ".nox" / "dist"  # where `build` leaves the archives `wheel` installs

# What differs between start methods: pools, proxies, shared memory, primitives.
START_METHOD_TESTS = [
    "tests/integration/test_default_start_methods.py",
    "tests/integration/test_pools.py",
    "tests/integration/test_pool_executor.py",
    "tests/integration/test_manager.py",
    "tests/integration/test_primitives.py",
    "tests/integration/test_shm.py",
]
# What the reactor's backend serves: its loop, sessions, parked waits, primitives, pools.
POLL_REACTOR_TESTS = [
    "tests/unit/test_reactor.py",
    "tests/integration/test_reactor_server.py",
    "tests/integration/test_reactor_review.py",
    "tests/integration/test_primitives.py",
    "tests/integration/test_pools.py",
]
PYTEST = ("python", "-m", "pytest", "-p", "no:cacheprovider")


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The `matrix` subset (core, pools, primitives, shared memory, faults) but the
    slow loky and Dask runs."""
    session.install("-e", ".[test-core]")
    session.run(*PYTEST, "-m", "matrix and not slow", *session.posargs)


@nox.session(python="3.13")
def start_methods(session: nox.Session) -> None:
    """Forkserver (3.14's default on Linux), then spawn (macOS's), as the default start
    method, for code that makes a pool with no mp_context."""
    session.install("-e", ".[test-core]")
    for method in ("forkserver", "spawn"):
        session.run(
            *PYTEST,
            *(session.posargs or ["-m", "not slow", *START_METHOD_TESTS]),
            env={"PROXYSHARE_TEST_START_METHOD": method},
        )


@nox.session(python="3.11")
def poll_reactor(session: nox.Session) -> None:
    """The server's poll(2) backend, which macOS and the BSDs use, forced on Linux."""
    session.install("-e", ".[test-core]")
    session.run(
        *PYTEST, *(session.posargs or POLL_REACTOR_TESTS), env={"PROXYSHARE_REACTOR": "poll"}
    )


@nox.session(python="3.11")
def build(session: nox.Session) -> None:
    """The sdist and the wheel, as a release would upload them."""
    session.install("build", "twine")
    shutil.rmtree(DIST, ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", str(DIST), str(ROOT))
    archives = sorted(str(path) for path in DIST.iterdir())
    session.run("python", "-m", "twine", "check", "--strict", *archives)
    session.run("python", str(ROOT / "tests" / "release" / "check_dist.py"), *archives)


@nox.session(python=PYTHONS, requires=["build"])
def wheel(session: nox.Session) -> None:
    """The wheel alone in this fresh venv (not the checkout, not editable), run from a
    directory outside the checkout: the README quick start, pools of proxies under each
    start method, ``proxyshare --version`` and ``proxyshare bench --quick``."""
    (wheel_file,) = DIST.glob("*.whl")
    session.install(str(wheel_file))
    with tempfile.TemporaryDirectory(prefix="proxyshare-wheel-") as elsewhere:
        smoke = Path(elsewhere, "smoke.py")
        shutil.copy(ROOT / "tests" / "release" / "smoke.py", smoke)
        with session.chdir(elsewhere):
            session.run("python", str(smoke), str(ROOT / "README.md"))
