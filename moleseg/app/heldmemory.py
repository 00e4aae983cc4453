"""Each user's share of the server's memory for the analyses their open Analyse and Compare pages hold (a shared
server).

An analysis holds its image, the network's probabilities, its masks and pictures while a page shows it: some
:data:`HELD_BYTES_PER_PIXEL` bytes a pixel, however small its file (a 12 MP photograph's is 350 MB, from a PNG of a
few kB). The uploads' share (:mod:`moleseg.app.uploads`) counts the files, not what they become: 200 small files of
large images, in as many tabs as a script opens, took the machine's memory, and every other user's images were then
refused as too large for what was left. :class:`HeldAnalyses` keeps what each session holds (:class:`Holding`,
kept in the session's state: it goes with the session) and refuses an upload that would take its user's sessions
past their share (:func:`moleseg.core.config.analysis_bytes_per_user`), before any file is decoded. No Streamlit.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field

from moleseg.app.analysis import Upload
from moleseg.core.imagefile import image_size
from moleseg.core.words import capitalised, count_of, size_text

__all__ = ["HELD_BYTES_PER_PIXEL", "HeldAnalyses", "Holding", "held_bytes", "pixel_bytes"]

#: Bytes an analysis holds per pixel of its image (:func:`moleseg.app.analysis._analysis_bytes` of a three-class
#: model's: the image 3, its float32 probabilities 12, its classes, masks, two pictures and result files 14).
HELD_BYTES_PER_PIXEL: int = 29


def held_bytes(uploads: Sequence[Upload]) -> int:
    """What analysing ``uploads`` would hold: :data:`HELD_BYTES_PER_PIXEL` a pixel of each, its size read from its
    header (a file whose header cannot be read counts for nothing: it is refused when read)."""
    pixels = 0
    for upload in uploads:
        try:
            width, height = image_size(upload.data)
        except Exception:  # noqa: BLE001 - any unreadable header: the reader says why later
            continue
        pixels += width * height
    return pixel_bytes(pixels)


def pixel_bytes(pixels: int) -> int:
    """What the analyses of images of ``pixels`` pixels in all hold: :data:`HELD_BYTES_PER_PIXEL` a pixel."""
    return pixels * HELD_BYTES_PER_PIXEL


@dataclass(eq=False)
class Holding:
    """What one session's page holds: ``nbytes`` of analyses, of the uploads whose keys are ``keys``."""

    owner: str
    nbytes: int = 0
    keys: tuple[str, ...] = field(default=())


class HeldAnalyses:
    """The sessions' :class:`Holding` of every user (weakly: a session's goes with it), and the refusal of an upload
    that would take a user's past ``per_user`` bytes. Thread-safe."""

    def __init__(self, per_user: int) -> None:
        self.per_user = per_user
        self._holdings: weakref.WeakSet[Holding] = weakref.WeakSet()
        self._lock = threading.RLock()  # held across a refusal's count and its recording (reentrant: held)

    def holding(self, owner: str) -> Holding:
        """A new session's holding of ``owner``'s (nothing yet)."""
        holding = Holding(owner)
        with self._lock:
            self._holdings.add(holding)
        return holding

    def held(self, owner: str, besides: Holding | None = None) -> int:
        """Bytes ``owner``'s sessions hold, ``besides``' left out."""
        with self._lock:
            return sum(other.nbytes for other in list(self._holdings) if other.owner == owner and other is not besides)

    def refusal(self, holding: Holding, uploads: Sequence[Upload]) -> str | None:
        """None when the session of ``holding`` may hold the analyses of ``uploads`` (what it held before replaced:
        ``holding`` now says so), else one sentence with the bytes, the share and what to do (``holding`` then
        holds nothing: the page drops what it showed)."""
        keys = tuple(upload.key for upload in uploads)
        return self.refusal_of(holding, keys, holding.nbytes if keys == holding.keys else held_bytes(uploads))

    def refusal_of(self, holding: Holding, keys: tuple[str, ...], needed: int) -> str | None:
        """:meth:`refusal` of the images named by ``keys`` (an upload's digest, a saved visit's id), whose analyses
        hold ``needed`` bytes."""
        with self._lock:  # one step: two tabs asking at once must not both pass on the same count
            others = self.held(holding.owner, besides=holding)
            if others + needed <= self.per_user:
                holding.nbytes, holding.keys = needed, keys
                return None
            holding.nbytes, holding.keys = 0, ()
        return (f"{capitalised(count_of(len(keys), 'image'))} would hold {size_text(needed)} of the server's "
                f"memory while the page shows them, and your open pages may hold {size_text(self.per_user)} of "
                f"analyses together ({size_text(others)} in your other tabs): none was analysed; upload fewer or "
                "smaller images, or close another tab.")
