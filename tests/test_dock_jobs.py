"""One way to start a dock's job: ``DockJobs.start``; with ``latest=key`` only the newest job of a key reports
(an older one is cancelled and its result dropped), and no job reports to a deleted dock."""

from __future__ import annotations

import threading

import pytest


@pytest.fixture
def dock(qtbot):
    from qtpy.QtWidgets import QWidget

    widget = QWidget()
    qtbot.addWidget(widget)
    return widget


def _job(release: threading.Event, value, cancel=None):
    """Waits until released (or cancelled), then returns *value*, or ``"cancelled"`` when it was cancelled."""
    while not release.wait(0.01):
        if cancel is not None and cancel.is_set():
            return "cancelled"
    return value


def test_only_the_latest_job_of_a_key_reports(dock, qtbot):
    from napari_dynaclr._napari.widgets._jobs import DockJobs, is_running, thread_job

    jobs = DockJobs(dock)
    results, finished = [], []
    first_release, second_release = threading.Event(), threading.Event()
    first_cancel, second_cancel = threading.Event(), threading.Event()
    first = jobs.start(thread_job(_job)(first_release, "first", cancel=first_cancel), first_cancel,
                       latest="neighbours", returned=results.append, finished=lambda: finished.append("first"))
    assert jobs.latest("neighbours") is first
    second = jobs.start(thread_job(_job)(second_release, "second", cancel=second_cancel), second_cancel,
                        latest="neighbours", returned=results.append, finished=lambda: finished.append("second"))
    assert first_cancel.is_set() and not second_cancel.is_set()  # the older one was cancelled
    assert jobs.latest("neighbours") is second
    first_release.set()
    qtbot.waitUntil(lambda: not is_running(first), timeout=60_000)
    assert results == [] and finished == ["first"]  # its result is dropped; its end is still heard
    second_release.set()
    qtbot.waitUntil(lambda: not is_running(second), timeout=60_000)
    assert results == ["second"] and jobs.latest("neighbours") is None


def test_jobs_of_other_keys_or_no_key_run_side_by_side(dock, qtbot):
    from napari_dynaclr._napari.widgets._jobs import DockJobs, is_running, thread_job

    jobs = DockJobs(dock)
    results = []
    release = threading.Event()
    cancels = [threading.Event() for _ in range(3)]
    started = [jobs.start(thread_job(_job)(release, name, cancel=cancel), cancel, latest=key, returned=results.append)
               for name, key, cancel in zip(("gallery", "classifier", "plain"), ("gallery", "classifier", None),
                                            cancels, strict=True)]
    assert not any(c.is_set() for c in cancels)
    release.set()
    qtbot.waitUntil(lambda: not any(is_running(w) for w in started), timeout=60_000)
    assert sorted(results) == ["classifier", "gallery", "plain"]
