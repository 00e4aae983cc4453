"""``moleseg bench --app``'s code path, cheaply: one served app with the classical baseline (an empty models
folder: no network to load), small images, a batch of one, in the system Chromium (the figures themselves are
the benchmark's, on an idle machine, not this test's)."""

from __future__ import annotations

import shutil

import pytest

from synthetic import mole_image, png_bytes
from moleseg.core.config import BASELINE_NAME
from moleseg.tools.bench_app import AppBenchSettings, format_app_report, run_app_bench
from moleseg.tools.bench_browser import CHROMIUM_PATH


@pytest.mark.browser
@pytest.mark.slow
def test_the_app_benchmark_times_each_step_in_a_real_browser(app_folders, tmp_path):
    pytest.importorskip("playwright.sync_api")
    if shutil.which(CHROMIUM_PATH) is None:
        pytest.skip(f"{CHROMIUM_PATH} is not installed")
    images = tmp_path / "images"
    images.mkdir()
    for index in range(3):  # the warm image, the batch's, the one that warms the server
        (images / f"mole{index}.png").write_bytes(png_bytes(mole_image(120, 160, seed=index)[0]))
    settings = AppBenchSettings(repeats=1, batch=1, timeout_s=90, quick=True)
    result = run_app_bench("classical", images, settings)
    app = result["app"]
    for key in ("cold_first_overlay_s", "cells_first_overlay_s", "warm_next_overlay_s", "slider_overlay_s",
                "slider_first_overlay_s", "opacity_overlay_s", "colour_overlay_s", "pixel_size_values_s", "batch12_s",
                "home_s", "engine_batch12_s"):
        assert 0 < app[key] < 90, (key, app[key])
    assert app["runs"]["slider_first_overlay_s"] == app["runs"]["slider_overlay_s"][:1]  # one repeat: the same
    assert app["batch_images"] == 1 and app["cells_model"].startswith(f"{BASELINE_NAME} (cells")
    assert app["runs"]["warm_next_overlay_s"] == [app["warm_next_overlay_s"]] and app["model"] == "classical"
    assert app["images"] == f"3 real images from {images}"
    assert len(app["runs"]["opacity_overlay_s"]) == len(app["runs"]["colour_overlay_s"]) == 1
    assert len(app["runs"]["pixel_size_values_s"]) == 1
    assert set(result["targets"]) == {"cold_first_overlay_s", "warm_next_overlay_s", "slider_overlay_s",
                                      "slider_first_overlay_s", "opacity_overlay_s", "pixel_size_values_s", "home_s",
                                      "batch12_s", "cells_first_overlay_s", "colour_overlay_s"}
    assert result["targets"]["cold_first_overlay_s"] == result["targets"]["cells_first_overlay_s"] == "quick run"
    assert result["targets"]["home_s"] == "quick run"
    report = format_app_report(result)
    assert all(key in report for key in ("warm_next_overlay_s", "slider_first_overlay_s", "opacity_overlay_s",
                                         "colour_overlay_s", "pixel_size_values_s"))


def test_the_app_benchmark_refuses_a_model_flag_it_would_not_use(capsys):
    from moleseg.cli import main

    assert main(["bench", "--app", "--model", "other.keras"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "moleseg bench --app times the server's default model; --model is for the network benchmark")


def test_the_slider_timeline_records_what_the_page_sends_and_receives(monkeypatch):
    from moleseg.tools import bench_browser

    handlers: dict[str, object] = {}

    class Fake:
        def on(self, event, handler):
            handlers[event] = handler

    clock = iter([0.0, 0.0, 0.010, 0.012, 0.030, 0.050, 0.051, 0.060, 0.070, 0.072, 0.075, 0.080, 0.100])
    monkeypatch.setattr(bench_browser.time, "perf_counter", lambda: next(clock))
    used = iter([{"server": 5.0, "browser": 2.0}, {"server": 5.25, "browser": 2.5}, {"server": 5.5, "browser": 3.0}])
    timeline = bench_browser.SliderTimeline(Fake(), cpu=lambda: next(used))
    socket = Fake()
    handlers["websocket"](socket)
    timeline.start()
    handlers["framesent"](b"x" * 40)
    for size in (10, 300, 200):  # one burst of the server's messages
        handlers["framereceived"](b"y" * size)
    handlers["framesent"]("z" * 7)
    handlers["request"](type("Request", (), {"url": "http://127.0.0.1:1/media/abc.jpg"}))
    handlers["requestfinished"](type("Request", (), {"url": "http://127.0.0.1:1/media/abc.jpg",
                                                     "sizes": lambda self: {"responseBodySize": 2048}})())
    handlers["request"](type("Request", (), {"url": "http://127.0.0.1:1/_stcore/health"}))  # not a picture
    upload = "http://127.0.0.1:1/_stcore/upload_file/session/0123456789abcdef"
    handlers["request"](type("Request", (), {"url": upload}))
    handlers["requestfinished"](type("Request", (), {"url": upload, "sizes": lambda self: {"requestBodySize": 4096,
                                                                                             "responseBodySize": 0}})())
    handlers["framereceived"](b"y" * 5)
    timeline.add("overlay visible")
    assert [event[:4] for event in timeline.events] == [
        [10.0, "rerun request", 1, 40], [12.0, "messages", 3, 510], [51.0, "rerun request", 1, 7],
        [60.0, "picture request abc.jpg", 1, 0], [70.0, "picture loaded abc.jpg", 1, 2048],
        [72.0, "upload request 0123456789ab", 1, 0], [75.0, "upload stored 0123456789ab", 1, 4096],
        [80.0, "messages", 1, 5],
        [100.0, "overlay visible", 1, 0]]
    assert timeline.lines()[1] == "     12.0 ms  messages x3 (510 B) until 50.0 ms"
    assert timeline.totals() == ("received 4 messages (515 B), 1 pictures (2,048 B), server CPU 0.25 s, "
                                 "browser CPU 0.50 s")  # since start()'s sample (5.25, 2.5)


def test_a_process_trees_cpu_time_is_read_from_proc():
    import os

    from moleseg.tools.bench_browser import tree_cpu_s

    import subprocess
    import sys

    total = tree_cpu_s(os.getpid())  # this process, the children it has waited for, any live child of it
    own = os.times()
    waited = own.user + own.system + own.children_user + own.children_system
    assert own.user + own.system > 0.5  # the imports of a pytest run
    assert waited - 0.05 <= total <= 1.5 * waited  # seconds, not clock ticks
    assert tree_cpu_s(os.getpid(), "no such command") == 0.0
    # a child that spent CPU and was waited for still counts (a browser's closed tab, a stopped server)
    subprocess.run([sys.executable, "-c", "import time\nend = time.process_time() + 0.4\n"
                    "while time.process_time() < end: pass"], check=True)
    assert tree_cpu_s(os.getpid()) >= total + 0.3


def test_a_home_load_is_told_as_its_milestones_on_the_pages_clock():
    from moleseg.tools.bench_app import home_timeline_line

    marks = {"html": 16.4, "files": 63, "bytes": 2_712_345, "files_done": 1149.2, "loaded": 857.0,
             "websocket": 962.4, "first_message": 1027.3, "last_message": 1068.0, "messages": 23}
    assert home_timeline_line(1.2996, marks, {"server": 0.18, "browser": 2.432}) == (
        "1.300 s: HTML 16 ms, 63 static files (2.7 MB) by 1149 ms, DOMContentLoaded 857 ms, websocket 962 ms, "
        "23 messages 1027-1068 ms, server CPU 0.18 s, browser CPU 2.43 s")
