"""The plot's first paint in stages, done before the plot is ever shown where it can be.

Shown at once, a plot's axes and key would render every glyph of their texts and build every shader in one
paint (≈ 1 s under software OpenGL, more on a loaded machine). :class:`StagedReveal` shows them one part at a
time instead, an event-loop turn apart: before each part, the glyphs its texts need are rendered into the
plot's shared glyph cache a few per turn (CPU only, no paint); then the part is made visible and drawn once,
which builds its shader. While the canvas is hidden (the Explore tab behind another one, as when the dock
opens) that draw is an offscreen one (``QOpenGLWidget.grabFramebuffer``), so the axes and the key are ready
before the user opens a store and are there with the first paint that shows the cells. While the canvas is
shown, the part is drawn by the canvas's own next paint.
"""

from __future__ import annotations

from qtpy.QtCore import QTimer

from napari_dynaclr._napari.widgets.plot_axis import text_glyphs, warm_glyphs

#: glyphs rendered per event-loop turn (≈ 6–12 ms each on the CPU)
GLYPHS_PER_TURN = 3


class StagedReveal:
    """Reveal *stages* — ``(node, [(text_visual, extra_characters), ...])`` — of the vispy *canvas* one by
    one (the nodes start hidden). :attr:`ready` is True once every node is shown and has been drawn."""

    def __init__(self, canvas, fonts, stages: list[tuple[object, list[tuple[object, str]]]]):
        """*fonts*: the vispy ``FontManager`` the stages' texts share."""
        self.canvas = canvas
        self.fonts = fonts
        self._stages = list(stages)
        for node, _ in self._stages:
            node.visible = False
        self._glyphs: list[tuple] | None = None  # the head stage's glyphs still to render (None: not listed yet)
        self._waiting_paint = False
        self._timer = QTimer(canvas.native)  # owned by the canvas's widget: dies with it
        self._timer.setInterval(1)
        self._timer.timeout.connect(self._step)
        canvas.events.draw.connect(self._on_drawn)
        self._timer.start()

    @property
    def ready(self) -> bool:
        return not self._stages and not self._waiting_paint

    def _on_drawn(self, event=None) -> None:
        self._waiting_paint = False
        if self._stages and not self._timer.isActive():
            self._timer.start()

    def _step(self) -> None:
        """One slice: render a few glyphs of the next part, or show it (and draw it once)."""
        if self._waiting_paint:
            self._timer.stop()
            return
        if not self._stages:
            self._timer.stop()
            return
        node, texts = self._stages[0]
        if self._glyphs is None:
            self._glyphs = [g for v, extra in texts for g in text_glyphs(v, extra)]
        if self._glyphs:
            chunk, self._glyphs = self._glyphs[:GLYPHS_PER_TURN], self._glyphs[GLYPHS_PER_TURN:]
            warm_glyphs(self.fonts, chunk)
            return
        self._stages.pop(0)
        self._glyphs = None
        node.visible = True
        native = self.canvas.native
        if native.isVisible():  # the canvas paints the part next (its draw event starts the timer again)
            self._waiting_paint = True
            self._timer.stop()
        elif hasattr(native, "grabFramebuffer"):  # hidden: draw it offscreen now (builds its shader)
            native.grabFramebuffer()
