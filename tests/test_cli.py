"""Tests of the ``moleseg`` command line, called in-process through ``moleseg.cli.main([...])``
(plus one real subprocess for the console entry point)."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from synthetic import lesion_dataset
from moleseg.cli import main
from moleseg.core.imagewrite import write_png

PROJECT = Path(__file__).resolve().parents[1]


def _read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def _read_csv(path: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# -- console entry -------------------------------------------------------------------------------


def test_python_m_moleseg_help():
    result = subprocess.run([sys.executable, "-m", "moleseg", "--help"], capture_output=True, text=True,
                            timeout=120, cwd=PROJECT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: moleseg")
    for command in ("train", "evaluate", "predict", "score", "prepare", "info"):
        assert command in result.stdout


def test_no_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "usage: moleseg" in capsys.readouterr().err


# -- prepare -------------------------------------------------------------------------------------


def _diamond(radius: int) -> np.ndarray:
    """Matlab's strel('diamond', radius): |i| + |j| <= radius."""
    offsets = np.abs(np.arange(-radius, radius + 1))
    return offsets[:, None] + offsets[None, :] <= radius


def _hand_made_mask() -> np.ndarray:
    mask = np.zeros((30, 40), bool)
    mask[5:22, 0:18] = True  # touches the left edge of the frame
    mask[10:14, 6:9] = False  # a hole
    mask[3:27, 25] = True  # a one-pixel line (erodes away)
    mask[15:25, 28:38] = True  # a square
    mask[27, 2] = True  # a lone pixel
    mask[24:30, 10:16] = True  # touches the bottom edge
    return mask


@pytest.mark.parametrize("radius", [1, 2, 3])
def test_prepare_diamond_equals_matlab_imerode(tmp_path, capsys, radius):
    mask = _hand_made_mask()
    (tmp_path / "masks").mkdir()
    write_png(tmp_path / "masks" / "lesion.png", mask)
    code = main(["prepare", "--masks", str(tmp_path / "masks"), "--out", str(tmp_path / "labels"),
                 "--border-width-px", str(radius), "--shape", "diamond"])
    assert code == 0
    labels = _read_png(tmp_path / "labels" / "lesion.png")
    # Matlab: imerode pads a binary image with 1 outside the frame
    inside = ndimage.binary_erosion(mask, structure=_diamond(radius), border_value=1)
    expected = np.where(inside, 2, np.where(mask, 1, 0)).astype(np.uint8)
    np.testing.assert_array_equal(labels, expected)
    out = capsys.readouterr().out
    counts = np.bincount(expected.ravel(), minlength=3) / expected.size
    assert "1 label image written" in out
    assert f"back {counts[0]:.4f}, border {counts[1]:.4f}, inside {counts[2]:.4f}" in out


def test_prepare_two_classes_and_image_edge_option(tmp_path):
    mask = _hand_made_mask()
    (tmp_path / "masks").mkdir()
    write_png(tmp_path / "masks" / "m.png", mask)
    assert main(["prepare", "--masks", str(tmp_path / "masks"), "--out", str(tmp_path / "two"),
                 "--border-width-px", "2", "--classes", "2", "--quiet"]) == 0
    np.testing.assert_array_equal(_read_png(tmp_path / "two" / "m.png"), mask.astype(np.uint8))
    assert main(["prepare", "--masks", str(tmp_path / "masks"), "--out", str(tmp_path / "edge"),
                 "--border-width-px", "1", "--border-at-image-edge", "--quiet"]) == 0
    inside = ndimage.binary_erosion(mask, structure=_diamond(1), border_value=0)
    np.testing.assert_array_equal(_read_png(tmp_path / "edge" / "m.png"),
                                  np.where(inside, 2, np.where(mask, 1, 0)).astype(np.uint8))


def test_prepare_reports_a_bad_file_and_exits_2(tmp_path, capsys):
    (tmp_path / "masks").mkdir()
    write_png(tmp_path / "masks" / "good.png", _hand_made_mask())
    (tmp_path / "masks" / "bad.png").write_bytes(b"not a png at all")
    code = main(["prepare", "--masks", str(tmp_path / "masks"), "--out", str(tmp_path / "labels"),
                 "--border-width-px", "2"])
    assert code == 2
    err = capsys.readouterr().err
    assert "skipped bad.png:" in err
    assert _error_lines(err) == ["error: 1 file could not be processed"]
    assert (tmp_path / "labels" / "good.png").is_file()
    assert not (tmp_path / "labels" / "bad.png").exists()


