"""Every Plotly figure of the app, made from values the compute modules return (plotly only, no Streamlit).

One module makes them all, so a chart looks the same wherever it appears (the pages, a report, a bench).
Functions take plain arrays, tables or view dataclasses from ``core.views`` and return a
``plotly.graph_objects.Figure``; none of them computes a metric.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly import colors
from plotly.subplots import make_subplots

from core.views.maps import MapView

GREY, RED, ORANGE = "#9aa5b1", "#d62728", "#ff7f0e"
SCHEME_COLOURS = {"forgotten": [GREY, RED], "changed": [GREY, ORANGE]}  # the 0/1 colourings of the map


def palette(n: int) -> list[str]:
    """``n`` distinct colours: D3's ten, else Light24 and Dark24."""
    base = colors.qualitative.D3 if n <= 10 else colors.qualitative.Light24 + colors.qualitative.Dark24
    return [base[i % len(base)] for i in range(n)]


def _compact(fig: go.Figure, height: int, **layout) -> go.Figure:
    fig.update_layout(height=height, margin=dict(t=10, b=10), **layout)
    return fig


# ---- bars, heatmaps and curves -----------------------------------------------------------------------------
def grouped_bars(categories: Sequence[str], series: Mapping[str, Sequence[float]], y_title: str,
                 height: int = 320) -> go.Figure:
    """One bar per category and series, grouped by category (e.g. per-class accuracy of several models)."""
    fig = go.Figure([go.Bar(name=name, x=list(categories), y=list(values)) for name, values in series.items()])
    return _compact(fig, height, barmode="group", yaxis_title=y_title, legend=dict(orientation="h"))


def probability_bars(probs: Mapping[str, np.ndarray], class_names: Sequence[str]) -> go.Figure:
    """Each model's predicted probabilities for one sample, grouped by class."""
    return grouped_bars([str(n) for n in class_names], probs, "probability", height=240)


def transition_heatmap(matrix: np.ndarray, labels: Sequence[str]) -> go.Figure:
    """Counts of test images per (class before, class after); the colour is log-scaled so small moves show."""
    fig = go.Figure(go.Heatmap(z=np.log1p(matrix), x=list(labels), y=list(labels), text=matrix,
                               texttemplate="%{text}", colorscale="Blues", showscale=False,
                               hovertemplate="before %{y}<br>after %{x}<br>%{text} test images<extra></extra>"))
    return _compact(fig, 420, xaxis_title="after", yaxis_title="before", yaxis_autorange="reversed")


def probe_curves(curves: Mapping[str, Sequence[Mapping]]) -> go.Figure:
    """Probe accuracy per layer for each model; the oracles' curves (names starting "oracle") are grey and
    dashed: together they are the target and its spread."""
    fig = go.Figure()
    for name, curve in curves.items():
        oracle = name.startswith("oracle")
        fig.add_trace(go.Scatter(x=[r["layer"] for r in curve], y=[r["probe_acc"] for r in curve], name=name,
                                 mode="lines+markers", line=dict(width=2, dash="dash" if oracle else "solid",
                                                                 **({"color": GREY} if oracle else {}))))
    return _compact(fig, 340, yaxis_title="probe accuracy %", xaxis_title="layer")



# ---- evidence: the verdict's bands and relearn curves --------------------------------------------------------
def criteria_bands(bands: Sequence[Mapping]) -> go.Figure:
    """One strip per measure of the verdict (``core.views.evidence.EvidenceView.bands``): the oracles' band
    shaded, each oracle's own value (grey), the original (black cross) and the method (red diamond). A band
    taken on a log scale (KLoM) is drawn on a log axis."""
    n = max(len(bands), 1)
    fig = make_subplots(rows=n, cols=1, subplot_titles=[b["label"] for b in bands], vertical_spacing=0.5 / n)
    for row, b in enumerate(bands, start=1):
        lo, hi = b["lo"], b["hi"]
        if np.isfinite(lo) and np.isfinite(hi):
            fig.add_vrect(x0=lo, x1=hi, fillcolor=GREY, opacity=0.3, line_width=0, row=row, col=1)
        points = (("oracles", b["oracle_values"], GREY, "circle", 9), ("original", [b["original"]], "#111", "x", 11),
                  ("method", [b["value"]], RED, "diamond", 13))
        for name, xs, colour, symbol, size in points:
            xs = [x for x in xs if x is not None]
            fig.add_trace(go.Scatter(x=xs, y=[0] * len(xs), mode="markers", name=name, legendgroup=name,
                                     showlegend=row == 1, marker=dict(color=colour, symbol=symbol, size=size),
                                     hovertemplate=f"{name}: %{{x:.3g}}{b['unit']}<extra>{b['label']}</extra>"),
                          row=row, col=1)
        fig.update_yaxes(visible=False, row=row, col=1)
        if b.get("log"):
            fig.update_xaxes(type="log", row=row, col=1)
    return _compact(fig, 70 + 80 * n, legend=dict(orientation="h", y=-0.1))


