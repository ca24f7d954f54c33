"""The picture's structure (bars, labels, groups, title, panels), never its pixels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("matplotlib")

from proxyshare._bench.plot import FAMILY_COLOURS, SWEEP_SCENARIOS, build_figure, write_plot
from proxyshare._bench.scenarios import FAMILIES
from tests.bench_reports import TYPICAL, synthetic_report

pytestmark = pytest.mark.timeout(60)

SMALL = {
    "initializer": 2.0,
    "initializer-nolock": 0.5,
    "proxyshare-counter": 24.0,
    "proxyshare-shm": 3.0,
    "syncmanager": 200.0,
    "floor": 12.0,
}


def _axes(fig: Any, label: str) -> Any:
    found = [ax for ax in fig.axes if ax.get_label() == label]
    assert len(found) == 1, [ax.get_label() for ax in fig.axes]
    return found[0]


def _ticks(ax: Any) -> list[str]:
    return [tick.get_text() for tick in ax.get_yticklabels()]


def _bar_texts(ax: Any) -> list[str]:
    return [t.get_text() for t in ax.texts]


def test_one_bar_per_scenario_grouped_under_family_headings() -> None:
    fig = build_figure(synthetic_report(SMALL, lost={"initializer-nolock": 40}))
    bars = _axes(fig, "bars")
    assert len(bars.patches) == len(SMALL)
    assert _ticks(bars) == [
        FAMILIES["same-host"],
        "initializer",
        "proxyshare-shm",
        "initializer-nolock",  # racy: last in its family, whatever it costs
        FAMILIES["served"],
        "proxyshare-counter",
        FAMILIES["stdlib"],
        "syncmanager",
        FAMILIES["floor"],
        "floor (per round trip)",
    ]


def test_each_bar_is_labelled_with_its_ratio_and_racy_ones_are_marked() -> None:
    fig = build_figure(synthetic_report(SMALL, lost={"initializer-nolock": 40}))
    texts = _bar_texts(_axes(fig, "bars"))
    assert "12.0×  (24.0 µs)" in texts
    assert "100×  (200 µs)" in texts
    assert "0.2×  (0.50 µs)  racy, lost 40" in texts
    hatched = [p for p in _axes(fig, "bars").patches if p.get_hatch()]
    assert len(hatched) == 1


def test_the_initializer_cost_is_a_reference_line() -> None:
    bars = _axes(build_figure(synthetic_report(SMALL)), "bars")
    assert [list(line.get_xdata()) for line in bars.lines] == [[2.0, 2.0]]


def test_families_have_distinct_colour_blind_safe_colours() -> None:
    bars = _axes(build_figure(synthetic_report(TYPICAL)), "bars")
    colours = {p.get_facecolor()[:3] for p in bars.patches if not p.get_hatch()}
    assert len(colours) == len({spec for spec in FAMILIES if spec != "other"})
    assert len(set(FAMILY_COLOURS.values())) == len(FAMILY_COLOURS)


def test_the_title_names_machine_python_start_method_and_date() -> None:
    title = build_figure(synthetic_report(SMALL))._suptitle.get_text()  # type: ignore[union-attr]
    for part in ("x86_64", "2 CPUs", "Linux 6.18", "CPython 3.11.7", "fork", "2026-12-01"):
        assert part in title


def test_the_picture_is_readable_at_the_readmes_width() -> None:
    fig = build_figure(synthetic_report(TYPICAL))
    width, _height = fig.get_size_inches() * fig.dpi
    assert width == 800


def test_the_legend_hides_nothing() -> None:
    fig = build_figure(
        synthetic_report(TYPICAL, sweep={1: TYPICAL}, lost={"syncmanager-nolock": 3})
    )
    fig.draw_without_rendering()
    (legend,) = fig.legends
    box = legend.get_window_extent()
    for ax in fig.axes:
        assert not box.overlaps(ax.get_window_extent()), ax.get_label()


def test_one_worker_count_draws_no_sweep_panel() -> None:
    fig = build_figure(synthetic_report(SMALL))
    assert [ax.get_label() for ax in fig.axes] == ["bars"]


def test_a_sweep_follows_only_the_key_scenarios() -> None:
    report = synthetic_report(TYPICAL, workers=2, sweep={1: TYPICAL, 4: TYPICAL})
    fig = build_figure(report)
    sweep = _axes(fig, "sweep")
    assert [line.get_label() for line in sweep.lines] == list(SWEEP_SCENARIOS)
    assert all(list(line.get_xdata()) == [1, 2, 4] for line in sweep.lines)
    # The bars are drawn at the target worker count, 2.
    assert "µs per operation at 2 workers" in _axes(fig, "bars").get_xlabel()


def test_unknown_scenarios_slot_in_under_their_family_or_other() -> None:
    report = synthetic_report(SMALL)
    template = report.measurement("proxyshare-counter")
    assert template is not None
    report.measurements += [
        template.model_copy(update={"scenario": "aio-64", "family": "served", "us_per_op": 30.0}),
        template.model_copy(update={"scenario": "telepathy", "family": "psychic"}),
    ]
    ticks = _ticks(_axes(build_figure(report), "bars"))
    served = ticks.index(FAMILIES["served"])
    assert ticks[served + 1 : served + 3] == ["proxyshare-counter", "aio-64"]
    assert ticks[-2:] == [FAMILIES["other"], "telepathy"]


def test_skipped_scenarios_are_named_on_the_picture() -> None:
    report = synthetic_report(SMALL)
    report.skipped = {"redis": "no Redis server reachable"}
    assert "not measured here: redis" in _axes(build_figure(report), "bars").get_title("left")


def test_a_noisy_run_says_so_on_the_picture() -> None:
    quiet = _axes(build_figure(synthetic_report(SMALL, load=0.1)), "bars").get_title("left")
    noisy = _axes(build_figure(synthetic_report(SMALL, load=3.0)), "bars").get_title("left")
    assert "noisy" not in quiet
    assert "noisy run, read with care: the load average was 3.00 on 2 CPUs" in noisy


def test_a_report_without_measurements_still_draws() -> None:
    report = synthetic_report(SMALL)
    report.measurements = []
    fig = build_figure(report)
    assert "nothing was measured" in _bar_texts(_axes(fig, "bars"))


def test_write_plot_writes_a_png(tmp_path: Path) -> None:
    path = tmp_path / "bench.png"
    write_plot(synthetic_report(SMALL), str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_micro_report_draws_primitives_against_the_floor() -> None:
    report = synthetic_report(SMALL)
    floor = report.measurement("floor")
    assert floor is not None
    micro = {"workers": 1, "unit": "op", "family": None}
    report.mode = "micro"
    report.measurements = [
        floor.model_copy(update={**micro, "ratio_to_floor": 1.0}),
        floor.model_copy(
            update={
                **micro,
                "scenario": "counter.increment()",
                "us_per_op": 24.0,
                "ratio_to_floor": 2.0,
            }
        ),
    ]
    bars = _axes(build_figure(report), "bars")
    assert _ticks(bars) == ["floor", "counter.increment()"]
    assert "2.0×  (24.0 µs)" in _bar_texts(bars)
    assert "micro" in build_figure(report)._suptitle.get_text()  # type: ignore[union-attr]