# -- score ---------------------------------------------------------------------------------------


def _brute_force_hd95(pred: np.ndarray, true: np.ndarray) -> float:
    """Independent reference: contour = mask minus its erosion by a cross (outside is background);
    all pairwise distances, both directions pooled, 95th percentile."""
    def contour(mask):
        return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(2, 1),
                                              border_value=0)

    a, b = np.argwhere(contour(pred)), np.argwhere(contour(true))
    distances = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    return float(np.percentile(np.concatenate([distances.min(1), distances.min(0)]), 95))


def test_score_json_with_hand_computed_values(tmp_path, capsys):
    true_a = np.zeros((20, 20), bool)
    true_a[2:12, 2:12] = True  # 100 px
    pred_a = np.zeros((20, 20), bool)
    pred_a[2:12, 4:14] = True  # shifted 2 px right: tp 80, fp 20, fn 20
    true_b = np.zeros((20, 20), bool)
    true_b[5:15, 6:16] = True
    for folder, masks in (("pred", (pred_a, true_b)), ("true", (true_a, true_b))):
        (tmp_path / folder).mkdir()
        for name, mask in zip(("a.png", "b.png"), masks):
            write_png(tmp_path / folder / name, mask)
    code = main(["score", "--pred", str(tmp_path / "pred"), "--masks", str(tmp_path / "true"),
                 "--json", str(tmp_path / "s.json"), "--csv", str(tmp_path / "s.csv")])
    assert code == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert set(summary) == {"n", "fm", "cm", "cr", "jaccard", "hd95", "per_image", "empty_masks", "full_masks"}
    assert (summary["empty_masks"], summary["full_masks"]) == (0, 0)
    assert summary["n"] == 2
    for key in ("fm", "cm", "cr", "jaccard", "hd95"):
        assert set(summary[key]) == {"mean", "std", "min", "max"}
    rows = {row["image"]: row for row in summary["per_image"]}
    assert set(rows) == {"a.png", "b.png"}
    for row in rows.values():
        assert {"image", "fm", "cm", "cr", "jaccard", "hd95"} <= set(row)
    a, b = rows["a.png"], rows["b.png"]
    assert (a["tp"], a["fp"], a["fn"]) == (80, 20, 20)
    assert a["cm"] == pytest.approx(0.8) and a["cr"] == pytest.approx(0.8) and a["fm"] == pytest.approx(0.8)
    assert a["jaccard"] == pytest.approx(80 / 120)
    assert a["hd95"] == pytest.approx(_brute_force_hd95(pred_a, true_a))
    assert 0 < a["hd95"] <= 2.0  # no contour pixel is more than 2 px from the other contour
    assert b["fm"] == b["cm"] == b["cr"] == b["jaccard"] == 1.0 and b["hd95"] == 0.0
    assert summary["fm"] == pytest.approx({"mean": 0.9, "std": 0.1, "min": 0.8, "max": 1.0})
    assert summary["jaccard"]["mean"] == pytest.approx((80 / 120 + 1) / 2)
    table = _read_csv(tmp_path / "s.csv")
    assert [row["image"] for row in table] == ["a.png", "b.png"]
    assert float(table[0]["fm"]) == pytest.approx(0.8)
    out = capsys.readouterr().out
    assert "(n = 2)" in out and "fm" in out


