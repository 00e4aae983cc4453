"""Lesion outlines in files that other tools read: GeoJSON (QuPath), ImageJ ROI (Fiji) and SVG.

Coordinates are ``x, y`` in pixels with the pixel-corner convention these tools share: pixel
``(row, col)`` covers ``col..col+1`` by ``row..row+1``, so a polygon vertex on a boundary pixel sits at
``(col + 0.5, row + 0.5)``. Each polygon is the outer contour of one object (holes are not traced:
a lesion is hole-filled by the cleanup, and cells are single objects). For a dermoscopy lesion the
outline is the largest object's; in cells mode every object gets its own polygon.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Sequence

import cv2
import numpy as np

from moleseg.core.render import FILL_COLOR, FILL_OPACITY
from moleseg.core.targets import as_binary_mask

#: Outline formats, by the name ``moleseg predict --outlines`` takes.
OUTLINE_FORMATS: tuple[str, ...] = ("geojson", "imagej", "svg")
#: Name written into each outline (QuPath classification, ImageJ ROI name, SVG id).
LESION_NAME = "Lesion"
CELL_NAME = "Nucleus"


class OutlineError(ValueError):
    """An unknown outline format."""


def parse_formats(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"geojson,imagej"`` (or a sequence of names) -> ``("geojson", "imagej")``, validated.

    Raises
    ------
    OutlineError
        A name that is not one of :data:`OUTLINE_FORMATS`.
    """
    names = [part.strip().lower() for part in (text.split(",") if isinstance(text, str) else text)]
    names = [name for name in names if name]
    unknown = [name for name in names if name not in OUTLINE_FORMATS]
    if unknown:
        raise OutlineError(f"unknown outline format {', '.join(unknown)} (choose from {', '.join(OUTLINE_FORMATS)})")
    return tuple(dict.fromkeys(names))


def _counter_clockwise(points: np.ndarray) -> np.ndarray:
    """The ring with a positive shoelace area in ``x, y`` as stored (GeoJSON's right-hand rule)."""
    x, y = points[:, 0], points[:, 1]
    area = 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))
    return points if area >= 0 else points[::-1].copy()


