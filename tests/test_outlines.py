"""Outline files (GeoJSON, ImageJ ROI, SVG) read back by independent readers and rasterised again."""

from __future__ import annotations

import io
import json
import re
import xml.etree.ElementTree as ET
import zipfile

import numpy as np
import pytest
import roifile
from skimage.draw import polygon as draw_polygon

from moleseg.cli import main
from moleseg.core.imagewrite import write_png
from moleseg.core.outlines import OUTLINE_FORMATS, OutlineError, outline_files, outline_polygons, parse_formats

SHAPE = (180, 240)


def _ellipse(shape=SHAPE, centre=(90.0, 110.0), axes=(60.0, 85.0), angle_deg=25.0) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]].astype(np.float64)
    a = np.deg2rad(angle_deg)
    dy, dx = yy - centre[0], xx - centre[1]
    u = dx * np.cos(a) + dy * np.sin(a)
    v = -dx * np.sin(a) + dy * np.cos(a)
    return (u / axes[1]) ** 2 + (v / axes[0]) ** 2 <= 1.0


def _rasterise(xy: np.ndarray, shape=SHAPE) -> np.ndarray:
    """Pixels whose centre (col + 0.5, row + 0.5 in pixel-corner coordinates) lies inside the polygon."""
    xy = np.asarray(xy, dtype=np.float64)
    mask = np.zeros(shape, dtype=bool)
    rows, cols = draw_polygon(xy[:, 1] - 0.5, xy[:, 0] - 0.5, shape)
    mask[rows, cols] = True
    return mask


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def _polygon_centroid(xy: np.ndarray) -> np.ndarray:
    x, y = xy[:, 0], xy[:, 1]
    cross = x * np.roll(y, -1) - np.roll(x, -1) * y
    area = cross.sum() / 2
    return np.array([((x + np.roll(x, -1)) * cross).sum(), ((y + np.roll(y, -1)) * cross).sum()]) / (6 * area)


def _svg_rings(data: bytes) -> list[np.ndarray]:
    root = ET.fromstring(data)
    path = root.find("{http://www.w3.org/2000/svg}path")
    rings = []
    for subpath in re.findall(r"M([^Z]*)Z", path.get("d")):
        numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", subpath)]
        rings.append(np.array(numbers).reshape(-1, 2))
    return rings


def test_imagej_roi_read_back_by_roifile_matches_the_mask():
    mask = _ellipse()
    files = outline_files(mask, "mole", ["imagej"])
    assert list(files) == ["mole_outline.roi"]
    roi = roifile.ImagejRoi.frombytes(files["mole_outline.roi"])
    assert roi.roitype == roifile.ROI_TYPE.POLYGON and roi.name == "Lesion"
    xy = roi.coordinates()
    assert _jaccard(_rasterise(xy), mask) > 0.97
    # pixel-corner convention: the polygon's centroid is the mask's centroid + 0.5 px in x and y
    rows, cols = np.nonzero(mask)
    np.testing.assert_allclose(_polygon_centroid(xy), [cols.mean() + 0.5, rows.mean() + 0.5], atol=0.1)


def test_geojson_is_a_qupath_feature_with_a_closed_polygon_matching_the_mask():
    mask = _ellipse()
    document = json.loads(outline_files(mask, "mole", ["geojson"])["mole_outline.geojson"])
    assert document["type"] == "FeatureCollection" and len(document["features"]) == 1
    feature = document["features"][0]
    assert feature["type"] == "Feature" and feature["geometry"]["type"] == "Polygon"
    assert feature["properties"]["objectType"] == "annotation"
    assert feature["properties"]["classification"]["name"] == "Lesion"
    assert feature["properties"]["corrected_by_hand"] is False
    ring = np.array(feature["geometry"]["coordinates"][0])
    assert ring[0].tolist() == ring[-1].tolist()  # closed
    assert _jaccard(_rasterise(ring[:-1]), mask) > 0.97


