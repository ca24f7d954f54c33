"""The bench report for people: rich tables (the picture is ``plot``).

rich is imported inside the functions, so it is not needed to run the bench
as a library.
"""

from __future__ import annotations

from typing import Any

from proxyshare._bench.compare import BASELINE, Change, Comparison, Measure
from proxyshare._bench.report import BenchReport, Capability, CapabilityRow, Verdict
from proxyshare._bench.targets import target_workers

__all__ = ["render", "render_comparison", "render_verdict"]


def _fmt_us(us: float) -> str:
    return f"{us:,.3f}" if us < 10 else f"{us:,.1f}"


def render(report: BenchReport, verbose: bool = False) -> list[Any]:
    """The report as rich renderables: results, capabilities, targets, verdict.

    The default fits one screen at 120 columns; ``verbose`` adds the details
    behind each "what the cost buys" cell, the scenarios of each mechanism
    and how each target was computed.
    """
    from rich.text import Text

    out: list[Any] = [*_render_results(report)]
    if report.capabilities:
        out.extend(_render_capabilities(report.capabilities, verbose))
    if report.targets:
        out.extend(_render_targets(report, verbose))
    if report.verdict is not None:
        out.extend(render_verdict(report.verdict))
    for name, reason in report.skipped.items():
        out.append(Text(f"skipped {name}: {reason}", style="yellow"))
    for name, reason in report.failed.items():
        out.append(Text(f"FAILED {name}: {reason}", style="bold red"))
    return out


def _table(title: str | None = None) -> Any:
    """A table without lines (the header is bold): the default output fits one screen."""
    from rich.table import Table

    return Table(title=title, title_justify="left", box=None)


def _render_results(report: BenchReport) -> list[Any]:
    from rich.text import Text

    repeat = report.config.repeat
    load = report.machine.load_average_start
    title = (
        f"[bold]proxyshare bench[/] — {report.start_method}, Python {report.python_version}, "
        f"{report.machine.cpu_count} CPUs, load {load[0] if load else '?'}"
    )
    micro = report.mode == "micro"
    table = _table(title)
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
            row.append(f"{m.lost_updates:,}")
            if m.correct:
                row.append("[green]yes[/]")
            elif m.racy:
                row.append("[yellow]no (racy)[/]")
            else:
                row.append("[red]NO[/]")
        table.add_row(*row)
    notes = []
    if "round trip" in units:
        notes.append("† per round trip")
    if "item" in units:
        notes.append("‡ per queue item, × queue-initializer")
    if not micro:
        notes.append("trips/op: requests the server counted")
        connects = {
            m.scenario: f"{m.scenario} {m.connect_us / 1e3:.2f} ms"
            for m in report.measurements
            if m.connect_us is not None
        }
        if connects:
            notes.append("a new connection: " + ", ".join(connects.values()))
    out: list[Any] = [table]
    if notes:
        out.append(Text("; ".join(notes), style="dim"))
    return out


def _render_targets(report: BenchReport, verbose: bool) -> list[Any]:
    from rich.text import Text

    w = target_workers(report)
    table = _table()
    table.add_column(f"targets at {w} workers (reported, not asserted)")
    table.add_column("limit", justify="right")
    table.add_column("measured", justify="right")
    table.add_column("met?")
    if verbose:
        table.add_column("from")
    hidden = 0
    for t in report.targets:
        if t.measured is None and not verbose:
            hidden += 1  # a line that says only "not run" does not earn its place on screen
            continue
        measured = "[dim]not run[/]" if t.measured is None else f"{t.measured:.2f}"
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: "[dim]—[/]"}[t.met]
        row = [t.description, f"{t.comparison} {t.limit:g}", measured, met]
        if verbose:
            row.append(f"[dim]{t.detail}[/]")
        table.add_row(*row)
    out: list[Any] = [table]
    if all(t.met is None for t in report.targets):
        out = [table] if verbose else []
        out.append(Text("no target could be evaluated in this run", style="dim"))
    elif hidden:
        out.append(Text(f"{hidden} target(s) not run here (--verbose lists them)", style="dim"))
    return out


def render_verdict(verdict: Verdict) -> list[Any]:
    """The verdict's sentences under a heading, one paragraph each."""
    from rich.text import Text

    out: list[Any] = []
    for i, sentence in enumerate(verdict.sentences):
        text = Text.assemble(("verdict: ", "bold")) if i == 0 else Text()
        noise = i == len(verdict.sentences) - 1 and verdict.noisy
        text.append(sentence, style="yellow" if noise else "")
        out.append(text)
    return out


_CAP_COLUMNS = (
    ("submit_argument", "submit() arg"),
    ("created_after_pool_start", "made after pool start"),
    ("other_machine", "other machine"),
    ("lock_release_on_holder_death", "lock freed if holder dies"),
)


