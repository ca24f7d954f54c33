"""A user's first minutes with an installed proxyshare (run by ``nox -s wheel``).

Run from a directory outside the checkout, with the wheel installed in a fresh
venv: fails unless the installed package (not a checkout) is the one imported,
the README quick start prints its total, proxies work in plain pools under
every start method, and the ``proxyshare`` command answers ``--version`` and
runs ``bench --quick``.

    python smoke.py path/to/README.md
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import re
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

import proxyshare

TIMEOUT = 180  # seconds for any one step; a hang fails the check instead of the CI job


def add(counter: Any, lock: Any, totals: Any, q: Any, n: int) -> int:
    for _ in range(n):
        counter.increment()
        with lock:
            totals["k"] = totals.get("k", 0) + 1
    q.put(n)
    return n


def check_installed_copy() -> None:
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    where = Path(proxyshare.__file__).resolve()
    assert site in where.parents, f"imported {where}, not the wheel installed in {site}"
    print(
        f"proxyshare {proxyshare.__version__} from {where.parent}, Python {sys.version.split()[0]}"
    )


def check_quick_start(readme: Path) -> None:
    section = readme.read_text(encoding="utf-8").split("<!-- quick-start", 1)[1]
    code = re.search(r"^```python\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL)
    assert code is not None, "no quick start in the README"
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp, "quick_start.py")
        script.write_text(code.group(1), encoding="utf-8")
        out = subprocess.run(
            [sys.executable, str(script)], cwd=tmp, capture_output=True, text=True, timeout=TIMEOUT
        )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "40000", out.stdout
    print("quick start: 40000")


def check_pools() -> None:
    with proxyshare.ShareManager() as mgr:
        for method in ("fork", "spawn", "forkserver"):
            counter, lock = mgr.counter(f"hits-{method}"), mgr.lock(f"guard-{method}")
            totals, q = mgr.dict(f"totals-{method}"), mgr.queue(f"done-{method}")
            ctx = multiprocessing.get_context(method)
            for pool_class in (cf.ProcessPoolExecutor, proxyshare.ProcessPoolExecutor):
                with pool_class(2, mp_context=ctx) as pool:
                    futures = [pool.submit(add, counter, lock, totals, q, 500) for _ in range(2)]
                    assert [f.result(timeout=TIMEOUT) for f in futures] == [500, 500]
            assert counter.get() == totals["k"] == 2_000, (method, counter.get(), totals["k"])
            assert [q.get(timeout=10) for _ in range(4)] == [500] * 4
            print(f"pool of proxies ({method}): 2000")


def check_command() -> None:
    command = Path(sys.executable).with_name("proxyshare")
    version = subprocess.run(
        [str(command), "--version"], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"proxyshare {proxyshare.__version__}", version.stdout
    print(version.stdout.strip())
    bench = subprocess.run(
        [str(command), "bench", "--quick"], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert bench.returncode == 0, bench.stdout + bench.stderr
    assert "proxyshare-counter" in bench.stdout, bench.stdout
    print("proxyshare bench --quick: ok")


if __name__ == "__main__":
    check_installed_copy()
    check_quick_start(Path(sys.argv[1]))
    check_pools()
    check_command()
