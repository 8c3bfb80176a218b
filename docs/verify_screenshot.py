"""Make ``docs/images/verify_panel.png``: the "Verify against reference" panel in a real napari window.

Run under a display (Xvfb is fine; never the offscreen Qt platform)::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/verify_screenshot.py

The prediction is VisCy's dev2d reference store with simulated GPU noise (σ = 2e-3) and three drifted
cells, opened in the DynaCLR explorer together with the dev2d plate; the reference is the untouched store.
"""

from __future__ import annotations

import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CASE = ROOT / "tests" / "data" / "dev2d"
OUT = ROOT / "docs" / "images" / "verify_panel.png"
MAX_BYTES = 300_000


def _prediction(tmp: Path) -> Path:
    import anndata as ad

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        adata = ad.read_zarr(CASE / "reference.zarr")
    rng = np.random.default_rng(0)
    X = adata.X + rng.normal(0, 2e-3, adata.X.shape).astype(np.float32)
    X[40, :50] += 0.08  # three cells drift beyond atol 0.02 + rtol·|ref|
    X[12, 300:310] -= 0.1
    X[61, 700] += 0.2
    adata.X = X
    P = adata.obsm["X_projections"]
    adata.obsm["X_projections"] = P + rng.normal(0, 1e-3, P.shape).astype(np.float32)
    path = tmp / "prediction.zarr"
    with ad.settings.override(zarr_write_format=2), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        adata.write_zarr(path)
    return path


def main() -> int:
    import napari
    from napari.qt import get_qapp
    from PIL import Image

    from napari_dynaclr._napari import cellmodel
    from napari_dynaclr._napari.session import get_session
    from napari_dynaclr._napari.widgets.verify_panel import VerifyWidget
    from napari_dynaclr.core.store import read_store

    warnings.filterwarnings("ignore", message=".*PyQt5 backend.*")  # keep the deprecation toast off the shot
    tmp = Path(tempfile.mkdtemp(prefix="verify-shot-"))
    pred = _prediction(tmp)
    viewer = napari.Viewer(show=True, title="napari-dynaclr: verify against reference")
    viewer.window.resize(1500, 950)
    adata = read_store(pred)
    sess = get_session(viewer)
    sess.set_table(cellmodel.cell_table(adata.obs, dict(adata.obsm)), adata=adata, store_path=pred,
                   plate_path=CASE / "plate.zarr", tracks_path=CASE / "tracks")
    panel = VerifyWidget(viewer)
    viewer.window.add_dock_widget(panel, name="Verify against reference", area="right")
    panel.reference_edit.setText(str(CASE / "reference.zarr"))
    app = get_qapp()
    panel.run()
    deadline = time.time() + 120
    while panel.state != "ready" and time.time() < deadline:
        app.processEvents()
        time.sleep(0.02)
    if panel.report is None:
        print(f"verification did not finish: {panel.last_error}", file=sys.stderr)
        return 1
    panel.color_cells()
    panel.cells_table.selectRow(0)
    for _ in range(30):
        app.processEvents()
        time.sleep(0.03)
    img = viewer.screenshot(canvas_only=False, flash=False)
    viewer.close()
    rgb = np.asarray(img)[..., :3]
    assert rgb.mean() > 20 and rgb.std() > 10, f"screenshot looks blank (mean {rgb.mean():.1f}, std {rgb.std():.1f})"
    OUT.parent.mkdir(parents=True, exist_ok=True)
    pil = Image.fromarray(rgb)
    scale = 1.0
    while True:
        size = (int(pil.width * scale), int(pil.height * scale))
        pil.resize(size, Image.LANCZOS).quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(OUT, optimize=True)
        if OUT.stat().st_size < MAX_BYTES or scale < 0.4:
            break
        scale *= 0.85
    print(f"wrote {OUT} ({OUT.stat().st_size:,} bytes, {size[0]}x{size[1]}); verdict: "
          f"{'PASS' if panel.report.passed else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