def relearn_curves(curves: Mapping[str, Sequence[Sequence[float]]], target: float, y_title: str) -> go.Figure:
    """The value measured while fine-tuning on D_f, per model, against the step; the target as a dashed line."""
    fig = go.Figure()
    for name, curve in curves.items():
        fig.add_trace(go.Scatter(x=[c[0] for c in curve], y=[c[1] for c in curve], name=name, mode="lines",
                                 line=dict(width=3 if name == "unlearned" else 1.5)))
    fig.add_hline(y=target, line_dash="dash", line_color="#111", annotation_text="target")
    return _compact(fig, 340, xaxis_title="fine-tuning step", yaxis_title=y_title,
                    legend=dict(orientation="h", y=-0.3))


def cka_band(rows: Sequence[Mapping]) -> go.Figure:
    """Per layer, 1 − linear CKA of the unlearned model and of the original to the oracles, over the band of
    the oracle pairs (shaded, up to its upper bound)."""
    layers = [r["layer"] for r in rows]
    fig = go.Figure()
    # 1 - CKA lies in [0, 1]: the band is drawn up to its upper bound, capped there; markers show a single layer
    fig.add_trace(go.Scatter(x=layers, y=[min(r["band_hi"], 1.0) for r in rows], name="oracle pairs' band",
                             mode="lines+markers", marker=dict(symbol="line-ew-open", size=14, color=GREY),
                             line=dict(width=0), fill="tozeroy", fillcolor="rgba(120,120,120,0.25)"))
    fig.add_trace(go.Scatter(x=layers, y=[r["pairs_mean"] for r in rows], name="oracle pairs' mean",
                             mode="lines+markers", line=dict(color="#555", dash="dot")))
    if all("original_to_oracles" in r for r in rows):
        fig.add_trace(go.Scatter(x=layers, y=[r["original_to_oracles"] for r in rows], name="original",
                                 mode="lines+markers", line=dict(color="#888")))
    fig.add_trace(go.Scatter(x=layers, y=[r["to_oracles"] for r in rows], name="unlearned", mode="lines+markers",
                             line=dict(width=3)))
    return _compact(fig, 320, xaxis_title="layer (forward order)", yaxis_title="1 − CKA to the oracles",
                    yaxis_range=[0, 1.05], legend=dict(orientation="h", y=-0.3))


# ---- runs: method against method -------------------------------------------------------------------------
def runs_scatter(runs, stats, x: str, y: str, by: Sequence[str]) -> go.Figure:
    """One point per run coloured by method and, per group of ``by``, its mean with ± sd bars.

    ``runs`` and ``stats`` are the data frames of ``runs_db.query`` and ``runs_db.summary``.
    """
    colours = colors.qualitative.Plotly
    fig = go.Figure()
    for i, method in enumerate(sorted(runs["method"].unique())):
        colour = colours[i % len(colours)]
        mine = runs[runs["method"] == method].dropna(subset=[x, y])
        hover = [f"{r.method} · {r.request_desc} · seed {r.seed} · {r.model} on {r.dataset}<br>{r.run_key}"
                 for r in mine.itertuples()]
        fig.add_trace(go.Scatter(x=mine[x], y=mine[y], mode="markers", name=method, legendgroup=method,
                                 marker=dict(color=colour, size=8, opacity=0.6), text=hover,
                                 hovertemplate="%{text}<br>" + f"{x}=%{{x:.4g}}<br>{y}=%{{y:.4g}}<extra></extra>"))
        means = stats[stats["method"] == method]
        if means.empty:
            continue
        labels = [" · ".join(str(r[c]) for c in by) + f" (n={r['n']})" for _, r in means.iterrows()]
        fig.add_trace(go.Scatter(
            x=means[f"{x}_mean"], y=means[f"{y}_mean"], mode="markers", name=f"{method} mean ± sd",
            legendgroup=method, showlegend=False, text=labels,
            marker=dict(color=colour, size=14, symbol="diamond", line=dict(width=1, color="black")),
            error_x=dict(type="data", array=means[f"{x}_sd"].fillna(0), color=colour, thickness=1.5),
            error_y=dict(type="data", array=means[f"{y}_sd"].fillna(0), color=colour, thickness=1.5),
            hovertemplate="mean of %{text}<br>" + f"{x}=%{{x:.4g}}<br>{y}=%{{y:.4g}}<extra></extra>"))
    return _compact(fig, 460, xaxis_title=x, yaxis_title=y, legend_title="method")


