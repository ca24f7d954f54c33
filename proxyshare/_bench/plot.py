"""``--plot``: the bench's answer at a glance, as a PNG.

Top panel, at the report's worker count: one horizontal bar of µs/op per
scenario (log scale), grouped by family under a heading, each labelled with
its × initializer ratio, racy ones hatched and marked, the initializer's cost
drawn as a reference line.  With several worker counts, a second panel
follows a few key scenarios across them; with ``--clients``, a third shows
aggregate ops/s against the number of clients.

Colours are the Okabe–Ito palette (told apart with any colour vision), one
per family, and never carry meaning alone: headings name the families and
hatching marks racy bars.  The legend sits below the panels, over nothing.
The figure is 800 px wide, the README's width.

Scenarios this module has never heard of (a newer report, a new scenario)
are drawn under their family, or under "other".  matplotlib is imported
inside the functions: it stays optional (``proxyshare[plot]``).
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

from proxyshare._bench.report import SCENARIOS, BenchReport, Measurement
from proxyshare._bench.scenarios import FAMILIES
from proxyshare._bench.targets import target_workers
from proxyshare._bench.verdict import make_verdict
from proxyshare._errors import ProxyShareError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["SWEEP_SCENARIOS", "build_figure", "require_matplotlib", "write_plot"]

# Okabe & Ito (2008), "Color Universal Design"; grey for the floors.
FAMILY_COLOURS = {
    "same-host": "#009E73",  # bluish green
    "served": "#0072B2",  # blue
    "stdlib": "#D55E00",  # vermillion
    "redis": "#CC79A7",  # reddish purple
    "floor": "#999999",  # grey
    "queue": "#E69F00",  # orange
    "other": "#56B4E9",  # sky blue
}
REFERENCE_COLOUR = "#000000"

# The worker-sweep panel follows these (those that ran), one per question a
# user asks: the fast rigid way, the fast same-host way, the served counter
# and lock, the stdlib manager, Redis.
SWEEP_SCENARIOS = (
    "initializer",
    "proxyshare-shm",
    "proxyshare-counter",
    "proxyshare-lock",
    "syncmanager",
    "redis",
)
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")

WIDTH_IN = 8.0  # × DPI = 800 px
DPI = 100
_ROW_IN = 0.25  # height of one bar (or heading) row
_AXIS_PX = 620  # width of the bar panel's axes, about (800 px less the scenario names)
_CHAR_PX = 5.8  # width of a label character at font size 8


def require_matplotlib() -> None:
    """Raise a clear error now, before a minute of benchmarking, if plots cannot be made."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ProxyShareError(
            "--plot needs matplotlib, which is not installed: pip install 'proxyshare[plot]'"
        ) from exc


def write_plot(report: BenchReport, path: str) -> None:
    """Draw ``report`` (see the module docstring) as a PNG at ``path``."""
    build_figure(report).savefig(path, format="png", dpi=DPI)


def family(m: Measurement) -> str:
    """The family ``m`` is drawn under: its own, its scenario's, or "other"."""
    if m.family in FAMILIES:
        return m.family
    spec = SCENARIOS.get(m.scenario)
    return spec.family if spec is not None and m.family is None else "other"


def _os_name(platform: str) -> str:
    """ "Linux-6.18.44-fc-x86_64-with-glibc2.36" -> "Linux 6.18"."""
    found = re.match(r"([A-Za-z]+)-(\d+(?:\.\d+)?)", platform)
    return f"{found[1]} {found[2]}" if found else platform.split("-", 1)[0]


def title_lines(report: BenchReport) -> tuple[str, str]:
    m = report.machine
    cpus = f"{m.cpu_count} CPUs" if m.cpu_count else "? CPUs"
    where = (
        f"{m.machine}, {cpus}, {_os_name(m.platform)} · {report.python_implementation} "
        f"{report.python_version} · {report.start_method} · {report.started.date().isoformat()}"
    )
    if report.mode == "micro":
        return "proxyshare bench --micro: what one call costs, from one client", where
    return "proxyshare bench: what sharing a counter costs", where