def _render_capabilities(rows: list[CapabilityRow], verbose: bool) -> list[Any]:
    """One line per mechanism (its scenarios share the facts); details with ``verbose``."""
    from rich.text import Text

    # Scenarios of a mechanism share its facts, but for an object that cannot itself
    # be submitted (an asyncio proxy): those get a line of their own, named.
    groups: dict[tuple[str, bool], list[CapabilityRow]] = {}
    for row in rows:
        groups.setdefault((row.mechanism, bool(row.submit_argument.works)), []).append(row)
    split = {m for m, _works in groups if (m, True) in groups and (m, False) in groups}
    table = _table()
    table.add_column("what the cost buys" + (" (scenarios)" if verbose else ""))
    for _field, header in _CAP_COLUMNS:
        table.add_column(header, no_wrap=True)
    details: list[str] = []
    for (mechanism, works), members in groups.items():
        first = members[0]
        cells = [getattr(first, field) for field, _header in _CAP_COLUMNS]
        label = mechanism
        if mechanism in split and not works:
            label += ": " + ", ".join(m.scenario for m in members)
        if verbose:
            label += "\n[dim]" + ", ".join(m.scenario for m in members) + "[/]"
        table.add_row(label, *(_cap_text(c) for c in cells))
        for (_field, header), cell in zip(_CAP_COLUMNS, cells, strict=True):
            if cell.works is not None:  # n/a cells: the reason is in the skipped list
                details.append(f"{mechanism} · {header}: {cell.detail}")
    if not verbose:
        return [table]
    legend = (
        "checked: tried by the bench in this run; by design: follows from how the "
        "mechanism works; n/a: does not apply or is not available here"
    )
    return [table, Text(legend, style="dim"), Text("\n".join(details), style="dim")]


def _cap_text(c: Capability) -> str:
    mark = {True: "[green]yes[/]", False: "[red]no[/]", None: "[dim]n/a[/]"}[c.works]
    basis = {"checked": "checked", "structural": "by design"}.get(c.basis)
    return f"{mark} [dim]({basis})[/]" if basis else mark


def _num(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 100 else f"{x:,.0f}"


def _measure_cell(m: Measure) -> str:
    change = m.change
    if change is None:
        return f"{_num(m.old)} → {_num(m.new)}" if m.old or m.new else ""
    return f"{_num(m.old)} → {_num(m.new)} [dim]({change * 100:+.0f} %)[/]"


def render_comparison(comparison: Comparison, source: str) -> list[Any]:
    """Each scenario's change since the report in ``source``, regressions flagged."""
    from rich.text import Text

    pct = f"{comparison.threshold_pct:g} %"
    table = _table(f"[bold]compared with {source}[/] (old → new)")
    table.add_column("scenario", no_wrap=True)
    table.add_column("W", justify="right")
    table.add_column("µs/op", justify="right")
    for ref in comparison.references:
        table.add_column("× init" if ref == BASELINE else f"× {ref}", justify="right")
    table.add_column("change")
    for c in comparison.changes:
        if c.status in ("new", "gone"):
            continue
        raw = _measure_cell(c.raw) + (" *" if c.judged == (c.raw,) else "")
        ratios = [_measure_cell(r) for r in c.ratios]
        table.add_row(c.scenario, str(c.workers), raw, *ratios, _change_cell(c, pct))
    explain = (
        "change: judged on the ratios (×), which survive a noisy machine: worse or better by "
        f"more than {pct} against every reference both runs measured (× init: × queue-initializer "
        "for queues; * no common reference, µs/op judged)"
    )
    out: list[Any] = [table, Text(explain, style="dim")]
    for status, said in (("new", "new in this run"), ("gone", "in the old run only")):
        names = [f"{c.scenario} × {c.workers}" for c in comparison.changes if c.status == status]
        if names:
            out.append(Text(f"{said}: {', '.join(names)}", style="dim"))
    for note in comparison.notes:
        out.append(Text(f"note: {note}", style="yellow"))
    worse = comparison.regressions
    if worse:
        which = ", ".join(f"{c.scenario} × {c.workers}" for c in worse)
        out.append(Text(f"{len(worse)} regression(s) beyond {pct}: {which}", style="bold red"))
    else:
        out.append(Text(f"no regression beyond {pct}", style="green"))
    return out


def _change_cell(c: Change, pct: str) -> str:
    worse, better = c.worse_by, c.better_by
    if c.status == "reference":
        return "[dim]reference[/]"
    if c.regressed and worse is not None:
        return f"[bold red]worse {worse * 100:+.0f} %[/]"
    if c.improved and better is not None:
        return f"[green]better {-better * 100:+.0f} %[/]"
    if c.mixed:
        return "[yellow]mixed[/]"
    return f"[dim]within {pct}[/]"
