"""Rigid alignment of two photographs of the same lesion (two visits).

A contact dermatoscope has a fixed magnification, so two visits differ by a rotation and a translation
only; a scale change is fitted only when the caller says the magnification differs
(``allow_scale=True``, a similarity transform).

Method
------
1. Both images are converted to grey and resized so that their longer side is at most
   :data:`WORKING_SIDE_PX` (the same factor for both when they have the same size).
2. ORB features (``cv2.ORB_create``, :data:`MAX_FEATURES` key points, FAST threshold
   :data:`FAST_THRESHOLD`) are matched by Hamming distance
   with Lowe's ratio test (:data:`RATIO_TEST`).
3. ``cv2.estimateAffinePartial2D`` with RANSAC (:data:`RANSAC_THRESHOLD_PX`) finds the inliers of a
   similarity transform. Without ``allow_scale`` the rotation and translation are then refitted on the
   inliers by least squares without scale (Kabsch / Umeyama), so the result is exactly rigid.
4. **Quality**: the normalised cross-correlation (Pearson r) of the two grey images, Gaussian-blurred
   (sigma :data:`QUALITY_BLUR_PX`), over the pixels both images cover once aligned, clipped to [0, 1]. The
   whole overlap is used, lesion included: the lesion is the image's main structure and a real change of
   it touches only part of the picture. Fewer than :data:`MIN_INLIERS` inliers gives quality 0. Below
   :data:`MIN_QUALITY` the alignment is reported as failed, and differences must not be read as change.

Conventions: ``matrix`` (2 x 3) maps pixel coordinates ``(x, y)`` of the *after* image to those of the
*before* image (``cv2.warpAffine(after, matrix, before_size)`` draws the after image in the before
frame). ``rotation_deg`` and ``translation_px`` describe the inverse, the motion from before to after:
``rotation_deg`` is counter-clockwise as displayed (``cv2.getRotationMatrix2D``'s sign), and
``translation_px`` is ``(dx, dy)`` of that map about the image origin (top-left corner).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from moleseg.core.colour import skin_colour

__all__ = [
    "MIN_QUALITY",
    "Registration",
    "incomparable_reason",
    "register",
    "warp_image",
    "warp_mask",
]

#: Longer side (px) of the copies the features are found on.
WORKING_SIDE_PX: int = 1024
#: Number of ORB key points per image.
MAX_FEATURES: int = 4000
#: ORB's FAST corner threshold (grey levels; OpenCV's default is 20): skin is smooth, and at 20 a blurred or
#: recompressed second photograph of a small image often keeps too few corners to be aligned.
FAST_THRESHOLD: int = 5
#: Lowe's ratio: a match is kept when its distance is below this times the second best's.
RATIO_TEST: float = 0.8
#: RANSAC reprojection threshold, in px of the working copies.
RANSAC_THRESHOLD_PX: float = 3.0
#: Fewest RANSAC inliers for a transform to be trusted at all.
MIN_INLIERS: int = 12
#: Gaussian sigma (px of the working copies) applied before the cross-correlation.
QUALITY_BLUR_PX: float = 2.0
#: Registration quality (0..1) below which the alignment is reported as failed.
MIN_QUALITY: float = 0.5
#: Fewest overlapping pixels (share of the before image) for the quality to be computed.
MIN_OVERLAP_SHARE: float = 0.2


@dataclass(frozen=True)
class Registration:
    """How the after image lies on the before image.

    Attributes
    ----------
    matrix : (2, 3) float64
        Maps after-image pixel coordinates to before-image ones.
    rotation_deg : float
        Rotation from before to after, degrees, counter-clockwise as displayed.
    translation_px : tuple of float
        ``(dx, dy)`` of the before-to-after map, px.
    scale : float
        Scale from before to after (1 for a rigid fit).
    quality : float
        0..1, see the module docstring.
    inliers : int
        RANSAC inliers among ``matches`` ratio-tested matches.
    matches : int
    message : str
        Empty when the alignment succeeded, else why it failed.
    """

    matrix: np.ndarray
    rotation_deg: float
    translation_px: tuple[float, float]
    scale: float
    quality: float
    inliers: int
    matches: int
    message: str = ""

    @property
    def ok(self) -> bool:
        """True when the quality reaches :data:`MIN_QUALITY`."""
        return not self.message


def _grey(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8:
        return cv2.cvtColor(array, cv2.COLOR_RGB2GRAY)
    if array.ndim == 2 and array.dtype == np.uint8:
        return array
    raise ValueError(f"images to align must be uint8 RGB (H, W, 3) or grey (H, W), got {array.dtype} {array.shape}")


def _working(grey: np.ndarray, factor: float) -> np.ndarray:
    if factor == 1.0:
        return grey
    height, width = grey.shape
    return cv2.resize(grey, (max(1, round(width * factor)), max(1, round(height * factor))),
                      interpolation=cv2.INTER_AREA)


def _rigid_fit(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares rotation + translation (no scale) taking ``source`` points onto ``target`` (2 x 3)."""
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    covariance = (source - source_mean).T @ (target - target_mean)
    u, _, vt = np.linalg.svd(covariance)
    sign = np.sign(np.linalg.det(vt.T @ u.T)) or 1.0
    rotation = vt.T @ np.diag([1.0, sign]) @ u.T
    return np.hstack([rotation, (target_mean - rotation @ source_mean)[:, None]])