def build_figure(report: BenchReport) -> Figure:
    """The figure for ``report``: bars, then the sweep and clients panels if they apply."""
    require_matplotlib()
    from matplotlib.figure import Figure

    micro = report.mode == "micro"
    main = [m for m in report.measurements if m.scenario != "proxyshare-clients"]
    clients = sorted(
        (m.workers, m.ops_per_s) for m in report.measurements if m.scenario == "proxyshare-clients"
    )
    counts = sorted({m.workers for m in main})
    w = 1 if micro else target_workers(report)
    bars = [m for m in main if m.workers == w]
    sweep = {} if micro else _sweep_series(main, counts)

    rows = _bar_rows(bars, micro)
    heights = [max(2.0, len(rows) * _ROW_IN + 0.9)]
    if sweep:
        heights.append(2.6)
    if clients:
        heights.append(2.2)
    legend_in = 0.6
    fig = Figure(figsize=(WIDTH_IN, sum(heights) + 0.9 + legend_in), dpi=DPI, layout="constrained")
    axes = fig.subplots(len(heights), 1, squeeze=False, height_ratios=heights)[:, 0]
    handles = _draw_bars(axes[0], rows, w, report, micro)
    if sweep:
        handles += _draw_sweep(axes[1], sweep, counts)
    if clients:
        _draw_clients(axes[-1], clients)
    head, where = title_lines(report)
    fig.suptitle(f"{head}\n{where}", fontsize=11)
    if handles:
        fig.legend(
            handles=handles,
            loc="outside lower center",
            ncol=min(4, len(handles)),
            fontsize=8,
            frameon=False,
        )
    return fig


# -- the bars ---------------------------------------------------------------------

# A row of the bar panel: a family heading (measurement None) or a scenario.
_Row = tuple[str, "Measurement | None"]


def _bar_rows(bars: list[Measurement], micro: bool) -> list[_Row]:
    if micro:
        return [(m.scenario, m) for m in sorted(bars, key=lambda m: m.us_per_op)]
    groups: dict[str, list[Measurement]] = {}
    for m in bars:
        groups.setdefault(family(m), []).append(m)
    rows: list[_Row] = []
    for key, heading in FAMILIES.items():
        if key in groups:
            rows.append((heading, None))
            # Cheapest first; racy ones last, whatever they cost: they are no option.
            members = sorted(groups[key], key=lambda m: (m.racy, m.us_per_op))
            rows.extend((m.scenario, m) for m in members)
    return rows


def _us(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 100 else f"{x:,.0f}"


def _bar_label(m: Measurement, micro: bool) -> str:
    """ "20.6×  (76.9 µs)", plus "racy" or "WRONG TOTAL" where that applies."""
    ratio = m.ratio_to_floor if micro else m.ratio_to_initializer
    text = "" if ratio is None else f"{ratio:.1f}×" if ratio < 100 else f"{ratio:,.0f}×"
    text += f"  ({_us(m.us_per_op)} µs)"
    if m.racy:
        lost = f", lost {m.lost_updates:,}" if m.lost_updates else ""
        text += f"  racy{lost}"
    elif not m.correct:
        text += "  WRONG TOTAL"
    return text.strip()


def _draw_bars(ax: Axes, rows: list[_Row], w: int, report: BenchReport, micro: bool) -> list[Any]:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter

    ax.set_label("bars")
    measured = [m for _label, m in rows if m is not None]
    if not measured:
        ax.text(0.5, 0.5, "nothing was measured", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return []
    positions = list(range(len(rows)))
    racy_seen = False
    for y, (_label, m) in zip(positions, rows, strict=True):
        if m is None:
            continue
        colour = FAMILY_COLOURS["other" if micro else family(m)]
        if m.racy:
            racy_seen = True
            ax.barh(y, m.us_per_op, height=0.7, color="white", edgecolor=colour, hatch="////")
        else:
            ax.barh(y, m.us_per_op, height=0.7, color=colour)
        ax.text(
            m.us_per_op * 1.12,
            y,
            _bar_label(m, micro),
            va="center",
            fontsize=8,
            # Over the reference line and the grid, not under them.
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5},
            zorder=3,
        )
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:g}"))
    ax.set_xlim(*_x_limits(measured, micro))
    ax.set_ylim(len(rows) - 0.5, -0.5)  # first row on top
    labels = [label if m is None else _scenario_label(m) for label, m in rows]
    ax.set_yticks(positions, labels, fontsize=8)
    for tick, (_label, m) in zip(ax.get_yticklabels(), rows, strict=True):
        if m is None:
            tick.set_fontweight("bold")
            tick.set_fontsize(9)
    ax.tick_params(axis="y", length=0)
    ax.grid(True, axis="x", which="major", alpha=0.3)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)

    handles: list[Any] = []
    reference = "floor" if micro else "initializer"
    ref = next((m for m in measured if m.scenario == reference), None)
    if ref is not None:
        ax.axvline(ref.us_per_op, color=REFERENCE_COLOUR, linestyle="--", linewidth=1)
        handles.append(
            Line2D(
                [],
                [],
                color=REFERENCE_COLOUR,
                linestyle="--",
                linewidth=1,
                label=f"{reference}: {_us(ref.us_per_op)} µs",
            )
        )
    who = "from one client" if micro else f"at {w} worker{'s' if w != 1 else ''}"
    ax.set_xlabel(f"µs per operation {who} (log scale: each step is 10×; shorter is cheaper)")
    ratio = "the floor's" if micro else "the initializer's (queues: queue-initializer's)"
    title = f"× = cost ÷ {ratio}"
    if racy_seen:
        handles.append(
            Patch(facecolor="white", edgecolor="#555555", hatch="////", label="racy: loses updates")
        )
    skipped = sorted({*report.skipped, *report.failed} - {m.scenario for m in measured})
    if skipped:
        title += "; not measured here: " + ", ".join(skipped)
    noise = make_verdict(report).noise
    if noise:  # a picture travels without its verdict: it says so itself
        title += "\nnoisy run, read with care: " + "; ".join(noise)
    ax.set_title(title, fontsize=8, loc="left", wrap=True)
    return handles


