"""The scatter's axes: spine, ticks, tick labels and a title, drawn with one ``Line`` and two ``Text`` visuals.

vispy's ``AxisWidget`` gives each axis two text visuals with a glyph cache of their own, so an axis's first
paint rasterises every glyph again (plus the font's metrics): 330–500 ms in one paint under software
OpenGL. :class:`PlotAxis` draws the same with public visuals whose texts use the plot's shared
``FontManager``, and :func:`warm_glyphs` renders the characters numbers are written with ahead of time,
so neither the first paint nor a pan that brings new tick labels renders glyphs.

The ticks come from :func:`napari_dynaclr._napari.plotting.ticks` (vispy's MaxNLocator, steps of 1, 2, 2.5 or
5 × 10ᵏ) and follow the linked ``ViewBox``: its camera moving or either widget resizing updates them.
"""

from __future__ import annotations

import numpy as np
from vispy import scene
from vispy.color import Color

from napari_dynaclr._napari import plotting

#: the characters tick labels are written with
NUMBER_GLYPHS = "0123456789-+.e"
#: what a ``Text`` that shows nothing holds: a space draws nothing, yet the visual is drawn, so its shader is built
#: when the plot's staged reveal (plot_reveal) shows it and not in the paint that first gives it words
#: (≈ 40 ms per ``Text`` under software OpenGL; four of them made predict's first paint of the cells the longest
#: block of the walk-through)
BLANK = " "
#: vispy's ``Text`` measures every string's height with these (accents above, descenders below)
METRIC_GLYPHS = "ÅÉÑŐjgpqy"


def text_glyphs(text_visual, extra: str = "") -> list[tuple]:
    """The glyphs a vispy ``Text`` draws (its characters, *extra*, and the characters it measures lines
    with) as ``(face, bold, italic, char)``, for :func:`warm_glyphs`."""
    t = text_visual.text
    chars = (t if isinstance(t, str) else "".join(t)) + extra + METRIC_GLYPHS
    font = (text_visual.face, bool(text_visual.bold), bool(text_visual.italic))
    return [(*font, c) for c in dict.fromkeys(chars) if not c.isspace()]


def warm_glyphs(fonts, glyphs) -> None:
    """Render *glyphs* (``(face, bold, italic, char)``) into the glyph cache *fonts* (a vispy ``FontManager``)
    now: CPU only (the atlas is uploaded with the next draw), so a text showing them renders none while it is
    drawn. A glyph already rendered costs a dictionary look-up."""
    for face, bold, italic, char in glyphs:
        _ = fonts.get_font(face, bold, italic)[char]


class PlotAxis(scene.Widget):
    """An axis beside a ``ViewBox`` (``orientation`` "left": right of the axis is the view; "bottom": above).

    :attr:`label` is the title (the plotted column), :attr:`domain` the data range the axis spans (the
    view's visible range), :attr:`tick_values` / :attr:`tick_labels` the labelled major ticks.
    """

    def __init__(self, orientation: str, fonts, color=(0.75, 0.75, 0.75, 1.0), tick_font_size: float = 7,
                 label_font_size: float = 8, label_margin: float = 34, major_px: float = 6, minor_px: float = 3,
                 tick_spacing_px: float = 60):
        if orientation not in ("left", "bottom"):
            raise ValueError("orientation must be 'left' or 'bottom'")
        super().__init__()
        self.unfreeze()
        self.orientation = orientation
        self.color = color
        self.major_px, self.minor_px = float(major_px), float(minor_px)
        self.tick_spacing_px = float(tick_spacing_px)
        self.label_margin = float(label_margin)
        self.domain = (0.0, 1.0)
        self.tick_values = np.zeros(0)
        self._view = None
        self.lines = scene.visuals.Line(parent=self, color=color, width=1, connect="segments", method="gl")
        left = orientation == "left"
        self.tick_text = scene.visuals.Text("", parent=self, color=color, font_size=tick_font_size,
                                            font_manager=fonts, anchor_x="right" if left else "center",
                                            anchor_y="center")
        self.title = scene.visuals.Text(BLANK, parent=self, color=color, font_size=label_font_size, font_manager=fonts,
                                        anchor_x="center", anchor_y="center", rotation=-90 if left else 0)
        self.events.resize.connect(self._update)
        self.freeze()

    @property
    def parts(self) -> tuple:
        """The axis's visuals: spine and ticks (one ``Line``), tick labels, title (two ``Text``)."""
        return self.lines, self.tick_text, self.title

    def set_color(self, color) -> None:
        """Spine, ticks, tick labels and title in *color* (the theme's text colour)."""
        self.color = color
        # as RGBA: vispy's Line takes a string as a colormap's name first, and looking one up imports matplotlib
        # (≈ 0.3 s in the paint that first draws the line)
        self.lines.set_data(color=Color(color).rgba)
        self.tick_text.color = color
        self.title.color = color

    @property
    def label(self) -> str:
        return "" if self.title.text == BLANK else self.title.text

    @label.setter
    def label(self, text: str) -> None:
        self.title.text = text or BLANK

    @property
    def tick_labels(self) -> list[str]:
        t = self.tick_text.text
        return [t] if isinstance(t, str) and t else ([] if isinstance(t, str) else list(t))

    def link_view(self, view) -> None:
        """Follow *view*'s camera (its visible range along this axis)."""
        self._view = view
        view.scene.transform.changed.connect(self._update)
        view.events.resize.connect(self._update)
        self._update()

    def _ends(self) -> np.ndarray:
        """The axis's two ends in this widget's pixels (the edge next to the view)."""
        w, h = self.size
        if self.orientation == "left":
            return np.array([[w, h], [w, 0.0]])
        return np.array([[0.0, 0.0], [w, 0.0]])

    def _update(self, event=None) -> None:
        if self._view is None:
            return
        w, h = self.size
        ends = self._ends()
        k = 1 if self.orientation == "left" else 0
        data = self.node_transform(self._view.scene).map(ends)[:, k]
        d0, d1 = float(data[0]), float(data[1])
        self.domain = (d0, d1)
        length = float(np.hypot(*(ends[1] - ends[0])))
        major, minor, step = plotting.ticks(d0, d1, max(2, int(length // self.tick_spacing_px) + 1))
        self.tick_values = major
        span = d1 - d0
        segs = [ends]
        if span and np.isfinite(span):
            for vals, size in ((major, self.major_px), (minor, self.minor_px)):
                if not len(vals):
                    continue
                frac = (vals - d0) / span
                at = ends[0] + frac[:, None] * (ends[1] - ends[0])
                out = at.copy()
                if k:
                    out[:, 0] -= size
                else:
                    out[:, 1] += size
                segs.append(np.stack([at, out], axis=1).reshape(-1, 2))
        self.lines.set_data(pos=np.concatenate(segs).astype(np.float32))
        labels = plotting.tick_labels(major, step)
        if labels:
            frac = (major - d0) / span
            at = ends[0] + frac[:, None] * (ends[1] - ends[0])
            if k:
                at[:, 0] -= self.major_px + 3
            else:
                at[:, 1] += self.major_px + 8  # the label's centre: below the tick by half a text height
            self.tick_text.text = labels
            self.tick_text.pos = at.astype(np.float32)
        else:
            self.tick_text.text = ""
        self.title.pos = (w - self.label_margin, h / 2) if k else (w / 2, self.label_margin)
