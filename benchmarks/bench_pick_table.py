"""The result tables of the Conditions and Time tabs (``_napari/widgets/pick_table.py``): how long the GUI
thread is blocked showing --rows rows (the Time tab lists one row per track: 10⁴ tracks on a real plate), with
the model/view table the plugin uses and with a QTableWidget filled item by item (what it used before).

    xvfb-run -a -s "-screen 0 1366x768x24" .venv/bin/python benchmarks/bench_pick_table.py [--rows 10000] [--n 5]

Prints the median over --n fills (each followed by the paint) for both, their ratio and the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from qtpy.QtWidgets import QApplication, QTableWidget, QTableWidgetItem

from napari_dynaclr._napari.widgets.pick_table import fill_rows, pick_table

HEADERS = ["fov", "track", "onset (frame)", "onset (min)", "group"]


def rows_of(n: int, k: int) -> list[list[str]]:
    return [[f"B/{i % 3}/0", str(i), str(i % 40 + k), f"{(i % 40) * 30.0:.0f}", ("early", "late")[i % 2]]
            for i in range(n)]


def fill_items(table: QTableWidget, rows) -> None:
    table.clearSelection()
    table.setRowCount(len(rows))
    for i, texts in enumerate(rows):
        for j, text in enumerate(texts):
            table.setItem(i, j, QTableWidgetItem(text))
    table.resizeColumnsToContents()


def timed(app, fill, table, n_rows: int, n: int) -> float:
    times = []
    for k in range(n):
        rows = rows_of(n_rows, k)
        t0 = time.perf_counter()
        fill(table, rows)
        app.processEvents()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--n", type=int, default=5)
    args = ap.parse_args()
    app = QApplication.instance() or QApplication([])
    load0 = os.getloadavg()[0]
    view = pick_table(HEADERS, lambda row: None)
    view.resize(600, 400)
    view.show()
    widget = QTableWidget(0, len(HEADERS))
    widget.setHorizontalHeaderLabels(HEADERS)
    widget.resize(600, 400)
    widget.show()
    model_s = timed(app, fill_rows, view, args.rows, args.n)
    items_s = timed(app, fill_items, widget, args.rows, args.n)
    print(f"{args.rows:,} rows, median of {args.n}; load average {load0:.1f} → {os.getloadavg()[0]:.1f}, "
          f"{os.cpu_count()} cores")
    print(f"  model/view table (pick_table)   {model_s * 1e3:8.1f} ms")
    print(f"  QTableWidget, item by item      {items_s * 1e3:8.1f} ms")
    print(f"  ratio                           {items_s / model_s:8.1f}×")


if __name__ == "__main__":
    main()
