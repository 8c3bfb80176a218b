"""The scatter's colour key: a legend for categorical colours or a colour bar for continuous ones.

Drawn with plain vispy visuals inside a ``ViewBox`` whose scene coordinates are its pixels (y down),
so it needs no camera. :meth:`ColorKey.show` takes the dict of
:func:`napari_dynaclr._napari.plotting.color_key`.
"""

from __future__ import annotations

import numpy as np
from vispy import scene
from vispy.visuals.transforms import STTransform

from napari_dynaclr._napari.widgets.plot_axis import BLANK

TEXT = (0.85, 0.85, 0.85, 1.0)
ROW = 15  # legend row height, px


class ColorKey:
    """Legend / colour bar visuals in *box* (a ``ViewBox`` with the default base camera)."""

    def __init__(self, box, fonts=None):
        """*fonts*: a vispy ``FontManager`` to share the glyphs with the plot's other texts."""
        self.box = box
        self.key: dict | None = None
        self.title = scene.visuals.Text(BLANK, parent=box.scene, color=TEXT, font_size=7, bold=True, font_manager=fonts,
                                        anchor_x="left", anchor_y="bottom", pos=(4, 14))
        self.legend = scene.Node(parent=box.scene)  # the legend's visuals (a stage of their own in plot_reveal)
        self.swatches = scene.visuals.Markers(parent=self.legend, scaling="fixed")
        self.labels = scene.visuals.Text("", parent=self.legend, color=TEXT, font_size=6, font_manager=fonts,
                                         anchor_x="left", anchor_y="center")
        self.bar = scene.visuals.Image(np.zeros((2, 1, 4), np.float32), parent=box.scene, clim=(0, 1),
                                       interpolation="nearest")
        self.bar.transform = STTransform()
        # the colour bar's tick labels: always shown, blank without a colour bar (a stage of their own in plot_reveal)
        self.ticks = scene.visuals.Text(BLANK, parent=box.scene, color=TEXT, font_size=6, font_manager=fonts,
                                        anchor_x="left", anchor_y="center")
        self.bar.visible = False
        # until the first key is shown, the key's visuals draw nothing visible (a transparent swatch, blank texts):
        # drawn when the plot's staged reveal shows them, their programs are built then, not in the paint of the
        # first key (≈ 40 ms per text under software OpenGL)
        self.swatches.set_data(np.zeros((1, 2), np.float32), face_color=(0, 0, 0, 0), size=1, edge_width=0)
        self.labels.text = [BLANK]
        self.labels.pos = np.zeros((1, 2), np.float32)

    def set_color(self, color) -> None:
        """The key's texts in *color* (the theme's text colour)."""
        for v in self.text_visuals:
            v.color = color

    @property
    def text_visuals(self) -> tuple:
        """The key's ``Text`` visuals (title, legend labels, colour-bar ticks)."""
        return self.title, self.labels, self.ticks

    @property
    def kind(self) -> str | None:
        return None if self.key is None else self.key["kind"]

    def texts(self) -> list[str]:
        """Every string the key shows (title first): what a test or a screen reader reads."""
        # (the title and the colour bar's ticks are blank when they show nothing; the legend's labels are hidden)
        parts = (self.title.text, self.labels.text if self.labels.visible else "", self.ticks.text)
        return [x for t in parts for x in ([t] if isinstance(t, str) else t) if x.strip()]

    def show(self, key: dict | None) -> None:
        self.key = key
        for v in (self.swatches, self.labels, self.bar):
            v.visible = False
        self.ticks.text, self.ticks.pos = BLANK, (0.0, 0.0)
        if key is None:
            self.title.text = BLANK
            return
        self.title.text = key["title"]
        if key["kind"] == "categorical":
            self._legend(key)
        else:
            self._colorbar(key)

    def _legend(self, key: dict) -> None:
        labels = list(key["labels"])
        if key.get("more"):
            labels.append(f"… {key['more']} more")
        if not labels:
            return
        y = 30 + ROW * np.arange(len(labels), dtype=np.float32)
        n = len(key["labels"])
        if n:
            self.swatches.set_data(np.column_stack([np.full(n, 10.0), y[:n]]).astype(np.float32),
                                   face_color=np.asarray(key["colors"], np.float32), size=9, edge_width=0)
            self.swatches.visible = True
        self.labels.text = labels
        self.labels.pos = np.column_stack([np.full(len(labels), 18.0), y]).astype(np.float32)
        self.labels.visible = True

    def _colorbar(self, key: dict) -> None:
        lut = np.asarray(key["lut"], np.float32)[::-1]  # row 0 (top) = high values
        self.bar.set_data(lut[:, None, :])
        top, height = 30.0, max(40.0, float(self.box.size[1]) - 46.0)
        self.bar.transform.scale = (12.0, height / len(lut))
        self.bar.transform.translate = (6.0, top)
        lo, hi = key["range"]
        vals = [hi, (lo + hi) / 2, lo]
        self.ticks.text = [f"{v:.3g}" for v in vals]
        self.ticks.pos = np.array([[22.0, top], [22.0, top + height / 2], [22.0, top + height]], np.float32)
        self.bar.visible = True

    def relayout(self) -> None:
        """Refit the colour bar to the box height (call on resize)."""
        if self.kind == "continuous":
            self._colorbar(self.key)
