"""PNG charts for evaluation reports: grouped bars with interval error bars, ViLP Score against Prior.

The charts take plain figures in percent, ``(mean, low, high)`` triples or
None where a run has no figure, and know nothing of ``summary.json``;
:mod:`vigos.eval.report` builds them from summaries. They are drawn with
matplotlib's object API on the Agg canvas: no display, no pyplot state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

__all__ = ["MISSING", "BarSeries", "Interval", "ScorePriorPoint", "grouped_bar_chart", "score_prior_chart"]

MISSING = "—"
"""The mark for a figure a run does not have (a benchmark it did not evaluate)."""

Interval = tuple[float, float, float]
"""``(mean, low, high)`` in percent."""

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_DPI = 110


@dataclass
class BarSeries:
    """One bar per label (None: no bar, marked ``MISSING``), all in one colour."""

    name: str
    values: Sequence[Interval | None]


@dataclass
class ScorePriorPoint:
    """One run's figures on one ViLP benchmark: ``prior`` on agreeing images, ``score`` on conflicting ones."""

    run: str
    benchmark: str
    prior: Interval
    score: Interval


def _plot_text(text: str) -> str:
    """``text`` shown literally: matplotlib would read text between dollar signs as math."""
    return text.replace("$", r"\$")


def _colour(index: int) -> str:
    return f"C{index % 10}"


def _bars(values: Sequence[Interval | None]) -> tuple[np.ndarray, np.ndarray]:
    """Heights ``(B,)`` and error lengths below/above ``(2, B)``; NaN where a value is None."""
    heights = np.full(len(values), np.nan)
    errors = np.full((2, len(values)), np.nan)
    for index, value in enumerate(values):
        if value is not None:
            mean, low, high = value
            heights[index] = mean
            # A percentile interval need not contain the mean exactly; error bars cannot be negative.
            errors[:, index] = max(0.0, mean - low), max(0.0, high - mean)
    return heights, errors


def _draw_bars(ax: Axes, labels: Sequence[str], series: Sequence[BarSeries], last_is_mean: bool) -> None:
    x = np.arange(len(labels))
    width = 0.8 / len(series)
    for index, one in enumerate(series):
        if len(one.values) != len(labels):
            raise ValueError(f"bar series {one.name!r} has {len(one.values)} values for {len(labels)} labels")
        heights, errors = _bars(one.values)
        offset = x - 0.4 + width * (index + 0.5)
        present = ~np.isnan(heights)
        ax.bar(
            offset[present],
            heights[present],
            width,
            yerr=errors[:, present],
            capsize=3,
            color=_colour(index),
            label=_plot_text(one.name),
            error_kw={"elinewidth": 1, "ecolor": "#333"},
        )
        for position in offset[~present]:
            ax.text(position, 1.5, MISSING, ha="center", va="bottom", color="#555", fontsize=11)
    if last_is_mean:
        ax.axvline(len(labels) - 1.5, color="#999", linestyle=":", linewidth=1)
    tilted = len(labels) > 5
    ax.set_xticks(
        x, [_plot_text(label) for label in labels], rotation=30 if tilted else 0, ha="right" if tilted else "center"
    )
    ax.set_ylim(0, 104)
    ax.set_ylabel("% correct")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def grouped_bar_chart(
    path: str | Path,
    labels: Sequence[str],
    panels: Sequence[tuple[str, Sequence[BarSeries]]],
    *,
    title: str,
    last_is_mean: bool = True,
) -> Path:
    """Save a PNG of grouped bars: one panel per ``(panel title, series)``, stacked, sharing ``labels``.

    Within a panel each label has one bar per series, side by side, with its
    interval as an error bar; series keep their colour across panels. With
    ``last_is_mean`` the last label (the mean) is set apart by a dotted line.
    """
    if not labels or not panels or any(not series for _, series in panels):
        raise ValueError("a bar chart needs at least one label and one series per panel")
    n_bars = max(len(series) for _, series in panels)
    width = min(14.0, max(6.5, len(labels) * (0.35 + 0.3 * n_bars) + 2.0))
    fig = Figure(figsize=(width, 1.0 + 3.8 * len(panels)), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (panel_title, series) in zip(axes, panels, strict=True):
        _draw_bars(ax, labels, series, last_is_mean)
        if panel_title:
            ax.set_title(_plot_text(panel_title), fontsize=10)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=min(len(names), 6))
    fig.suptitle(_plot_text(title))
    fig.savefig(path)
    return Path(path)


def score_prior_chart(path: str | Path, panels: Sequence[tuple[str, Sequence[ScorePriorPoint]]], *, title: str) -> Path:
    """Save a PNG of ViLP Score (y) against Prior (x), one square panel per ``(metric name, points)``.

    Each point carries both intervals as error bars; colour tells the run,
    marker the benchmark. Below the dashed diagonal a model answers worse
    when the image contradicts the text prior than when it agrees.
    """
    if not panels or not any(points for _, points in panels):
        raise ValueError("a Score-against-Prior chart needs at least one point")
    runs = list(dict.fromkeys(point.run for _, points in panels for point in points))
    benchmarks = list(dict.fromkeys(point.benchmark for _, points in panels for point in points))
    fig = Figure(figsize=(0.5 + 5.2 * len(panels), 5.6), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (metric, points) in zip(axes, panels, strict=True):
        ax.fill_between([0, 100], [0, 0], [0, 100], color="#f6e1e1", alpha=0.5, linewidth=0)
        ax.plot([0, 100], [0, 100], linestyle="--", color="#888", linewidth=1)
        ax.text(
            97, 4, "below the line:\nthe text prior beats the image", ha="right", va="bottom", fontsize=8, color="#944"
        )
        for point in points:
            (x,), x_err = _bars([point.prior])
            (y,), y_err = _bars([point.score])
            ax.errorbar(
                x,
                y,
                xerr=x_err,
                yerr=y_err,
                fmt=_MARKERS[benchmarks.index(point.benchmark) % len(_MARKERS)],
                color=_colour(runs.index(point.run)),
                markersize=8,
                capsize=3,
                elinewidth=1,
            )
        # A little room beyond 0 and 100 so points on the edge are not cut in half.
        ax.set_xlim(-3, 103)
        ax.set_ylim(-3, 103)
        ax.set_aspect("equal")
        ax.set_xlabel(_plot_text(f"Prior: {metric} on agreeing images (%)"))
        ax.set_ylabel(_plot_text(f"Score: {metric} on prior-conflicting images (%)"))
        ax.grid(alpha=0.3)
    handles = [
        Line2D([], [], linestyle="", marker=_MARKERS[i % len(_MARKERS)], color="#444", label=_plot_text(name))
        for i, name in enumerate(benchmarks)
    ]
    if len(runs) > 1:
        handles += [Line2D([], [], linewidth=6, color=_colour(i), label=_plot_text(run)) for i, run in enumerate(runs)]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6))
    fig.suptitle(_plot_text(title))
    fig.savefig(path)
    return Path(path)
