"""The bench report for people: rich tables and a matplotlib plot.

rich and matplotlib are imported inside the functions, so neither is needed
to run the bench as a library, and matplotlib stays optional (``[plot]``).
"""

from __future__ import annotations

from typing import Any

from proxyshare._bench.report import BenchReport, Capability, CapabilityRow, spec_of
from proxyshare._bench.targets import target_workers
from proxyshare._errors import ProxyShareError

__all__ = ["render", "require_matplotlib", "write_plot"]


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


def require_matplotlib() -> None:
    """Raise a clear error now, before a minute of benchmarking, if plots cannot be made."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ProxyShareError(
            "--plot needs matplotlib, which is not installed: pip install 'proxyshare[plot]'"
        ) from exc


def write_plot(report: BenchReport, path: str) -> None:
    """µs per op of each scenario (log scale) as a PNG at ``path``.

    Several worker counts: one line per scenario against workers.  One count
    (or micro mode): one bar per scenario.  ``--clients``: a second panel with
    the aggregate ops/s against the number of clients.
    """
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clients = sorted(
        (m.workers, m.ops_per_s) for m in report.measurements if m.scenario == "proxyshare-clients"
    )
    main = [m for m in report.measurements if m.scenario != "proxyshare-clients"]
    panels = 2 if clients else 1
    fig, axes = plt.subplots(1, panels, figsize=(9 + 5 * (panels - 1), 6), squeeze=False)
    ax = axes[0][0]
    counts = sorted({m.workers for m in main})
    if report.mode == "micro" or len(counts) == 1:
        ax.barh(
            [m.scenario for m in main],
            [m.us_per_op for m in main],
            color=["tab:orange" if m.racy else "tab:blue" for m in main],
        )
        ax.set_xscale("log")
        who = "one client" if report.mode == "micro" else f"{counts[0] if counts else 0} workers"
        ax.set_xlabel(f"µs per operation, {who} (log scale; racy scenarios in orange)")
        ax.invert_yaxis()
    else:
        series: dict[str, list[tuple[int, float]]] = {}
        for m in main:
            series.setdefault(m.scenario, []).append((m.workers, m.us_per_op))
        colours = plt.get_cmap("tab20")
        for i, (name, points) in enumerate(series.items()):
            points.sort()
            xs, ys = zip(*points, strict=True)
            spec = spec_of(name)
            style = ":" if spec.racy else "--" if spec.unit != "increment" else "-"
            ax.plot(xs, ys, style, marker="o", color=colours(i % 20), label=name)
        ax.set_yscale("log")
        ax.set_xlabel("workers")
        ax.set_ylabel("µs per operation (log scale)")
        ax.set_xticks(counts)
        ax.legend(fontsize="small", loc="best")
    ax.set_title(
        f"proxyshare bench ({report.start_method}, Python {report.python_version}, "
        f"{report.machine.cpu_count} CPUs)"
    )
    ax.grid(True, which="both", alpha=0.3)
    if clients:
        cx = axes[0][1]
        xs, ys = zip(*clients, strict=True)
        cx.plot(xs, ys, marker="o")
        cx.set_xscale("log")
        cx.set_xticks(list(xs), [str(x) for x in xs])
        cx.set_ylim(bottom=0)
        cx.set_xlabel("client processes on one counter")
        cx.set_ylabel("aggregate increments per second")
        cx.set_title("proxyshare-clients")
        cx.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