def _invert(matrix: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))


def _quality(before: np.ndarray, after: np.ndarray, matrix: np.ndarray) -> float:
    """Pearson r of the blurred before image and the aligned after image on their overlap, clipped to 0..1."""
    height, width = before.shape
    warped = cv2.warpAffine(after.astype(np.float32), matrix, (width, height), flags=cv2.INTER_LINEAR)
    covered = cv2.warpAffine(np.ones(after.shape, np.uint8), matrix, (width, height), flags=cv2.INTER_NEAREST)
    covered = cv2.erode(covered, np.ones((5, 5), np.uint8)).astype(bool)
    if covered.sum() < MIN_OVERLAP_SHARE * covered.size:
        return 0.0
    first = cv2.GaussianBlur(before.astype(np.float32), (0, 0), QUALITY_BLUR_PX)[covered]
    second = cv2.GaussianBlur(warped, (0, 0), QUALITY_BLUR_PX)[covered]
    first, second = first - first.mean(), second - second.mean()
    denominator = math.sqrt(float((first**2).sum()) * float((second**2).sum()))
    return float(np.clip((first * second).sum() / denominator, 0.0, 1.0)) if denominator > 0 else 0.0


def _describe(matrix: np.ndarray) -> tuple[float, tuple[float, float], float]:
    """Rotation (deg, counter-clockwise as displayed), translation and scale of the before-to-after map."""
    forward = _invert(matrix)
    scale = math.hypot(forward[0, 0], forward[0, 1])
    rotation = math.degrees(math.atan2(forward[0, 1], forward[0, 0]))
    return rotation, (float(forward[0, 2]), float(forward[1, 2])), scale


def _failed(inliers: int, matches: int, reason: str) -> Registration:
    """An identity transform of quality 0 with the reason it could not be fitted."""
    matrix = np.hstack([np.eye(2), np.zeros((2, 1))])
    return Registration(matrix=matrix, rotation_deg=0.0, translation_px=(0.0, 0.0), scale=1.0, quality=0.0,
                        inliers=inliers, matches=matches, message=reason)


def register(before: np.ndarray, after: np.ndarray, *, allow_scale: bool = False) -> Registration:
    """Align ``after`` onto ``before`` (see the module docstring).

    Parameters
    ----------
    before, after : (H, W, 3) uint8 RGB or (H, W) uint8 grey
        The two photographs; they may differ in size.
    allow_scale : bool
        Fit a similarity transform (rotation, translation and one scale) instead of a rigid one; only
        for images taken at different magnifications.

    Returns
    -------
    Registration
        Its ``message`` says why the alignment failed (then ``ok`` is False and the matrix is the
        identity when no transform could be fitted at all).
    """
    grey_before, grey_after = _grey(before), _grey(after)
    factor = min(1.0, WORKING_SIDE_PX / max(*grey_before.shape, *grey_after.shape))
    small_before, small_after = _working(grey_before, factor), _working(grey_after, factor)
    orb = cv2.ORB_create(nfeatures=MAX_FEATURES, fastThreshold=FAST_THRESHOLD)
    points_before, descriptors_before = orb.detectAndCompute(small_before, None)
    points_after, descriptors_after = orb.detectAndCompute(small_after, None)
    if descriptors_before is None or descriptors_after is None or len(points_before) < 2 or len(points_after) < 2:
        return _failed(0, 0,
                       "alignment failed: too little texture to find matching points in the two images")
    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(descriptors_after, descriptors_before, k=2)
    good = [pair[0] for pair in pairs if len(pair) == 2 and pair[0].distance < RATIO_TEST * pair[1].distance]
    if len(good) < MIN_INLIERS:
        return _failed(0, len(good),
                       f"alignment failed: only {len(good)} matching points between the two images")
    source = np.float64([points_after[m.queryIdx].pt for m in good])
    target = np.float64([points_before[m.trainIdx].pt for m in good])
    similarity, inlier_flags = cv2.estimateAffinePartial2D(source, target, method=cv2.RANSAC,
                                                           ransacReprojThreshold=RANSAC_THRESHOLD_PX,
                                                           maxIters=5000, confidence=0.999)
    inliers = int(inlier_flags.sum()) if inlier_flags is not None else 0
    if similarity is None or inliers < MIN_INLIERS:
        return _failed(inliers, len(good),
                       f"alignment failed: only {inliers} consistent matching points between the two images")
    chosen = inlier_flags.ravel().astype(bool)
    small_matrix = similarity if allow_scale else _rigid_fit(source[chosen], target[chosen])
    quality = _quality(small_before, small_after, small_matrix)
    # Back to full-resolution coordinates: x_full = x_small / factor on both sides.
    matrix = np.array(small_matrix, dtype=np.float64)
    matrix[:, 2] /= factor
    rotation, translation, scale = _describe(matrix)
    message = "" if quality >= MIN_QUALITY else (
        f"alignment failed: registration quality {quality:.2f} is below {MIN_QUALITY:.2f} "
        "(are these photographs of the same lesion?)")
    return Registration(matrix=matrix, rotation_deg=rotation, translation_px=translation, scale=scale,
                        quality=quality, inliers=inliers, matches=len(good), message=message)


