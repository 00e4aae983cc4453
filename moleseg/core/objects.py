"""Counting and measuring every object of a cells mask (cells or nuclei), for two-class models.

One lesion-style row for a whole field of nuclei says little; here each 8-connected component of the
foreground is one object, with its own area, equivalent diameter, perimeter and centroid, and the
field gets a count and the distribution of the object areas. Touching objects that the mask does not
separate count as one (no watershed split).

Definitions
-----------
area
    Pixels of the object (``px2``); ``area * s**2`` in ``mm2`` with the pixel size ``s`` (mm per px).
equivalent_diameter
    Diameter of the disk of the same area, ``sqrt(4 A / pi)`` (px, mm).
perimeter
    Crofton perimeter of the object (``skimage.measure.regionprops`` ``perimeter_crofton``), px and mm.
centroid_x, centroid_y
    Centre of mass in px of the image (x to the right, y down, from the top-left pixel's centre).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from skimage.measure import label, regionprops

from moleseg.core.measure import Measurement
from moleseg.core.targets import as_binary_mask

__all__ = ["CellObject", "field_measurements", "find_objects", "object_rows"]


@dataclass(frozen=True)
class CellObject:
    """One object (cell or nucleus) of a mask; lengths in px, area in px\u00b2."""

    number: int
    area_px: int
    equivalent_diameter_px: float
    perimeter_px: float
    centroid_x_px: float
    centroid_y_px: float


def find_objects(mask: np.ndarray, *, min_area_px: int = 1) -> list[CellObject]:
    """Every 8-connected foreground component of ``mask`` of at least ``min_area_px`` pixels, numbered
    1, 2, ... in raster order of their first pixel.

    Raises
    ------
    ValueError
        A mask that is not 2-D, or ``min_area_px`` below 1.
    """
    if min_area_px < 1:
        raise ValueError(f"min_area_px must be at least 1, not {min_area_px}")
    binary = as_binary_mask(mask, "mask")
    labels = label(binary, connectivity=2)
    objects = []
    for region in regionprops(labels):
        area = int(region.area)
        if area < min_area_px:
            continue
        row, col = region.centroid
        objects.append(CellObject(number=len(objects) + 1, area_px=area,
                                  equivalent_diameter_px=math.sqrt(4.0 * area / math.pi),
                                  perimeter_px=float(region.perimeter_crofton), centroid_x_px=float(col),
                                  centroid_y_px=float(row)))
    return objects


def field_measurements(objects: Sequence[CellObject], image_pixels: int, *,
                       pixel_size_mm: float | None = None) -> list[Measurement]:
    """The measurements of a whole field of objects: count, covered share, and the distribution of the
    object areas (mean, median, spread, smallest, largest) and mean equivalent diameter, in px and, with
    ``pixel_size_mm``, in mm. Undefined statistics (no object) are NaN.

    Parameters
    ----------
    objects : sequence of CellObject
        From :func:`find_objects`.
    image_pixels : int
        Pixels of the whole image (> 0), for the covered share.
    pixel_size_mm : float, optional
        Millimetres per pixel (> 0).
    """
    if image_pixels <= 0:
        raise ValueError(f"image_pixels must be positive, not {image_pixels}")
    areas = np.array([item.area_px for item in objects], dtype=np.float64)
    diameters = np.array([item.equivalent_diameter_px for item in objects], dtype=np.float64)

    def statistic(function: Any, values: np.ndarray) -> float:
        return float(function(values)) if values.size else math.nan

    measurements = [
        Measurement("object_count", "Cells / nuclei counted", float(len(objects)), "",
                    "Number of separate objects (8-connected; touching objects count as one)."),
        Measurement("coverage", "Area covered", 100.0 * float(areas.sum()) / image_pixels, "%",
                    "Share of the image covered by cells / nuclei."),
    ]
    scale = pixel_size_mm

    def add(key: str, label_text: str, value_px: float, meaning: str, power: int) -> None:
        measurements.append(Measurement(key, label_text, value_px, "px2" if power == 2 else "px", meaning))
        if scale is not None:
            measurements.append(Measurement(key, label_text, value_px * scale**power, "mm2" if power == 2 else "mm",
                                            meaning))

    add("object_area_mean", "Mean object area", statistic(np.mean, areas), "Average area of one cell / nucleus.", 2)
    add("object_area_median", "Median object area", statistic(np.median, areas),
        "Half of the objects are smaller than this.", 2)
    add("object_area_std", "Object area spread (SD)", statistic(lambda v: np.std(v, ddof=0), areas),
        "Standard deviation of the object areas.", 2)
    add("object_area_min", "Smallest object area", statistic(np.min, areas), "Area of the smallest object.", 2)
    add("object_area_max", "Largest object area", statistic(np.max, areas), "Area of the largest object.", 2)
    add("object_diameter_mean", "Mean equivalent diameter", statistic(np.mean, diameters),
        "Average diameter of the disk with an object's area.", 1)
    return measurements


def object_rows(objects: Sequence[CellObject], *, image: str = "", pixel_size_mm: float | None = None
                ) -> list[dict[str, Any]]:
    """One CSV row per object: ``image`` (when given), ``object``, ``area_px2``, ``equivalent_diameter_px``,
    ``perimeter_px``, ``centroid_x_px``, ``centroid_y_px`` and, with ``pixel_size_mm``, ``area_mm2``,
    ``equivalent_diameter_mm``, ``perimeter_mm``; rounded like every measurement
    (:func:`moleseg.core.measure.decimals`: px areas whole, px lengths 0.1, mm 0.001, mm² 0.0001, under 0.01 mm² 0.000001)."""
    rows = []
    for item in objects:
        row: dict[str, Any] = {"image": image} if image else {}
        row["object"] = item.number
        values = [("area", "px2", item.area_px), ("equivalent_diameter", "px", item.equivalent_diameter_px),
                  ("perimeter", "px", item.perimeter_px), ("centroid_x", "px", item.centroid_x_px),
                  ("centroid_y", "px", item.centroid_y_px)]
        if pixel_size_mm is not None:
            values += [("area", "mm2", item.area_px * pixel_size_mm**2),
                       ("equivalent_diameter", "mm", item.equivalent_diameter_px * pixel_size_mm),
                       ("perimeter", "mm", item.perimeter_px * pixel_size_mm)]
        for key, unit, value in values:
            measurement = Measurement(key, key, float(value), unit, "")
            row[measurement.column] = measurement.rounded
        rows.append(row)
    return rows
