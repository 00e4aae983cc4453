"""The Analyse page's "Save to records": one record per analysis and visit. A second click on the button with
the same border, measurements' settings and visit is not a second visit of the lesion (History and Compare would
list the same picture twice): it is answered with the record it already is, as long as that record exists.
What was saved is remembered per browser session (the caller keeps ``saved``), by a digest, never the image.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from moleseg.app.identity import Refusal
from moleseg.core.errors import first_line
from moleseg.core.report import Visit
from moleseg.engine.pipeline import Analysis
from moleseg.engine.records import Records
from moleseg.engine.recordtypes import User

__all__ = ["SaveAnswer", "save_digest", "save_once"]


@dataclass(frozen=True)
class SaveAnswer:
    """What the page says after a click on "Save to records": ``kind`` is the box it is shown in
    (``success``: saved now, ``info``: saved before, nothing written, ``error``: not saved)."""

    kind: Literal["success", "info", "error"]
    message: str
    record_id: int | None = None


def save_digest(analysis: Analysis, image_name: str, visit: Visit, model_name: str, model_version: str) -> str:
    """SHA-256 (hex) of what a record would hold: the image name, the lesion mask, the cleanup, lesion threshold
    and pixel size, whether corrected by hand, the model and the visit. Equal digests: the same record."""
    segmentation = analysis.segmentation
    described = json.dumps({"image": image_name, "model": [model_name, model_version],
                            "cleanup": segmentation.settings.to_dict(),
                            "threshold": repr(segmentation.lesion_threshold),
                            "pixel_size_mm": repr(analysis.pixel_size_mm),
                            "corrected": bool(analysis.corrected_by_hand), "visit": visit.to_dict()},
                           sort_keys=True)
    digest = hashlib.sha256(described.encode())
    lesion = np.ascontiguousarray(segmentation.lesion, dtype=bool)
    digest.update(repr(lesion.shape).encode())
    digest.update(np.packbits(lesion).tobytes())
    return digest.hexdigest()


def save_once(user: User | Refusal, analysis: Analysis, image_name: str, visit: Visit, model_name: str,
              model_version: str, saved: MutableMapping[str, int], records: Records | None = None,
              before_write: Callable[[], None] = lambda: None) -> SaveAnswer:
    """Save ``analysis`` of ``image_name`` with ``visit`` to ``user``'s records, unless this very analysis and
    visit is already saved as a record the user still reaches.

    Parameters
    ----------
    user : User or Refusal
        Who saves (:func:`moleseg.app.identity.current_user`); a refusal saves nothing and says why.
    saved : mutable mapping
        Digest (:func:`save_digest`) -> record id of this browser session's saves; updated here.
    records : Records, optional
        The records (default: the server's, :class:`moleseg.engine.records.Records`).
    before_write : callable, optional
        Called just before a record is written (not for a record saved before), e.g. the user's disk quota
        (:func:`moleseg.app.quota.check_session_quota`); its ``ValueError`` or ``OSError`` is the answer.
    """
    if isinstance(user, Refusal):
        return SaveAnswer("error", f"Could not save: {user.message}")
    digest = save_digest(analysis, image_name, visit, model_name, model_version)
    try:
        records = records if records is not None else Records()
        earlier = saved.get(digest)
        if earlier is not None:
            try:
                records.record(user, earlier)
            except KeyError:  # deleted since (History): saving again makes a new record
                saved.pop(digest)
            else:
                return SaveAnswer("info", f"{image_name} is already saved as record {earlier}, with this border "
                                          "and visit: nothing saved again. Change the border or the visit to save "
                                          "another visit.", earlier)
        before_write()
        segmentation = analysis.segmentation
        record_id = records.save(
            user, analysis.image, segmentation.lesion, analysis.measurements, lesion=visit.lesion,
            visit_date=visit.visit_date or None, body_site=visit.body_site, notes=visit.notes,
            image_name=image_name, model_name=model_name, model_version=model_version,
            cleanup=segmentation.settings.to_dict(), lesion_threshold=segmentation.lesion_threshold,
            pixel_size_mm=analysis.pixel_size_mm, corrected=analysis.corrected_by_hand)
    except (OSError, ValueError) as error:
        return SaveAnswer("error", f"Could not save: {first_line(error)}")
    saved[digest] = record_id
    return SaveAnswer("success", f"Saved as record {record_id}.", record_id)
