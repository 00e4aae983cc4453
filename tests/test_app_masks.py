"""The app warns about empty and full masks where they enter: the Prepare page's preview and dataset scan,
and the Evaluate page (the same checks as the CLI: :func:`moleseg.core.imageio.mask_problem`)."""

from __future__ import annotations

import numpy as np

from app_helpers import app_test, run_until
from synthetic import make_dataset
from moleseg.app import preparation
from moleseg.app.ui import PAGE_FILES, plain_markdown
from moleseg.core.imagewrite import write_png

EMPTY = "1 empty mask (no foreground pixel, all black; scored and trained as 'no lesion'): m1.png"
FULL = "1 full mask (every pixel is foreground, all white: an image, or an inverted mask?): m2.png"


def degenerate_dataset(folder, size=80):
    dataset = make_dataset(folder, count=4, size=size)
    write_png(dataset / "masks" / "m1.png", np.zeros((size, size), bool))
    write_png(dataset / "masks" / "m2.png", np.ones((size, size), bool))
    return dataset


def warnings_of(at) -> list[str]:
    return [warning.value for warning in at.warning]


def test_degenerate_mask_warnings_name_the_masks_and_cut_long_lists():
    assert preparation.degenerate_mask_warnings([], []) == []
    assert preparation.degenerate_mask_warnings(["m1.png"], ["m2.png"]) == [EMPTY, FULL]
    names = [f"{i}.png" for i in range(preparation.MASK_NAMES_SHOWN + 3)]
    (line,) = preparation.degenerate_mask_warnings(names, [])
    assert line.startswith(f"{len(names)} empty masks") and line.endswith("8.png, 9.png and 3 more")


def test_the_prepare_page_warns_about_the_previewed_mask_and_the_scanned_ones(app_folders, tmp_path):
    dataset = degenerate_dataset(tmp_path / "moles")
    at = app_test(PAGE_FILES["prepare"])
    at.text_input(key="prepare_folder").set_value(str(dataset)).run()
    assert not at.exception and not at.error and warnings_of(at) == []  # m0.png is a good mask
    at.selectbox(key="prepare_pair").set_value(1).run()
    assert warnings_of(at) == ["m1.png: empty mask: no foreground pixel, all black"]
    at.selectbox(key="prepare_pair").set_value(0).run()
    at.button(key="prepare_all").click().run()
    run_until(at, lambda at: any("Class frequencies of the dataset" in m.value for m in at.markdown))
    assert warnings_of(at) == [plain_markdown(EMPTY), plain_markdown(FULL)]  # the file names drawn as text
    assert any("(4 masks)" in m.value for m in at.markdown)  # they are still counted


def test_the_evaluate_page_warns_about_empty_and_full_true_masks(app_folders, tmp_path):
    dataset = degenerate_dataset(tmp_path / "test")
    at = app_test(PAGE_FILES["evaluate"])
    at.selectbox(key="evaluate_model").set_value("classical").run()
    at.text_input(key="evaluate_folder").set_value(str(dataset)).run()
    at.button(key="evaluate_run").click().run()
    run_until(at, lambda at: any(metric.label == "Mean FM" for metric in at.metric))
    assert not at.exception and not at.error
    assert {metric.label: metric.value for metric in at.metric}["Images"] == "4"  # scored, with a warning
    assert [w for w in warnings_of(at) if " mask (" in w] == [plain_markdown(EMPTY), plain_markdown(FULL)]