def _x_limits(measured: list[Measurement], micro: bool) -> tuple[float, float]:
    """Limits that leave room right of every bar for its label (estimated, not measured)."""
    low = min(m.us_per_op for m in measured) / 2
    high = max(m.us_per_op for m in measured) * 2
    for _ in range(2):  # the room a label needs depends on the limits: settle twice
        decades_per_char = _CHAR_PX / (_AXIS_PX / math.log10(high / low))
        high = max(
            m.us_per_op * 1.12 * 10 ** ((len(_bar_label(m, micro)) + 3) * decades_per_char)
            for m in measured
        )
    return low, high


def _scenario_label(m: Measurement) -> str:
    return f"{m.scenario} (per {m.unit})" if m.unit == "round trip" else m.scenario


# -- the sweep and the clients ------------------------------------------------------


def _sweep_series(main: list[Measurement], counts: list[int]) -> dict[str, list[Measurement]]:
    if len(counts) < 2:
        return {}
    series: dict[str, list[Measurement]] = {}
    for name in SWEEP_SCENARIOS:
        points = sorted((m for m in main if m.scenario == name), key=lambda m: m.workers)
        if len(points) > 1:
            series[name] = points
    return series


def _draw_sweep(ax: Axes, series: dict[str, list[Measurement]], counts: list[int]) -> list[Any]:
    from matplotlib.ticker import FuncFormatter

    ax.set_label("sweep")
    lines = []
    per_family: dict[str, int] = {}
    for i, (name, points) in enumerate(series.items()):
        key = family(points[0])
        nth = per_family[key] = per_family.get(key, -1) + 1
        (line,) = ax.plot(
            [m.workers for m in points],
            [m.us_per_op for m in points],
            marker=_MARKERS[i % len(_MARKERS)],
            color=FAMILY_COLOURS[key],
            linestyle=("-", "--", ":")[nth % 3],  # a family's second line is dashed
            label=name,
        )
        lines.append(line)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _pos: f"{y:g}"))
    ax.set_xticks(counts, [str(c) for c in counts])
    ax.set_xlabel("workers")
    ax.set_ylabel("µs per operation (log)")
    ax.set_title("key scenarios as workers are added", fontsize=9, loc="left")
    ax.grid(True, which="both", alpha=0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return lines


def _draw_clients(ax: Axes, clients: list[tuple[int, float]]) -> None:
    from matplotlib.ticker import FuncFormatter

    ax.set_label("clients")
    xs = [c for c, _ops in clients]
    ax.plot(xs, [ops for _c, ops in clients], marker="o", color=FAMILY_COLOURS["served"])
    ax.set_xscale("log")
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _pos: f"{y:,.0f}"))
    ax.set_xlabel("client processes on one served counter")
    ax.set_ylabel("increments per second")
    ax.set_title("aggregate throughput (--clients)", fontsize=9, loc="left")
    ax.grid(True, alpha=0.3)