def test_svg_path_matches_the_mask_and_has_the_image_size():
    mask = _ellipse()
    data = outline_files(mask, "mole", ["svg"])["mole_outline.svg"]
    root = ET.fromstring(data)
    assert (root.get("width"), root.get("height")) == (str(SHAPE[1]), str(SHAPE[0]))
    rings = _svg_rings(data)
    assert len(rings) == 1
    assert _jaccard(_rasterise(rings[0]), mask) > 0.97
    # drawn as the overlay fills a lesion by default (moleseg.core.render.FILL_COLOR, FILL_OPACITY)
    path = root.find("{http://www.w3.org/2000/svg}path")
    assert (path.get("fill"), path.get("fill-opacity")) == ("#ffc800", "0.35")


def test_lesion_outline_is_the_largest_object_and_cells_get_every_object():
    mask = _ellipse(axes=(40.0, 50.0))
    mask[5:15, 200:230] = True  # a small second object
    mask[170, 5] = True  # a single pixel
    lesion = outline_polygons(mask)
    assert len(lesion) == 1
    assert _jaccard(_rasterise(lesion[0]), _ellipse(axes=(40.0, 50.0))) > 0.97
    cells = outline_polygons(mask, all_objects=True)
    assert len(cells) == 3
    np.testing.assert_array_equal(cells[2], [[5, 170], [6, 170], [6, 171], [5, 171]])  # the pixel's square
    files = outline_files(mask, "field", OUTLINE_FORMATS, all_objects=True, corrected_by_hand=True)
    assert set(files) == {"field_outline.geojson", "field_outlines.zip", "field_outline.svg"}
    with zipfile.ZipFile(io.BytesIO(files["field_outlines.zip"])) as archive:
        rois = [roifile.ImagejRoi.frombytes(archive.read(name)) for name in archive.namelist()]
    assert len(rois) == 3 and rois[0].name == "Nucleus 1 (corrected by hand)"
    small = np.zeros(SHAPE, dtype=bool)
    small[5:15, 200:230] = True
    assert _jaccard(_rasterise(rois[1].coordinates()), small) > 0.9
    assert json.loads(files["field_outline.geojson"])["features"][0]["properties"]["corrected_by_hand"] is True
    assert len(_svg_rings(files["field_outline.svg"])) == 3


def test_empty_mask_has_no_outline_and_formats_are_checked():
    assert outline_files(np.zeros(SHAPE, bool), "x", OUTLINE_FORMATS) == {}
    assert parse_formats(" SVG,geojson,svg ") == ("svg", "geojson")
    with pytest.raises(OutlineError, match="unknown outline format png"):
        parse_formats("geojson,png")


def test_predict_writes_outlines_read_back_by_roifile(tmp_path, capsys):
    mask = _ellipse()
    image = np.where(mask[..., None], np.array([80, 55, 40]), np.array([215, 185, 175])).astype(np.uint8)
    write_png(tmp_path / "mole.png", image)
    out = tmp_path / "out"
    code = main(["predict", "--model", "classical", "--quiet", "--outlines", "geojson,imagej,svg",
                 "--out", str(out), str(tmp_path / "mole.png")])
    assert code == 0
    roi = roifile.roiread(next(out.glob("*_outline.roi")))
    assert _jaccard(_rasterise(roi.coordinates()), mask) > 0.95
    geometry = json.loads(next(out.glob("*_outline.geojson")).read_text())["features"][0]["geometry"]
    assert _jaccard(_rasterise(np.array(geometry["coordinates"][0])[:-1]), mask) > 0.95
    assert _jaccard(_rasterise(_svg_rings(next(out.glob("*_outline.svg")).read_bytes())[0]), mask) > 0.95


def test_predict_rejects_an_unknown_outline_format(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["predict", "--model", "classical", "--outlines", "dxf", "--out", str(tmp_path), str(tmp_path)])
    assert stop.value.code == 2
    assert "unknown outline format dxf" in capsys.readouterr().err