# ---- the embedding map -----------------------------------------------------------------------------------
def map_figure(view: MapView, height: int = 460) -> go.Figure:
    """WebGL scatter with one panel per model; every point carries its sample key in ``customdata``.

    Ringed points (``view.marked``) follow a selection across panels while the others are dimmed.
    Prototype markers carry no sample key, so a lasso never selects them.
    """
    fig = make_subplots(rows=1, cols=len(view.panels), shared_xaxes=True, shared_yaxes=True,
                        horizontal_spacing=0.015, subplot_titles=[p.title for p in view.panels])
    keys, visible, marked = view.keys, view.visible, view.marked
    opacity = 0.35 if marked.any() else 0.8
    size = view.point_size
    colours = SCHEME_COLOURS.get(view.scheme) or palette(len(view.legend))
    for col, panel in enumerate(view.panels, start=1):
        xy, values = panel.xy, panel.values
        if view.legend:
            for c, name in enumerate(view.legend):
                sel = visible & (values == c)
                if not sel.any():
                    continue
                fig.add_trace(go.Scattergl(
                    x=xy[sel, 0], y=xy[sel, 1], mode="markers", name=name, legendgroup=name, showlegend=col == 1,
                    customdata=keys[sel], marker=dict(size=size, color=colours[c], opacity=opacity),
                    hovertemplate=f"%{{customdata}}<br>{view.colouring}: {name}<extra>{panel.title}</extra>"),
                    row=1, col=col)
        else:
            top = float(values.max()) if len(values) and values.max() > 0 else 1.0
            fig.add_trace(go.Scattergl(
                x=xy[visible, 0], y=xy[visible, 1], mode="markers", name="shift", showlegend=False,
                customdata=keys[visible],
                marker=dict(size=size, color=values[visible], colorscale="Viridis", opacity=opacity, cmin=0,
                            cmax=top, showscale=col == len(view.panels), colorbar=dict(title="shift", thickness=10)),
                hovertemplate="%{customdata}<br>shift %{marker.color:.3f}<extra></extra>"), row=1, col=col)
        if marked.any():
            sel = marked & visible
            fig.add_trace(go.Scattergl(
                x=xy[sel, 0], y=xy[sel, 1], mode="markers", name="selected", legendgroup="selected",
                showlegend=col == 1, customdata=keys[sel],
                marker=dict(size=size + 5, color="rgba(0,0,0,0)", line=dict(color="#111", width=1.5)),
                hovertemplate="%{customdata}<extra>selected</extra>"), row=1, col=col)
        if panel.prototypes:
            classes = sorted(panel.prototypes)
            points = np.array([panel.prototypes[c] for c in classes])
            fig.add_trace(go.Scattergl(
                x=points[:, 0], y=points[:, 1], mode="markers+text", name="prototype", legendgroup="prototype",
                showlegend=col == 1, text=[view.class_names[c] for c in classes], textposition="top center",
                marker=dict(symbol="star", size=15, color="#111", line=dict(color="white", width=1)),
                hovertemplate="prototype of %{text}<extra></extra>"), row=1, col=col)
    fig.update_xaxes(showticklabels=False, zeroline=False, showgrid=False)
    fig.update_yaxes(showticklabels=False, zeroline=False, showgrid=False)
    fig.update_layout(height=height, margin=dict(l=5, r=5, t=30, b=5), dragmode="lasso", uirevision="ue-map",
                      legend=dict(orientation="h", y=-0.02, itemsizing="constant"), hovermode="closest")
    return fig
