"""An import-linter contract type: only the CLI prints or exits.

import-linter checks imports; printing and exiting are calls, so this
contract reads the source of every module of the package instead and
reports each ``print(...)``, ``sys.exit(...)``, ``exit(...)``/``quit(...)``,
``os._exit(...)``, ``raise SystemExit`` and write to ``sys.stdout``/
``sys.stderr`` outside the modules it allows.  Library code raises; the CLI
turns errors into one line on stderr and an exit code.

Configured in pyproject.toml::

    [tool.importlinter]
    contract_types = ["no_print_or_exit: tools.lint_contracts.NoPrintOrExitContract"]

    [[tool.importlinter.contracts]]
    type = "no_print_or_exit"
    allowed_modules = ["proxyshare._cli", "proxyshare.__main__"]
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from typing import Any

from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck

_CALLS = {
    ("print",),
    ("exit",),
    ("quit",),
    ("sys", "exit"),
    ("os", "_exit"),
    ("sys", "stdout", "write"),
    ("sys", "stderr", "write"),
}


def _dotted(node: ast.expr) -> tuple[str, ...]:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return tuple(reversed(parts))
    return ()


def offences(source: str) -> list[tuple[int, str]]:
    """``(line, what)`` for each print or exit in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and _dotted(node.func) in _CALLS:
            found.append((node.lineno, ".".join(_dotted(node.func)) + "()"))
        elif isinstance(node, ast.Raise) and node.exc is not None:
            target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if _dotted(target) == ("SystemExit",):
                found.append((node.lineno, "raise SystemExit"))
    return found


class NoPrintOrExitContract(Contract):
    type_name = "no_print_or_exit"

    allowed_modules = fields.ListField(subfield=fields.StringField())

    def check(self, graph: Any, verbose: bool) -> ContractCheck:
        allowed = [str(m) for m in self.allowed_modules]  # type: ignore[attr-defined]
        problems = []
        for module in sorted(graph.modules):
            if not module.startswith("proxyshare"):
                continue
            if any(module == a or module.startswith(a + ".") for a in allowed):
                continue
            spec = importlib.util.find_spec(module)
            if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
                continue
            for line, what in offences(Path(spec.origin).read_text(encoding="utf-8")):
                problems.append(f"{module}:{line}: {what}")
        return ContractCheck(kept=not problems, metadata={"problems": problems})

    def render_broken_contract(self, check: ContractCheck) -> None:
        from importlinter.application import output

        for problem in check.metadata["problems"]:
            output.print_error(f"{problem} (only the CLI prints or exits; raise instead)")
