"""The Verify panel's histograms: log-count histograms of |Δ| per judged array, one above the other, in
napari's theme, with few enough ticks that their labels never overlap.

Drawn with matplotlib (its Qt canvas); :meth:`DeltaHistograms.show` takes a
:class:`napari_dynaclr.verify.VerifyReport`, :meth:`DeltaHistograms.set_theme` the colours of
:func:`napari_dynaclr._napari.plotting.theme_colors` (the last report is drawn again in them).
"""

from __future__ import annotations

import math

import numpy as np

from napari_dynaclr import verify

#: height of one histogram (its title, axes and tick labels), px
ROW_PX = 130
#: at most this many histograms (the judged arrays)
MAX_PLOTS = 3
PASS_COLOR, FAIL_COLOR = "#43a047", "#e53935"


def fmt(v: float, spec: str = ".3g") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "nan"
    return format(v, spec)


class DeltaHistograms:
    """A matplotlib figure (:attr:`figure`) on a Qt canvas (:attr:`canvas`, hidden until a report)."""

    def __init__(self, colors: dict):
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.colors = dict(colors)
        self.report = None
        self.figure = Figure(figsize=(4.5, 2.2), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setVisible(False)  # nothing to show before a report (no empty white box)
        self._style_figure()

    def set_theme(self, colors: dict) -> None:
        self.colors = dict(colors)
        self._style_figure()
        if self.report is not None:
            self.show(self.report)

    def _style_figure(self) -> None:
        self.figure.set_facecolor(self.colors["background"])
        self.canvas.setStyleSheet(f"background: {self.colors['background']};")

    def clear(self) -> None:
        self.report = None
        self.figure.clear()
        self.canvas.setVisible(False)

    def show(self, report) -> None:
        """Make the histograms of *report*'s judged arrays; the canvas draws them in a later event-loop turn,
        once, at the size the dock's layout then gives it (``draw_idle``: matplotlib skips it if the canvas is
        deleted meanwhile; a paint or grab before it draws first). Drawn at once, the figure was drawn twice,
        once here and once more when the layout resized the canvas (56–105 ms each; the first in the report's turn)."""
        from matplotlib.ticker import LogLocator, NullFormatter

        self.report = report
        fig, text = self.figure, self.colors["text"]
        fig.clear()
        names = [k for k in report.arrays if report.arrays[k].judged][:MAX_PLOTS]
        edges = verify.HIST_EDGES
        for n, name in enumerate(names):
            a = report.arrays[name]
            ax = fig.add_subplot(len(names), 1, n + 1)
            ax.set_facecolor(self.colors["background"])
            counts = a.hist_counts
            nz = np.flatnonzero(counts)
            title = f"{a.label}: r = {fmt(a.pearson, '.5f')}"
            if a.hist_zeros:
                title += f", {a.hist_zeros:,} exact"
            ax.set_title(title, fontsize=8, color=text)
            if not len(nz):
                msg = f"all |Δ| = 0 ({a.hist_zeros:,} values identical)" if a.hist_zeros else "no values"
                ax.text(0.5, 0.5, msg, ha="center", va="center", transform=ax.transAxes, fontsize=8, color=text)
                ax.set_xticks([])
                ax.set_yticks([])
            else:
                lo, hi = nz[0], nz[-1] + 1
                ax.stairs(counts[lo:hi], edges[lo:hi + 1], fill=True, color=PASS_COLOR if a.passed else FAIL_COLOR,
                          alpha=0.9)
                atol = report.contract.atol
                ax.axvline(atol, color=text, ls="--", lw=0.8)
                ax.set_xscale("log")
                ax.set_yscale("log")
                # whole decades around the bars and the tolerance: at least two labelled ticks, at most four
                x0 = 10.0 ** math.floor(math.log10(min(edges[lo], atol)))
                x1 = 10.0 ** math.ceil(math.log10(max(edges[hi], atol * 1.0001)))
                ax.set_xlim(x0, x1)
                ax.xaxis.set_major_locator(LogLocator(base=10, numticks=4))
                ax.yaxis.set_major_locator(LogLocator(base=10, numticks=3))
                for axis in (ax.xaxis, ax.yaxis):
                    axis.set_minor_formatter(NullFormatter())
                ax.set_ylim(0.5, max(2.0, float(counts.max()) * 2))
                ax.set_xlabel("|Δ| (dashed: atol)", fontsize=7, color=text, labelpad=1)
                ax.set_ylabel("count", fontsize=7, color=text)
            ax.tick_params(labelsize=7, colors=text, which="both")
            ax.xaxis.label.set_color(text)
            ax.yaxis.label.set_color(text)
            for spine in ax.spines.values():
                spine.set_color(text)
        h = max(1, len(names)) * ROW_PX
        self.canvas.setMinimumHeight(h)
        self.canvas.setMaximumHeight(h)
        self.canvas.setVisible(True)
        self.canvas.draw_idle()
