"""Whether a lesion mask reaches the image's edge: the outline's share on the frame and the edge length reached.

A lesion that reaches the frame along a long stretch may extend beyond the picture, so its area and
diameters are lower bounds (the report's ``beyond_picture`` flag). Masks are 2-D, any dtype, non-zero = lesion.
"""

from __future__ import annotations

import numpy as np

from moleseg.core.config import EDGE_BAND_SHARE, EDGE_CONTACT_RATIO
from moleseg.core.metrics import contour
from moleseg.core.targets import as_binary_mask

__all__ = ["edge_contact_ratio", "edge_outline_share", "extends_beyond_picture"]


def edge_outline_share(lesion: np.ndarray) -> float:
    """Share of the lesion's outline that lies on the image's edge, 0..1.

    The outline is every lesion pixel with a 4-neighbour outside the lesion, the image frame counting as
    outside (so a lesion pixel on the first or last row or column is always on the outline). The share is
    the outline pixels on the frame over all outline pixels: 0 for a lesion clear of the edge, 1 for a
    mask filling the whole image; an empty mask gives 0.
    """
    lesion = as_binary_mask(lesion)
    if not lesion.any():
        return 0.0
    outline = contour(lesion)  # the lesion minus its erosion by a 3 x 3 cross, outside the frame background
    on_edge = np.zeros_like(outline)
    on_edge[[0, -1], :] = outline[[0, -1], :]
    on_edge[:, [0, -1]] |= outline[:, [0, -1]]
    return float(on_edge.sum() / outline.sum())


def edge_contact_ratio(lesion: np.ndarray, band_share: float = EDGE_BAND_SHARE) -> float:
    """Length of image edge the lesion reaches, over the lesion's equivalent diameter (0 and up).

    The lesion reaches a position on the frame when one of its pixels lies within ``band_share`` (0..1) of
    the image's shorter side of that edge (at least 1 px), measured along the edge's row or column: a lesion
    drawn a few pixels short of the frame, as networks and annotators do, still reaches it. The length is
    counted per side (a corner position counts on both sides it lies on) and divided by the diameter of the
    disk with the lesion's area, so it compares lesions of any size and images of any resolution.
    0 for an empty mask or a lesion clear of the band; about 4 for a mask filling a square image.
    """
    lesion = as_binary_mask(lesion)
    area_px = int(lesion.sum())
    if area_px == 0:
        return 0.0
    band_px = max(1, int(round(band_share * min(lesion.shape))))
    reached = (int(lesion[:band_px].any(axis=0).sum()) + int(lesion[-band_px:].any(axis=0).sum())
               + int(lesion[:, :band_px].any(axis=1).sum()) + int(lesion[:, -band_px:].any(axis=1).sum()))
    return reached / (2.0 * np.sqrt(area_px / np.pi))


def extends_beyond_picture(lesion: np.ndarray, ratio: float = EDGE_CONTACT_RATIO) -> bool:
    """True when the lesion reaches the image's edge along at least ``ratio`` times its equivalent diameter
    (:func:`edge_contact_ratio`): it may extend beyond the picture, so its area and diameters are lower
    bounds."""
    return edge_contact_ratio(lesion) >= ratio