def outline_polygons(mask: np.ndarray, *, all_objects: bool = False) -> list[np.ndarray]:
    """Outer contours of a mask's objects as ``(N, 2)`` float64 ``x, y`` polygons in px (pixel corners).

    Parameters
    ----------
    mask : (H, W) array
        Non-zero is foreground.
    all_objects : bool
        False: only the largest object's contour (the lesion). True: one polygon per 8-connected
        object (cells), largest first.

    Returns
    -------
    list of (N, 2) float64
        Vertices through the centres of the boundary pixels (straight runs reduced to their ends),
        not closed (the first vertex is not repeated). Empty for an empty mask. An object of one
        pixel or one line of pixels gets the rectangle around its pixels' centres ±0.5 px.
    """
    binary = as_binary_mask(mask).astype(np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons: list[tuple[float, np.ndarray]] = []
    for contour in contours:
        points = contour.reshape(-1, 2).astype(np.float64)
        area = abs(cv2.contourArea(contour))
        if len(points) < 3 or area == 0:
            (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
            ring = np.array([[x0, y0], [x1 + 1, y0], [x1 + 1, y1 + 1], [x0, y1 + 1]], dtype=np.float64)
            polygons.append((float(len(points)), _counter_clockwise(ring)))
            continue
        polygons.append((area + len(points), _counter_clockwise(points + 0.5)))
    polygons.sort(key=lambda item: -item[0])
    rings = [ring for _, ring in polygons]
    return rings if all_objects else rings[:1]


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else round(float(value), 3)


def to_geojson(polygons: Sequence[np.ndarray], *, name: str = LESION_NAME,
               color: tuple[int, int, int] = FILL_COLOR, properties: dict | None = None) -> bytes:
    """A QuPath-style GeoJSON ``FeatureCollection``: one annotation ``Feature`` with a ``Polygon`` per ring.

    ``properties`` are added to each feature's properties (e.g. ``{"corrected_by_hand": True}``).
    """
    features = []
    for index, ring in enumerate(polygons, start=1):
        closed = [[_number(x), _number(y)] for x, y in ring] + [[_number(ring[0][0]), _number(ring[0][1])]]
        features.append({
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [closed]},
            "properties": {"objectType": "annotation", "name": name if len(polygons) == 1 else f"{name} {index}",
                           "classification": {"name": name, "color": list(color)}, **(properties or {})},
        })
    return (json.dumps({"type": "FeatureCollection", "features": features}, indent=1) + "\n").encode("utf-8")


def imagej_roi(ring: np.ndarray, name: str = LESION_NAME) -> bytes:
    """One polygon as an ImageJ ``.roi`` file (a polygon ROI with subpixel coordinates)."""
    import roifile  # only this format needs it: imported on first use

    roi = roifile.ImagejRoi.frompoints(np.asarray(ring, dtype=np.float32), name=name)
    roi.roitype = roifile.ROI_TYPE.POLYGON
    return roi.tobytes()


def to_imagej(polygons: Sequence[np.ndarray], *, name: str = LESION_NAME, note: str = "") -> tuple[str, bytes]:
    """``(".roi", bytes)`` for one polygon, ``(".zip", bytes)`` (an ImageJ RoiSet) for several.

    The ROIs are named ``name + note`` (one) or ``f"{name} {i}{note}"`` (several).

    Raises
    ------
    OutlineError
        No polygon (an empty mask has no outline).
    """
    if not polygons:
        raise OutlineError("no outline: the mask is empty")
    if len(polygons) == 1:
        return ".roi", imagej_roi(polygons[0], name + note)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for index, ring in enumerate(polygons, start=1):
            label = f"{name} {index}{note}"
            archive.writestr(f"{index:04d}-{name.lower()}.roi", imagej_roi(ring, label))
    return ".zip", buffer.getvalue()


def to_svg(polygons: Sequence[np.ndarray], width: int, height: int, *, name: str = LESION_NAME,
           color: tuple[int, int, int] = FILL_COLOR, comment: str = "") -> bytes:
    """An SVG of the image's size with one ``<path>`` (one ``M ... Z`` subpath per polygon)."""
    def point(x: float, y: float) -> str:
        return f"{_number(x)} {_number(y)}"

    data = " ".join("M " + " L ".join(point(x, y) for x, y in ring) + " Z" for ring in polygons)
    fill = "#" + "".join(f"{int(c):02x}" for c in color)
    note = f"<!-- {comment.replace('--', '-')} -->\n" if comment else ""
    text = (f'<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}">\n{note}'
            f'<title>{name}</title>\n'
            f'<path id="{name.lower()}" d="{data}" fill="{fill}" fill-opacity="{FILL_OPACITY}" stroke="{fill}" '
            f'stroke-width="1" fill-rule="nonzero"/>\n</svg>\n')
    return text.encode("utf-8")


def outline_files(mask: np.ndarray, stem: str, formats: Sequence[str], *, all_objects: bool = False,
                  name: str | None = None, corrected_by_hand: bool = False) -> dict[str, bytes]:
    """``{file name: bytes}`` of the mask's outline in each format.

    ``<stem>_outline.geojson``, ``<stem>_outline.roi`` (``<stem>_outlines.zip``, an ImageJ RoiSet, when
    there are several objects), ``<stem>_outline.svg``. An empty mask gives no files.
    ``corrected_by_hand`` is written into the GeoJSON properties, the ROI name and the SVG.
    """
    formats = parse_formats(formats)
    polygons = outline_polygons(mask, all_objects=all_objects)
    if not polygons:
        return {}
    name = name or (CELL_NAME if all_objects else LESION_NAME)
    note = " (corrected by hand)" if corrected_by_hand else ""
    height, width = mask.shape[:2]
    files: dict[str, bytes] = {}
    if "geojson" in formats:
        files[f"{stem}_outline.geojson"] = to_geojson(polygons, name=name,
                                                      properties={"corrected_by_hand": corrected_by_hand})
    if "imagej" in formats:
        suffix, data = to_imagej(polygons, name=name, note=note)
        files[f"{stem}_outline{'s' if suffix == '.zip' else ''}{suffix}"] = data
    if "svg" in formats:
        files[f"{stem}_outline.svg"] = to_svg(polygons, width, height, name=name,
                                              comment=f"{name} outline{note}, x y in px")
    return files
