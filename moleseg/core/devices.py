"""Device profiles: named imaging devices (a dermatoscope, a microscope objective) with their pixel size in mm
per px, kept in one JSON file of a user's space, so that the pixel size is chosen by name and remembered across
sessions. The file is the user's own but read as untrusted: a bad one gives one clear message, never a crash.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from moleseg.core.atomic import atomic_write, path_lock
from moleseg.core.config import MAX_PIXEL_SIZE_MM
from moleseg.core.errors import first_line, parse_failure

#: Name of the device profiles file in a user's space.
DEVICE_PROFILES_FILE: str = "devices.json"
#: Most profiles a file keeps (a longer file is refused).
MAX_PROFILES: int = 50
#: Longest profile name, in characters.
NAME_MAX_CHARS: int = 60


@dataclass(frozen=True)
class DeviceProfile:
    """A named device and its pixel size (mm per px, 0 < value <= :data:`MAX_PIXEL_SIZE_MM`)."""

    name: str
    pixel_size_mm: float


@dataclass(frozen=True)
class DeviceProfiles:
    """The profiles of a file, in the order saved, and the name of the one used last ('' for none)."""

    profiles: tuple[DeviceProfile, ...] = ()
    last: str = ""

    def named(self, name: str) -> DeviceProfile | None:
        """The profile called ``name``, or None."""
        return next((profile for profile in self.profiles if profile.name == name), None)


def checked_pixel_size(pixel_size_mm: float) -> float:
    """A pixel size a user gave (mm per px), as a float: above 0 and at most
    :data:`moleseg.core.config.MAX_PIXEL_SIZE_MM`.

    Raises
    ------
    ValueError
        Any other value (NaN and infinity included), saying the bounds.
    """
    size = float(pixel_size_mm)
    if not (math.isfinite(size) and 0 < size <= MAX_PIXEL_SIZE_MM):
        raise ValueError(f"the pixel size must be above 0 and at most {MAX_PIXEL_SIZE_MM:g} mm per px")
    return size


def checked_profile(name: str, pixel_size_mm: float) -> DeviceProfile:
    """A profile from what a user typed: the name stripped, 1..:data:`NAME_MAX_CHARS` characters, the pixel
    size above 0 and at most :data:`MAX_PIXEL_SIZE_MM`.

    Raises
    ------
    ValueError
        Saying what is wrong.
    """
    name = " ".join(str(name).split())
    if not name:
        raise ValueError("give the device a name")
    if len(name) > NAME_MAX_CHARS:
        raise ValueError(f"a device name has at most {NAME_MAX_CHARS} characters")
    return DeviceProfile(name, checked_pixel_size(pixel_size_mm))


def read_profiles(path: str | Path) -> DeviceProfiles:
    """The profiles of the file ``path``; none when it does not exist.

    Raises
    ------
    ValueError
        ``"<path>: <reason>"`` when the file cannot be read or is not a profiles file.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return DeviceProfiles()
    except (OSError, ValueError, RecursionError) as error:  # not UTF-8 or JSON, nested too deeply, long numbers
        raise ValueError(f"{path}: not a device profiles file ({parse_failure(error)})") from None
    if not isinstance(data, dict) or not isinstance(data.get("profiles"), list):
        raise ValueError(f"{path}: not a device profiles file (no list of profiles)")
    if len(data["profiles"]) > MAX_PROFILES:
        raise ValueError(f"{path}: more than {MAX_PROFILES} device profiles")
    profiles = []
    for entry in data["profiles"]:
        try:
            profiles.append(checked_profile(entry["name"], entry["pixel_size_mm"]))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}: a device profile is not valid ({first_line(error)})") from None
    last = data.get("last")
    return DeviceProfiles(tuple(profiles), last if isinstance(last, str) else "")


def write_profiles(path: str | Path, profiles: DeviceProfiles) -> None:
    """Write ``profiles`` to ``path`` atomically (its folder created when missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"profiles": [{"name": p.name, "pixel_size_mm": p.pixel_size_mm} for p in profiles.profiles],
            "last": profiles.last}
    atomic_write(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def save_profile(path: str | Path, profile: DeviceProfile) -> DeviceProfiles:
    """Add ``profile`` to the file ``path`` (replacing the one of the same name) and make it the last used.

    Raises
    ------
    ValueError
        The file is not a profiles file, or it already holds :data:`MAX_PROFILES` others.
    """
    with path_lock(path):  # read, add, write: two sessions of a user may save at once
        current = read_profiles(path)
        others = tuple(p for p in current.profiles if p.name != profile.name)
        if len(others) >= MAX_PROFILES:
            raise ValueError(f"{path}: already {MAX_PROFILES} device profiles; remove one first")
        saved = DeviceProfiles(others + (profile,), profile.name)
        write_profiles(path, saved)
    return saved


def choose_profile(path: str | Path, name: str) -> DeviceProfiles:
    """Remember ``name`` ('' for none) as the last used profile of the file ``path``.

    Raises
    ------
    ValueError
        The file is not a profiles file, or has no profile called ``name``.
    """
    with path_lock(path):
        current = read_profiles(path)
        if name and current.named(name) is None:
            raise ValueError(f"{path}: no device profile called {name!r}")
        chosen = DeviceProfiles(current.profiles, name)
        if chosen != current:
            write_profiles(path, chosen)
    return chosen