def _square_in_both_folders(folder: Path, side: int, name: str) -> np.ndarray:
    """A ``side`` x ``side`` mask with a square in it, written as ``name`` into ``folder``'s pred and true."""
    mask = np.zeros((side, side), bool)
    mask[side // 5:side * 3 // 5, side // 5:side * 3 // 5] = True
    for sub in ("pred", "true"):
        (folder / sub).mkdir()
        write_png(folder / sub / name, mask)
    return mask


def test_score_reports_a_bad_file(tmp_path, capsys):
    mask = _square_in_both_folders(tmp_path, 10, "ok.png")
    (tmp_path / "pred" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    write_png(tmp_path / "true" / "broken.png", mask)
    code = main(["score", "--pred", str(tmp_path / "pred"), "--masks", str(tmp_path / "true"),
                 "--json", str(tmp_path / "s.json")])
    assert code == 2
    assert json.loads((tmp_path / "s.json").read_text())["n"] == 1
    err = capsys.readouterr().err
    assert "skipped broken.png" in err and _error_lines(err) == ["error: 1 file could not be processed"]


def test_score_quiet_still_says_a_pair_of_different_sizes_and_hides_a_clean_pairing(tmp_path, capsys):
    mask = _square_in_both_folders(tmp_path, 20, "a.png")
    arguments = ["score", "--quiet", "--pred", str(tmp_path / "pred"), "--masks", str(tmp_path / "true")]
    assert main(arguments) == 0
    assert "pair" not in capsys.readouterr().err  # a clean pairing: --quiet says nothing of it
    write_png(tmp_path / "true" / "a.png", np.kron(mask, np.ones((2, 2), bool)))  # the true mask at 40 x 40
    assert main(arguments) == 0  # resized and scored, as documented: but never in silence
    err = capsys.readouterr().err
    assert "1 size mismatch" in err and "a.png" in err


# -- evaluate and predict with the classical segmenter -------------------------------------------


def test_evaluate_classical_writes_json_and_csv(tmp_path, capsys):
    images, masks = lesion_dataset(tmp_path / "set", n=3, size=96, vary=True)
    code = main(["evaluate", "--model", "classical", "--images", str(images), "--masks", str(masks),
                 "--json", str(tmp_path / "e.json"), "--csv", str(tmp_path / "e.csv")])
    assert code == 0
    summary = json.loads((tmp_path / "e.json").read_text())
    assert summary["n"] == 3 and summary["model"] == "classical"
    assert {"fm", "cm", "cr", "jaccard", "hd95", "per_image", "border_fm"} <= set(summary)
    assert "baseline" not in summary  # the classical segmenter is its own baseline
    assert summary["fm"]["mean"] > 0.8, summary["fm"]  # dark disks on light skin are easy
    table = _read_csv(tmp_path / "e.csv")
    assert [row["image"] for row in table] == ["000.png", "001.png", "002.png"]
    assert {"fm", "cm", "cr", "jaccard", "hd95", "tp", "fp", "fn", "border_fm"} <= set(table[0])
    assert "(n = 3)" in capsys.readouterr().out


def test_predict_classical_writes_pictures_and_measurements(tmp_path, capsys):
    images, _ = lesion_dataset(tmp_path / "set", n=2, size=96, vary=True)
    (images / "bad.png").write_bytes(b"this is not an image")
    out = tmp_path / "out"
    code = main(["predict", "--model", "classical", "--out", str(out), str(images)])
    assert code == 2
    captured = capsys.readouterr()
    assert "skipped bad.png:" in captured.err
    assert _error_lines(captured.err) == ["error: 1 file could not be processed"]
    assert "2 images written" in captured.out
    for stem in ("000", "001"):
        overlay = _read_png(out / f"{stem}_overlay.png")
        assert overlay.shape == (96, 96, 3)
        mask = _read_png(out / f"{stem}_mask.png")
        assert mask.shape == (96, 96) and set(np.unique(mask)) == {0, 255}
        classes = _read_png(out / f"{stem}_classes.png")
        assert classes.shape[:2] == (96, 96)
    assert not list(out.glob("bad*"))
    rows = _read_csv(out / "measurements.csv")
    assert [row["image"] for row in rows] == ["000.png", "001.png"]
    assert len(rows[0]) > 3 and all(float(rows[0][key]) >= 0 for key in rows[0] if key.startswith("area"))
    sidecar = json.loads((out / "measurements.settings.json").read_text())
    assert [entry["image"] for entry in sidecar["images"]] == ["000.png", "001.png"]
    assert sidecar["images"][0]["settings"]["model_name"] == "classical"
    assert sidecar["images"][0]["settings"]["cleanup"]["rule"] == "article"
    # the classical baseline is one-hot (no undecided pixel) and has no calibrated confidence threshold
    assert [(row["confidence"], row["check_border"], row["beyond_picture"]) for row in rows] == \
        [("1.0", "False", "False")] * 2


def test_predict_and_score_skip_a_file_name_that_is_not_utf8_by_name(tmp_path, capsys):
    # its files were written, then measurements.csv (UTF-8) could not hold its name: "error: 'utf-8' codec can't
    # encode characters ...", its three pictures left without a table; score wrote --json, then failed on --csv
    images, masks = lesion_dataset(tmp_path / "set", n=1, size=48)
    for folder in (images, masks):
        shutil.copy(folder / "000.png", os.fsdecode(bytes(folder) + b"/l\xe9sion.png"))
    out = tmp_path / "out"
    code = main(["predict", "--model", "classical", "--quiet", "--out", str(out), str(images)])
    captured = capsys.readouterr()
    assert code == 2
    assert "skipped l\\xe9sion.png: its path is not UTF-8 text: rename the file" in captured.err
    assert _error_lines(captured.err) == ["error: 1 file could not be processed"]
    assert sorted(p.name for p in out.iterdir()) == [
        "000_classes.png", "000_mask.png", "000_overlay.png", "measurements.csv", "measurements.settings.json"]
    assert [row["image"] for row in _read_csv(out / "measurements.csv")] == ["000.png"]
    predicted = shutil.copytree(masks, tmp_path / "predicted")
    code = main(["score", "--pred", str(predicted), "--masks", str(masks),
                 "--json", str(tmp_path / "s.json"), "--csv", str(tmp_path / "s.csv")])
    captured = capsys.readouterr()
    assert code == 0  # left out by the pairing, as an unpaired file is
    assert "  image l\\xe9sion.png is left out: its path is not UTF-8 text: rename the file" in captured.err
    assert [row["image"] for row in _read_csv(tmp_path / "s.csv")] == ["000.png"]
    assert json.loads((tmp_path / "s.json").read_text())["n"] == 1


def test_predict_single_file_exits_0(tmp_path, capsys):
    images, _ = lesion_dataset(tmp_path / "set", n=1, size=96, vary=True)
    code = main(["predict", "--model", "classical", "--out", str(tmp_path / "out"), "--quiet",
                 str(images / "000.png")])
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "000_classes.png", "000_mask.png", "000_overlay.png", "measurements.csv", "measurements.settings.json"]


# -- errors: one line, exit 2 --------------------------------------------------------------------


@pytest.mark.parametrize(
    "arguments, words",
    [
        (["evaluate", "--model", "classical", "--images", "{tmp}/missing", "--masks", "{tmp}/missing"], "missing"),
        (["score", "--pred", "{tmp}/missing", "--masks", "{tmp}"], "missing"),
        (["predict", "--model", "classical", "--out", "{tmp}/out", "{tmp}/missing.png"], "not found"),
        (["predict", "--model", "{tmp}/wrong.keras", "--out", "{tmp}/out", "{tmp}"], "wrong.keras"),
        (["predict", "--model", "{tmp}/absent.keras", "--out", "{tmp}/out", "{tmp}"], "absent.keras"),
        (["evaluate", "--model", "{tmp}/wrong.keras", "--images", "{tmp}/set/images", "--masks", "{tmp}/set/masks"],
         "wrong.keras"),
        (["info", "{tmp}/wrong.keras"], "wrong.keras"),
        (["prepare", "--masks", "{tmp}/missing", "--out", "{tmp}/o", "--border-width-px", "2"], "folder not found"),
        (["train", "--images", "{tmp}/missing", "--masks", "{tmp}/missing", "--out", "{tmp}/run"],
         "folder not found"),
        (["prepare", "--masks", "{tmp}/image.png", "--out", "{tmp}/o", "--border-width-px", "2"],
         "image.png is a file, not a folder of masks"),
        (["train", "--images", "{tmp}/set/images", "--masks", "{tmp}/set/masks", "--out", "{tmp}/image.png"],
         "--out {tmp}/image.png is a file, not a folder: choose a folder name for the run"),
        (["train", "--out", "{tmp}/no_run", "--resume"], "nothing to resume"),
        (["bench", "--model", "{tmp}/wrong.keras", "--images", "{tmp}/missing"], "--images {tmp}/missing: not a folder"),
        (["bench", "--app", "--images", "{tmp}/missing"], "--images {tmp}/missing: not a folder"),
        (["train", "--images", "{tmp}", "--masks", "{tmp}", "--out", "{tmp}/run", "--augment", "twist"],
         "unknown augmentation"),
        (["train", "--images", "{tmp}", "--masks", "{tmp}", "--out", "{tmp}/run", "--image-size", "100"],
         "multiple of 16"),
    ],
)
def test_errors_print_one_line_and_exit_2(tmp_path, capsys, arguments, words):
    (tmp_path / "wrong.keras").write_text("not a model")
    write_png(tmp_path / "image.png", np.full((8, 8, 3), 100, np.uint8))
    lesion_dataset(tmp_path / "set", n=1, size=32, vary=True)
    code = main([a.replace("{tmp}", str(tmp_path)) for a in arguments])
    assert code == 2
    err = capsys.readouterr().err
    lines = _error_lines(err)
    assert len(lines) == 1, err
    assert words.replace("{tmp}", str(tmp_path)) in lines[0]
    assert "Traceback" not in err


def test_a_run_folder_that_is_a_file_is_refused_in_the_same_words_by_the_engine(tmp_path):
    from moleseg.engine.launch import start_training

    taken = tmp_path / "taken"
    taken.write_text("mine")
    with pytest.raises(ValueError) as refused:
        start_training({}, taken, origin="terminal")
    assert str(refused.value) == f"{taken.resolve()} is a file, not a folder: choose a folder name for the run"
    assert taken.read_text() == "mine"


# -- train -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_train_and_resume_from_the_command_line(tmp_path, capsys):
    # a 2-step run needs BatchNorm statistics that converge at once for the end-of-training BatchNorm check,
    # and the example cache goes to a temporary folder (the training runs in its own process: set in a file);
    # sgdm: the solver does not matter here, and its step is cheaper to trace than adam's
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"bn_momentum": 0.01, "cache_dir": str(tmp_path / "cache")}))
    images, masks = lesion_dataset(tmp_path / "set", n=8, size=64)
    run = tmp_path / "run"
    common = ["--config", str(recipe), "--backbone", "resnet18", "--image-size", "64", "--decoder-width", "16",
              "--weights", "none", "--batch-size", "4", "--augment", "none", "--validation-split", "0.25",
              "--no-calibrate", "--solver", "sgdm"]
    code = main(["train", "--images", str(images), "--masks", str(masks), "--out", str(run), "--epochs", "1",
                 "--quiet", *common])
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f"best model: {run / 'model.keras'}" in out and "at epoch 1" in out
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["backbone"] == "resnet18" and config["model"]["decoder_width"] == 16
    assert config["augment"] == [] and config["name"] == "run" and config["epochs"] == 1

    # a second training into the same folder is refused
    code = main(["train", "--images", str(images), "--masks", str(masks), "--out", str(run), "--quiet", *common])
    assert code == 2
    assert _error_lines(capsys.readouterr().err)[0].startswith(f"error: {run} already holds a run")

    code = main(["train", "--out", str(run), "--resume", "--epochs", "2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "resuming after epoch 1" in captured.err  # log lines are echoed without --quiet
    history = _read_csv(run / "history.csv")
    assert [row["epoch"] for row in history] == ["1", "2"]
    assert json.loads((run / "state.json").read_text())["status"] == "done"
    assert "resuming after epoch 1" in (run / "log.txt").read_text()


def test_lesion_threshold_words_are_the_engines_values():
    from moleseg.cli import build_parser
    from moleseg.engine.segmenter import MODEL_THRESHOLD

    def threshold(*flag: str) -> object:
        return build_parser().parse_args(["predict", "--out", "o", *flag, "a.png"]).lesion_threshold

    assert threshold() is MODEL_THRESHOLD and threshold("--lesion-threshold", "model") is MODEL_THRESHOLD
    assert threshold("--lesion-threshold", "argmax") is None and threshold("--lesion-threshold", "0.4") == 0.4


@pytest.mark.slow
def test_predict_lesion_threshold_option(tmp_path, capsys):
    shipped = Path(__file__).resolve().parents[1] / "models" / "dermoscopy.keras"
    if not shipped.is_file():
        pytest.skip("models/dermoscopy.keras is not installed")
    yy, xx = np.mgrid[:128, :160]
    mole = ((yy - 64) / 36.0) ** 2 + ((xx - 80) / 48.0) ** 2 <= 1.0
    soft = ndimage.gaussian_filter(mole.astype(np.float64), 8)[..., None]  # an edge fading over ~20 px
    image = (np.array([215.0, 170.0, 150.0]) * (1 - soft) + np.array([95.0, 60.0, 45.0]) * soft).astype(np.uint8)
    write_png(tmp_path / "mole.png", image)
    areas = {}
    for choice in ("argmax", "0.95"):
        out = tmp_path / choice
        assert main(["predict", "--model", str(shipped), "--out", str(out), "--quiet", "--lesion-threshold", choice,
                     str(tmp_path / "mole.png")]) == 0
        areas[choice] = int((_read_png(out / "mole_mask.png") > 0).sum())
    assert areas["argmax"] > areas["0.95"] > 0  # a stricter threshold draws a tighter lesion
    with pytest.raises(SystemExit) as stopped:
        main(["predict", "--out", str(tmp_path / "x"), "--lesion-threshold", "1.5", str(tmp_path / "mole.png")])
    assert stopped.value.code == 2
    assert "must be in 0..1" in capsys.readouterr().err


# -- prepare: never over its own masks, one label image per mask ------------------------------------


def test_prepare_out_the_masks_folder_is_refused_and_the_masks_stay(tmp_path, capsys):
    (tmp_path / "masks").mkdir()
    write_png(tmp_path / "masks" / "m.png", _hand_made_mask())
    before = (tmp_path / "masks" / "m.png").read_bytes()
    code = main(["prepare", "--masks", str(tmp_path / "masks"), "--out", str(tmp_path / "masks"),
                 "--border-width-px", "2"])
    assert code == 2
    assert _error_lines(capsys.readouterr().err) == [
        f"error: --out {tmp_path / 'masks'} is also an input folder: the label images would replace the masks "
        "of the same name; choose another folder"]
    assert [p.name for p in (tmp_path / "masks").iterdir()] == ["m.png"]
    assert (tmp_path / "masks" / "m.png").read_bytes() == before


def test_prepare_two_masks_with_one_stem_get_one_label_image_each(tmp_path, capsys):
    mask = _hand_made_mask()
    (tmp_path / "masks").mkdir()
    write_png(tmp_path / "masks" / "m.png", mask)
    Image.fromarray(~mask).save(tmp_path / "masks" / "m.tif")  # another mask, same stem
    code = main(["prepare", "--masks", str(tmp_path / "masks"), "--out", str(tmp_path / "labels"),
                 "--border-width-px", "1", "--classes", "2", "--quiet"])
    assert code == 0
    assert "2 label images written" in capsys.readouterr().out
    np.testing.assert_array_equal(_read_png(tmp_path / "labels" / "m_png.png"), mask.astype(np.uint8))
    np.testing.assert_array_equal(_read_png(tmp_path / "labels" / "m_tif.png"), (~mask).astype(np.uint8))


def test_a_closed_pipe_stops_quietly_without_a_traceback(tmp_path):
    # `moleseg score ... | head -0`: the reader is gone before the first line is written
    _, masks = lesion_dataset(tmp_path, n=2, size=32)
    shutil.copytree(masks, tmp_path / "pred")
    reader, writer = os.pipe()
    os.close(reader)
    with os.fdopen(writer, "w") as stdout:
        result = subprocess.run([sys.executable, "-m", "moleseg", "score", "--pred", str(tmp_path / "pred"),
                                 "--masks", str(masks)], stdout=stdout, stderr=subprocess.PIPE,
                                text=True, timeout=120, cwd=PROJECT)
    assert result.returncode == 141, result.stderr
    assert "Traceback" not in result.stderr and "Broken pipe" not in result.stderr and "error:" not in result.stderr


def test_an_evaluation_and_a_finished_run_print_the_same_metric_table(capsys):
    from dataclasses import asdict

    from moleseg.cli.common import print_metric_table, print_summary
    from moleseg.engine.runs import MetricSummary

    fm = {"mean": 0.9, "std": 0.05, "min": 0.8, "max": 0.95}
    print_summary({"n": 3, "fm": fm, "cm": fm}, {"n": 3, "fm": {"mean": 0.7, "std": 0.1, "min": 0.5, "max": 0.8}})
    expected = ["               mean      std      min      max   (n = 3)",
                "fm           0.9000   0.0500   0.8000   0.9500",
                "cm           0.9000   0.0500   0.8000   0.9500",
                "classical baseline FM: mean 0.7000, min 0.5000, max 0.8000"]
    assert capsys.readouterr().out.splitlines() == expected
    summary = asdict(MetricSummary(**fm))
    print_metric_table(3, {"fm": summary, "cm": summary}, asdict(MetricSummary(mean=0.7, min=0.5, max=0.8)))
    assert capsys.readouterr().out.splitlines() == expected
    print_summary({"n": 3, "fm": fm}, {"n": 0})  # a baseline over no image is not printed
    assert capsys.readouterr().out.splitlines() == expected[:2]


def test_train_refuses_a_weights_file_that_is_no_model_before_any_run_folder(tmp_path, capsys):
    # a folder was "initial weights file not found"; a text or picture file started the training, which failed
    # in its run folder (job.json, job.log, log.txt, progress.json, state.json left for a typo)
    images, masks = lesion_dataset(tmp_path / "set", n=4, size=48)
    (tmp_path / "notes.keras").write_text("not a model")
    (tmp_path / "folder.keras").mkdir()
    for weights, reason in (
            ("notes.keras", "notes.keras: damaged or not a moleseg/Keras model file (a .keras file is a complete ZIP "
                            "archive; this one is not: truncated, or another kind of file)"),
            ("folder.keras", f"{tmp_path / 'folder.keras'}: a folder, not a .keras model file")):
        code = main(["train", "--quiet", "--out", str(tmp_path / "run"), "--images", str(images), "--masks", str(masks),
                     "--input-size", "32", "--epochs", "1", "--weights", str(tmp_path / weights)])
        assert code == 2
        assert f"initial weights: {reason}" in capsys.readouterr().err
        assert not (tmp_path / "run").exists()


def test_an_unforeseen_error_is_one_line_naming_a_private_file_with_its_traceback(tmp_path, monkeypatch, capsys):
    """A defect (an exception no command foresaw) prints no stack trace: one line naming a private file that keeps
    the traceback, exit status 70; a foreseen error keeps its one line and exit status 2."""
    import tempfile

    import moleseg.cli as cli

    def broken(args):
        return {"a": 1}["b\x1b[2J"]  # a KeyError, its text holding a terminal escape

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(cli, "cmd_info", broken)
    assert main(["info", "m.keras"]) == 70
    err = capsys.readouterr().err
    kept = list(tmp_path.glob("moleseg-error-*.txt"))
    assert len(kept) == 1 and (kept[0].stat().st_mode & 0o777) == 0o600
    assert err.splitlines() == [
        f"error: an unexpected error, a defect of moleseg (KeyError: 'b\\x1b[2J'); please report it with {kept[0]}"]
    traceback_text = kept[0].read_text()
    assert traceback_text.startswith("Traceback (most recent call last):") and "in broken" in traceback_text
    assert traceback_text.rstrip().endswith("KeyError: 'b\\x1b[2J'")

    def unforeseen(args):  # an error whose text is a file's, unquoted (a parser's snippet of a line, a name)
        raise LookupError("e\x1b]0;owned\x07\x1b[2J")

    monkeypatch.setattr(cli, "cmd_info", unforeseen)
    assert main(["info", "m.keras"]) == 70
    capsys.readouterr()
    [newest] = set(tmp_path.glob("moleseg-error-*.txt")) - set(kept)
    text = newest.read_text()  # a maintainer reads it with cat: its escapes ran there
    assert "\x1b" not in text and text.rstrip().endswith("LookupError: e\\x1b]0;owned\\x07\\x1b[2J")

    def refused(args):
        raise ValueError("model.keras: not a model file")

    monkeypatch.setattr(cli, "cmd_info", refused)
    assert main(["info", "m.keras"]) == 2
    assert capsys.readouterr().err.splitlines() == ["error: model.keras: not a model file"]
    assert len(list(tmp_path.glob("moleseg-error-*.txt"))) == 2