def warp_image(after: np.ndarray, registration: Registration, before_shape: tuple[int, ...]) -> np.ndarray:
    """The after image drawn in the before image's frame (uncovered pixels black)."""
    height, width = before_shape[:2]
    return cv2.warpAffine(np.asarray(after), registration.matrix, (width, height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def warp_mask(mask: np.ndarray, registration: Registration, before_shape: tuple[int, ...]) -> np.ndarray:
    """A mask of the after image drawn in the before image's frame, bool."""
    height, width = before_shape[:2]
    warped = cv2.warpAffine(np.asarray(mask).astype(np.float32), registration.matrix, (width, height),
                            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return warped >= 0.5


#: Mean chroma (max minus min channel, 0..255 levels) under which an image counts as greyscale.
GREY_CHROMA_LEVELS: float = 3.0
#: Largest difference of the skin's white balance between two visits, as ``|log(R/G)|`` or ``|log(B/G)|``
#: of the median skin colours (0.25 is about 28 %); beyond it the colours, and the borders the network
#: draws, cannot be compared.
MAX_WHITE_BALANCE_LOG_RATIO: float = 0.25


def _is_grey(image: np.ndarray) -> bool:
    array = np.asarray(image)
    if array.ndim == 2:
        return True
    wide = array.astype(np.int16)
    return float((wide.max(axis=2) - wide.min(axis=2)).mean()) < GREY_CHROMA_LEVELS


def _skin_balance(image: np.ndarray, lesion: np.ndarray) -> np.ndarray:
    """``(log(R/G), log(B/G))`` of the skin's median colour (:func:`moleseg.core.colour.skin_colour`)."""
    median = skin_colour(image, lesion) + 1.0
    return np.log(np.array([median[0] / median[1], median[2] / median[1]]))


def incomparable_reason(before: np.ndarray, after: np.ndarray, before_lesion: np.ndarray,
                        after_lesion: np.ndarray) -> str:
    """Why two photographs cannot be compared by colour type or light, or '' when they can.

    Parameters
    ----------
    before, after : (H, W, 3) uint8 RGB
    before_lesion, after_lesion : (H, W) bool
        Each image's lesion (the skin around it gives the white balance).

    Returns
    -------
    str
        '' or one sentence: one image greyscale and the other in colour (:data:`GREY_CHROMA_LEVELS`), or the
        skin's white balance differing by more than :data:`MAX_WHITE_BALANCE_LOG_RATIO`.
    """
    grey_before, grey_after = _is_grey(before), _is_grey(after)
    if grey_before != grey_after:
        grey, colour = ("before", "after") if grey_before else ("after", "before")
        return (f"not comparable: the {grey} image is greyscale and the {colour} image is in colour (borders and "
                "colours are not measured alike)")
    if grey_before:
        return ""
    shift = np.abs(_skin_balance(before, before_lesion) - _skin_balance(after, after_lesion))
    if float(shift.max()) > MAX_WHITE_BALANCE_LOG_RATIO:
        return (f"not comparable: the skin's white balance differs between the two images by "
                f"{100 * (math.exp(float(shift.max())) - 1):.0f} % (more than "
                f"{100 * (math.exp(MAX_WHITE_BALANCE_LOG_RATIO) - 1):.0f} %): take both photographs under the same "
                "light and camera settings")
    return ""
