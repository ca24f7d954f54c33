"""The bench report for people: rich tables (the picture is ``plot``).

rich is imported inside the functions, so it is not needed to run the bench
as a library.
"""

from __future__ import annotations

from typing import Any

from proxyshare._bench.report import BenchReport, Capability, CapabilityRow
from proxyshare._bench.targets import target_workers

__all__ = ["render"]


def _fmt_us(us: float) -> str:
    return f"{us:,.3f}" if us < 10 else f"{us:,.1f}"


def render(report: BenchReport) -> list[Any]:
    """The report as rich renderables: results, capabilities, targets, notes."""
    from rich.table import Table
    from rich.text import Text

    out: list[Any] = []
    repeat = report.config.repeat
    title = (
        f"proxyshare bench — {report.start_method}, Python {report.python_version}, "
        f"{report.machine.cpu_count} CPUs, load {report.machine.load_average_start}"
    )
    micro = report.mode == "micro"
    table = Table(title=title, title_justify="left")
    table.add_column("scenario", no_wrap=True)
    table.add_column("W", justify="right")
    table.add_column("µs/op", justify="right")
    if repeat > 1:
        table.add_column("min–max", justify="right")
    table.add_column("ops/s", justify="right")
    table.add_column("× floor" if micro else "× init", justify="right")
    if not micro:
        table.add_column("trips/op", justify="right")
        table.add_column("lost", justify="right")
        table.add_column("correct?")
    units = set()
    for m in report.measurements:
        ratio = m.ratio_to_floor if micro else m.ratio_to_initializer
        name = m.scenario
        if m.unit not in ("increment", "op"):
            name += " †" if m.unit == "round trip" else " ‡"
            units.add(m.unit)
        row = [name, str(m.workers), _fmt_us(m.us_per_op)]
        if repeat > 1:
            row.append(f"{_fmt_us(m.us_per_op_min)}–{_fmt_us(m.us_per_op_max)}")
        row.append(f"{m.ops_per_s:,.0f}")
        row.append("" if ratio is None else f"{ratio:,.1f}×")
        if not micro:
            trips = m.round_trips_per_op
            row.append("" if trips is None else f"{trips:.2f}" if trips >= 0.1 else f"{trips:.3f}")
            row.append(str(m.lost_updates))
            if m.correct:
                row.append("[green]yes[/]")
            elif m.racy:
                row.append("[yellow]no (racy)[/]")
            else:
                row.append("[red]NO[/]")
        table.add_row(*row)
    out.append(table)
    notes = []
    if "round trip" in units:
        notes.append("† per round trip")
    if "item" in units:
        notes.append("‡ per queue item (put by a worker, got by the parent); × queue-initializer")
    if not micro:
        notes.append("trips/op: requests the proxyshare server counted per operation")
    if notes:
        out.append(Text("; ".join(notes), style="dim"))

    if report.capabilities:
        out.extend(_render_capabilities(report.capabilities))

    known = [t for t in report.targets if t.met is not None]
    if report.targets:
        w = target_workers(report)
        targets = Table(
            title=f"targets at {w} workers (reported, not asserted)", title_justify="left"
        )
        targets.add_column("target")
        targets.add_column("limit", justify="right")
        targets.add_column("measured", justify="right")
        targets.add_column("met?")
        for t in report.targets:
            measured = "[dim]not run[/]" if t.measured is None else f"{t.measured:.2f}"
            met = {True: "[green]yes[/]", False: "[red]no[/]", None: "[dim]—[/]"}[t.met]
            targets.add_row(t.description, f"{t.comparison} {t.limit:g}", measured, met)
        out.append(targets)
        if not known:
            out.append(Text("no target could be evaluated in this run", style="dim"))

    for name, reason in report.skipped.items():
        out.append(Text(f"skipped {name}: {reason}", style="yellow"))
    for name, reason in report.failed.items():
        out.append(Text(f"FAILED {name}: {reason}", style="bold red"))
    return out


_CAP_COLUMNS = (
    ("submit_argument", "submit arg"),
    ("created_after_pool_start", "made after pool start"),
    ("other_machine", "other machine"),
    ("lock_release_on_holder_death", "lock freed on holder death"),
)


def _render_capabilities(rows: list[CapabilityRow]) -> list[Any]:
    """One line per mechanism (its scenarios share the facts), details underneath."""
    from rich.table import Table
    from rich.text import Text

    groups: dict[str, list[CapabilityRow]] = {}
    for row in rows:
        groups.setdefault(row.mechanism, []).append(row)
    table = Table(title="what the cost buys", title_justify="left")
    table.add_column("mechanism (scenarios)")
    for _field, header in _CAP_COLUMNS:
        table.add_column(header)
    details: list[str] = []
    for mechanism, members in groups.items():
        first = members[0]
        cells = [getattr(first, field) for field, _header in _CAP_COLUMNS]
        names = ", ".join(m.scenario for m in members)
        table.add_row(f"{mechanism}\n[dim]{names}[/]", *(_cap_text(c) for c in cells))
        for (_field, header), cell in zip(_CAP_COLUMNS, cells, strict=True):
            if cell.works is not None:  # n/a cells: the reason is in the skipped list
                details.append(f"{mechanism} · {header}: {cell.detail}")
    legend = (
        "checked: tried by the bench in this run; structural: follows from how the "
        "mechanism works; n/a: does not apply or is not available here"
    )
    return [table, Text(legend, style="dim"), Text("\n".join(details), style="dim")]


def _cap_text(c: Capability) -> str:
    mark = {True: "[green]yes[/]", False: "[red]no[/]", None: "[dim]n/a[/]"}[c.works]
    return mark if c.basis == "n/a" else f"{mark} [dim]{c.basis}[/]"
