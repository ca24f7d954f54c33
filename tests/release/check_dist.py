"""What the release archives hold (run by ``nox -s build``).

    python check_dist.py dist/proxyshare-X.tar.gz dist/proxyshare-X-py3-none-any.whl

The sdist carries the license, the tests and the examples (so a downstream
packager can run them); the wheel carries the package, its type marker and
the license, and nothing else; the metadata has the one version, the
supported Pythons and the OSes.
"""

from __future__ import annotations

import re
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def version_in_source() -> str:
    text = (ROOT / "proxyshare" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"$', text, flags=re.MULTILINE)
    assert match, "no __version__ in proxyshare/__init__.py"
    return match.group(1)


def check_sdist(path: str, version: str) -> None:
    with tarfile.open(path) as archive:
        top = f"proxyshare-{version}/"
        names = {name.removeprefix(top) for name in archive.getnames()}
    wanted = {
        "LICENSE",
        "README.md",
        "CHANGELOG.md",
        "pyproject.toml",
        "noxfile.py",
        ".ci/run",
        "proxyshare/__init__.py",
        "proxyshare/py.typed",
        "tests/conftest.py",
        "tests/support.py",
        "tests/release/smoke.py",
        "examples/05_proxyshare_counter.py",
    }
    assert wanted <= names, f"missing from the sdist: {sorted(wanted - names)}"
    tests = [n for n in names if n.startswith("tests/") and n.endswith(".py")]
    examples = [n for n in names if n.startswith("examples/") and n.endswith(".py")]
    assert len(tests) == len(list((ROOT / "tests").rglob("*.py"))), "the sdist lacks tests"
    assert len(examples) == len(list((ROOT / "examples").glob("*.py"))), "the sdist lacks examples"
    assert not [n for n in names if "__pycache__" in n], "the sdist holds __pycache__"
    print(f"sdist: {len(names)} entries, {len(tests)} test and {len(examples)} example files")


def check_wheel(path: str, version: str) -> None:
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        meta = Parser().parsestr(
            archive.read(f"proxyshare-{version}.dist-info/METADATA").decode("utf-8")
        )
    info = f"proxyshare-{version}.dist-info/"
    assert f"{info}licenses/LICENSE" in names, "no LICENSE in the wheel"
    assert "proxyshare/py.typed" in names, "no py.typed in the wheel"
    source = {f"proxyshare/{p.relative_to(ROOT / 'proxyshare')}" for p in _package_files()}
    packaged = {n for n in names if n.startswith("proxyshare/")}
    assert source == packaged, f"wheel and source differ: {sorted(source ^ packaged)}"
    outside = {n.split("/")[0] for n in names} - {"proxyshare", info.rstrip("/")}
    assert not outside, f"the wheel installs more than proxyshare: {sorted(outside)}"
    assert meta["Version"] == version
    assert meta["License-Expression"] == "MIT"
    assert meta["Requires-Python"] == ">=3.10"
    classifiers = meta.get_all("Classifier") or []
    for python in ("3.10", "3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {python}" in classifiers, python
    for system in ("POSIX :: Linux", "MacOS"):
        assert f"Operating System :: {system}" in classifiers, system
    assert not [c for c in classifiers if "Windows" in c]
    print(
        f"wheel: {len(packaged)} package files, version {version}, {len(classifiers)} classifiers"
    )


def _package_files() -> list[Path]:
    """What the wheel should hold: the package's modules and data, not caches."""
    package = ROOT / "proxyshare"
    return [
        p
        for p in package.rglob("*")
        if p.is_file()
        and "__pycache__" not in p.parts
        and (p.suffix in (".py", ".lua") or p.name == "py.typed")
    ]


if __name__ == "__main__":
    version = version_in_source()
    (sdist,) = [a for a in sys.argv[1:] if a.endswith(".tar.gz")]
    (wheel,) = [a for a in sys.argv[1:] if a.endswith(".whl")]
    check_sdist(sdist, version)
    check_wheel(wheel, version)
