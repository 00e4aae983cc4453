"""Segmentation scores of a predicted lesion mask against a true one.

The overlap scores are the article's (``evaluation_segmentation.m``)::

    TP = pred & true,  FP = pred & ~true,  FN = ~pred & true      (pixel counts)
    CM = TP / (TP + FN)       completeness, 1 = no under-segmentation (recall)
    CR = TP / (TP + FP)       correctness, 1 = no over-segmentation (precision)
    FM = 2 CM CR / (CM + CR)  F-measure (= Dice)
    Jaccard = TP / (TP + FP + FN)  (intersection over union)

Empty cases, where a ratio would be 0 / 0: when **both** masks are empty the prediction is
perfect and every score is 1.0; otherwise an undefined ratio is 0.0. So an empty prediction of a
non-empty truth has CM = CR = FM = Jaccard = 0, and a non-empty prediction of an empty truth has
CM = 0 too (nothing was found correctly). FM is 0 whenever CM + CR = 0. All scores lie in [0, 1].

The boundary score :func:`hd95` is the symmetric 95th-percentile Hausdorff distance in pixels
between the two lesion contours; see its docstring for the exact definition.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import cv2
import numpy as np
from scipy import ndimage

from moleseg.core.targets import as_binary_mask, bounding_box

__all__ = ["SCORE_KEYS", "confusion", "scores", "hd95", "contour", "summarise", "summarise_scores"]

#: Per-image scores summarised by :func:`summarise_scores`.
SCORE_KEYS: tuple[str, ...] = ("fm", "cm", "cr", "jaccard", "hd95")

_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=np.uint8)


def _pair(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    predicted = as_binary_mask(pred, "pred")
    truth = as_binary_mask(true, "true")
    if predicted.shape != truth.shape:
        raise ValueError(f"pred and true masks differ in size: {predicted.shape} vs {truth.shape}")
    return predicted, truth


def confusion(pred: np.ndarray, true: np.ndarray) -> tuple[int, int, int]:
    """Pixel counts of a predicted mask against the true mask.

    Parameters
    ----------
    pred, true : (H, W) arrays of the same shape
        Predicted and true lesion masks; non-zero / True is lesion.

    Returns
    -------
    tuple of int
        ``(tp, fp, fn)``: lesion pixels found, background pixels called lesion, lesion pixels
        missed; each ``>= 0``.
    """
    predicted, truth = _pair(pred, true)
    tp = int(np.count_nonzero(predicted & truth))
    fp = int(np.count_nonzero(predicted)) - tp
    fn = int(np.count_nonzero(truth)) - tp
    return tp, fp, fn


def _ratio(numerator: int, denominator: int, both_empty: bool) -> float:
    if denominator == 0:
        return 1.0 if both_empty else 0.0
    return numerator / denominator


def contour(mask: np.ndarray) -> np.ndarray:
    """Contour pixels of a mask: the mask minus its erosion by a 3x3 cross.

    Outside the image counts as background, so a lesion touching the frame has a closed contour
    that runs along the frame. Returns an ``(H, W)`` bool array (8-connected, one pixel thick).
    """
    binary = as_binary_mask(mask)
    result = np.zeros(binary.shape, dtype=bool)
    box = bounding_box(binary)
    if box is None:
        return result
    r0, r1, c0, c1 = box
    crop = binary[r0:r1, c0:c1].astype(np.uint8)
    eroded = cv2.erode(crop, _CROSS, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    result[r0:r1, c0:c1] = (crop > 0) & (eroded == 0)
    return result


def hd95(pred: np.ndarray, true: np.ndarray) -> float:
    """Symmetric 95th-percentile Hausdorff distance between two lesion contours, in pixels.

    Definition: take the contour pixels of each mask (:func:`contour`: mask minus its erosion by
    a 3x3 cross). For every predicted contour pixel, its Euclidean distance to the nearest true
    contour pixel; for every true contour pixel, its distance to the nearest predicted contour
    pixel (``scipy.ndimage.distance_transform_edt``). Pool both sets of directed distances and
    return their 95th percentile (numpy's default linear interpolation).

    Parameters
    ----------
    pred, true : (H, W) arrays of the same shape
        Predicted and true lesion masks; non-zero / True is lesion.

    Returns
    -------
    float
        Distance in pixels, ``>= 0``. Both masks empty: 0.0. Exactly one empty: the image
        diagonal ``sqrt(H**2 + W**2)`` (a finite worst case, larger than any possible distance).
    """
    predicted, truth = _pair(pred, true)
    pred_contour, true_contour = contour(predicted), contour(truth)
    has_pred, has_true = bool(pred_contour.any()), bool(true_contour.any())
    if not has_pred and not has_true:
        return 0.0
    if not has_pred or not has_true:
        return float(math.hypot(*predicted.shape))
    # Every contour pixel lies in the bounding box of both contours, so distances computed on
    # that box are exact.
    r0, r1, c0, c1 = bounding_box(pred_contour | true_contour)
    pred_crop, true_crop = pred_contour[r0:r1, c0:c1], true_contour[r0:r1, c0:c1]
    distance_to_true = ndimage.distance_transform_edt(~true_crop)
    distance_to_pred = ndimage.distance_transform_edt(~pred_crop)
    pooled = np.concatenate([distance_to_true[pred_crop], distance_to_pred[true_crop]])
    return float(np.percentile(pooled, 95))


def scores(pred: np.ndarray, true: np.ndarray) -> dict[str, float | int]:
    """All scores of one predicted mask against the true mask.

    Parameters
    ----------
    pred, true : (H, W) arrays of the same shape
        Predicted and true lesion masks; non-zero / True is lesion.

    Returns
    -------
    dict
        ``tp, fp, fn`` (int pixel counts); ``cm, cr, fm, jaccard`` (float in [0, 1], see the
        module docstring for the empty cases); ``hd95`` (float, pixels, see :func:`hd95`).
    """
    predicted, truth = _pair(pred, true)
    tp, fp, fn = confusion(predicted, truth)
    both_empty = tp + fp + fn == 0
    cm = _ratio(tp, tp + fn, both_empty)
    cr = _ratio(tp, tp + fp, both_empty)
    fm = 2 * cm * cr / (cm + cr) if cm + cr > 0 else 0.0
    jaccard = _ratio(tp, tp + fp + fn, both_empty)
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "cm": float(cm),
        "cr": float(cr),
        "fm": float(fm),
        "jaccard": float(jaccard),
        "hd95": hd95(predicted, truth),
    }


def summarise(values: Iterable[float]) -> dict[str, float]:
    """Mean, standard deviation, minimum and maximum of a list of values.

    The standard deviation is the population one (``ddof=0``): the spread of exactly these
    images, not an estimate for a larger population; a single value has std 0.0.

    Raises
    ------
    ValueError
        No values, or a value that is not a finite number.
    """
    array = np.asarray(list(values), dtype=np.float64)
    if array.size == 0:
        raise ValueError("no values to summarise")
    if not np.all(np.isfinite(array)):
        raise ValueError("values to summarise must be finite numbers")
    return {
        "mean": float(array.mean()),
        "std": float(array.std(ddof=0)),
        "min": float(array.min()),
        "max": float(array.max()),
    }


def summarise_scores(per_image: Sequence[Mapping[str, float]]) -> dict:
    """Summary of per-image :func:`scores` over a set of images.

    Parameters
    ----------
    per_image : list of dict
        One :func:`scores` dict (or any mapping with the keys ``fm, cm, cr, jaccard, hd95``)
        per image.

    Returns
    -------
    dict
        ``{"n": number of images, "fm": summarise(...), "cm": ..., "cr": ..., "jaccard": ...,
        "hd95": ...}``; each summary is ``{"mean", "std", "min", "max"}``.

    Raises
    ------
    ValueError
        No images, or an image whose dict lacks one of the keys.
    """
    rows = list(per_image)
    if not rows:
        raise ValueError("no per-image scores to summarise")
    summary: dict = {"n": len(rows)}
    for key in SCORE_KEYS:
        missing = [index for index, row in enumerate(rows) if key not in row]
        if missing:
            raise ValueError(f"per-image scores lack {key!r} (image index {missing[0]})")
        summary[key] = summarise(row[key] for row in rows)
    return summary
