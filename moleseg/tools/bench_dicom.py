"""Peak memory of reading the first frame of a large multi-frame DICOM file from a path.

Writes a native (Explicit VR Little Endian, RGB) and a JPEG Baseline multi-frame file of about ``--mib`` MiB each
into a temporary folder, then reads each with :func:`moleseg.core.imageio.read_image` in a fresh Python process
and prints that process's peak resident set size (``VmHWM``, Linux), beside a process that reads a one-frame
file of the same size (what the interpreter, numpy and pydicom cost)::

    python -m moleseg.tools.bench_dicom --mib 1024

The files are written a frame at a time (this process stays small too) and removed afterwards.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

#: Rows and columns of the frames written.
SIDE = 1024
#: The reading process: its own peak RSS is ``VmHWM`` (getrusage's ``ru_maxrss`` keeps the parent's across
#: fork and exec, which would hide a peak below this process's).
_CHILD = """
import json, sys
import numpy as np
from moleseg.core.imageio import read_image
def peak():
    status = open("/proc/self/status").read()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024
imported = peak()
image = read_image(sys.argv[1])
print(json.dumps({"shape": list(image.shape), "sum": int(image.sum(dtype=np.int64)),
                  "imported_peak_rss_mib": round(imported, 1), "peak_rss_mib": round(peak(), 1)}))
"""


def _frame(seed: int) -> np.ndarray:
    """A ``SIDE x SIDE`` RGB frame, smooth (a JPEG of it stays small) and different for each ``seed``."""
    ramp = np.add.outer(np.arange(SIDE), np.arange(SIDE) * (seed % 7 + 1))
    return np.stack([(ramp + 40 * channel + seed) % 256 for channel in range(3)], axis=-1).astype(np.uint8)


def _header(syntax: str, frames: int) -> bytes:
    """The file up to its Pixel Data element: a Dermoscopic Photography dataset of ``frames`` RGB frames."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DermoscopicPhotographyImageStorage, JPEGBaseline8Bit, generate_uid

    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = syntax
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID = DermoscopicPhotographyImageStorage
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID = generate_uid()
    dataset.Rows = dataset.Columns = SIDE
    dataset.NumberOfFrames = frames
    dataset.SamplesPerPixel, dataset.PlanarConfiguration = 3, 0
    dataset.PhotometricInterpretation = "YBR_FULL_422" if syntax == JPEGBaseline8Bit else "RGB"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 8, 8, 7, 0
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_native(path: Path, frames: int) -> None:
    """A native multi-frame file of ``frames`` frames (frame ``i`` is ``_frame(i)``)."""
    from pydicom.uid import ExplicitVRLittleEndian

    with open(path, "wb") as out:
        out.write(_header(ExplicitVRLittleEndian, frames))
        out.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, frames * SIDE * SIDE * 3))
        for index in range(frames):
            out.write(_frame(index).tobytes())


def write_jpeg(path: Path, frames: int) -> None:
    """A JPEG Baseline multi-frame file with a Basic Offset Table: frame 0 is ``_frame(0)``, the others one
    larger JPEG repeated."""
    from PIL import Image
    from pydicom.uid import JPEGBaseline8Bit

    def jpeg(pixels: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=100, subsampling=0)
        data = buffer.getvalue()
        return data + b"\0" * (len(data) % 2)

    first, other = jpeg(_frame(0)), jpeg(np.random.default_rng(0).integers(0, 256, (SIDE, SIDE, 3), np.uint8))
    sizes = [len(first)] + [len(other)] * (frames - 1)
    offsets = np.concatenate([[0], np.cumsum(np.asarray(sizes[:-1], np.int64) + 8)])
    with open(path, "wb") as out:
        out.write(_header(JPEGBaseline8Bit, frames))
        out.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF))
        out.write(struct.pack("<HHI", 0xFFFE, 0xE000, 4 * frames) + struct.pack(f"<{frames}I", *offsets))
        for index in range(frames):
            out.write(struct.pack("<HHI", 0xFFFE, 0xE000, sizes[index]) + (first if index == 0 else other))
        out.write(struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))


def read_in_fresh_process(path: Path) -> dict:
    """The first frame's shape and sum and the peak RSS (MiB) of a fresh process that reads ``path``, and its
    peak before reading (the imports)."""
    done = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=1024, help="size of each multi-frame file in MiB")
    parser.add_argument("--folder", type=Path, default=None, help="where to write the files (a temp folder)")
    args = parser.parse_args(argv)
    frame_mib = SIDE * SIDE * 3 / 2**20
    frames = max(2, round(args.mib / frame_mib))
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        files = {"native, 1 frame": (write_native, 1), f"native, {frames} frames": (write_native, frames),
                 f"JPEG, {frames} frames": (write_jpeg, frames)}
        for name, (write, count) in files.items():
            path = Path(folder) / f"{name.replace(', ', '_').replace(' ', '')}.dcm"
            write(path, count)
            result = read_in_fresh_process(path)
            print(json.dumps({"file": name, "file_mib": round(path.stat().st_size / 2**20, 1), **result}))
            path.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
