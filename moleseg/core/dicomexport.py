"""Writing results as DICOM: a lesion mask as a DICOM Segmentation (highdicom) that references its source
image, and a PDF report as an Encapsulated PDF (pydicom), in the source image's study.

The source is the DICOM file the image came from (:func:`moleseg.core.dicomio.read_dataset`), or, for any
other image, a new Secondary Capture made of its pixels (:func:`secondary_capture`), which the caller writes
beside the Segmentation so that the reference resolves. A DICOM source's header is copied whole only with
``include_identifiers=True``; otherwise only :data:`REFERENCE_ATTRIBUTES` are kept (the instance UIDs that
link the objects, the pixel geometry) and the type 2 patient and study attributes are present and empty.

An export without identifiers names nothing after the image's file either (clinicians name files after patients):
its files, the report's DocumentTitle and the PDF report inside it call the image :func:`neutral_name` of its
pixels instead of the file's stem.
"""

from __future__ import annotations

import copy
import io
from datetime import datetime
from typing import Any, Callable

import numpy as np

__all__ = ["NEUTRAL_ID_DIGITS", "NEUTRAL_WORD", "REFERENCE_ATTRIBUTES", "UnreferenceableSource", "encapsulated_pdf",
           "export_stem", "neutral_file_name", "neutral_name", "reference_source", "secondary_capture", "segmentation",
           "segmentation_files"]

#: The only attributes of a DICOM source an export keeps unless a user asks for identifiers: what links the
#: objects and describes the pixels. Anything else (the Patient, Patient Study, Clinical Trial and equipment
#: modules: other names and IDs, birth time, comments, history, physicians, private tags...) would be copied
#: into the Segmentation by highdicom, so the header is rebuilt from this list rather than emptied by name.
REFERENCE_ATTRIBUTES: tuple[str, ...] = (
    "SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
    "FrameOfReferenceUID", "Modality", "ImageType", "Rows", "Columns", "NumberOfFrames", "SamplesPerPixel",
    "PhotometricInterpretation", "PlanarConfiguration", "BitsAllocated", "BitsStored", "HighBit",
    "PixelRepresentation", "PixelSpacing", "ImagerPixelSpacing", "PixelSpacingCalibrationType",
    "ImageOrientationPatient", "ImagePositionPatient", "SliceThickness", "SpacingBetweenSlices",
    "PatientOrientation", "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence")
#: Type 2 attributes highdicom copies from a source image; a source without them gets them empty.
_TYPE_2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
           "ReferringPhysicianName", "StudyID", "AccessionNumber")
_MANUFACTURER = "moleseg"
_SEGMENT_LABEL = "lesion"
#: What an export without identifiers calls an image instead of its file's stem: this word, a hyphen and the first
#: :data:`NEUTRAL_ID_DIGITS` hex digits of the SHA-256 of its decoded pixels
#: (:func:`moleseg.core.dataset.image_sha256`). Derived from the pixels, not the name, so the same picture gets
#: the same name in every export, the app's and ``moleseg predict``'s, whatever its file is called or its format;
#: a Secondary Capture's SOP Instance UID is new at each export, so its tail would not be stable.
NEUTRAL_WORD: str = "lesion"
#: Hex digits of the pixels' digest in :func:`neutral_name` (32 bits: two different images of 10,000 share a name
#: about once in a hundred such sets; ``moleseg predict`` refuses to let one replace the other's files).
NEUTRAL_ID_DIGITS: int = 8


def _uid() -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid())


def neutral_name(pixel_sha256: str) -> str:
    """The name an export without identifiers gives an image, ``lesion-1a2b3c4d``, from the hex SHA-256 of its
    pixels (:func:`moleseg.core.dataset.image_sha256`)."""
    return f"{NEUTRAL_WORD}-{pixel_sha256[:NEUTRAL_ID_DIGITS]}"


def neutral_file_name(pixel_sha256: str, file_name: str) -> str:
    """What an export without names calls the image file ``file_name``: :func:`neutral_name` of its pixels with
    the file's extension in lower case (none when it has none; ``lesion-1a2b3c4d.png``)."""
    from pathlib import PurePosixPath

    return neutral_name(pixel_sha256) + PurePosixPath(file_name.replace("\\", "/")).suffix.lower()


def export_stem(stem: str, pixel_sha256: str, *, include_identifiers: bool) -> str:
    """What a DICOM export calls an image: its file's ``stem`` with identifiers, else :func:`neutral_name` of
    the hex SHA-256 of its pixels."""
    return stem if include_identifiers else neutral_name(pixel_sha256)


def reference_source(dataset: Any, *, include_identifiers: bool = False) -> Any:
    """A copy of a source image's header fit to be referenced: only :data:`REFERENCE_ATTRIBUTES` unless
    identifiers are asked for (then every attribute), the type 2 patient and study attributes present (empty
    unless asked and given), the pixel data left out."""
    from pydicom.datadict import tag_for_keyword
    from pydicom.dataset import Dataset
    from pydicom.tag import Tag

    kept = None if include_identifiers else {Tag(tag_for_keyword(keyword)) for keyword in REFERENCE_ATTRIBUTES}
    # element by element: the file the dataset was read from is closed and not copied
    source = Dataset({tag: copy.deepcopy(element) for tag, element in dataset.items()
                      if tag != Tag("PixelData") and (kept is None or tag in kept)})
    for keyword in _TYPE_2:
        if keyword not in source:
            setattr(source, keyword, "")
    return source


class UnreferenceableSource(ValueError):
    """A source image whose header a DICOM Segmentation cannot reference (a UID missing, an unknown character set,
    a value of the wrong kind)."""


def secondary_capture(image: np.ndarray, *, pixel_size_mm: float | None = None) -> Any:
    """A new Secondary Capture (highdicom ``SCImage``) of an RGB image, in a new study, without identifiers.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W, 3) uint8`` RGB.
    pixel_size_mm : float, optional
        mm per pixel, written as ``PixelSpacing``.
    """
    import highdicom as hd

    return hd.sc.SCImage(
        pixel_array=np.ascontiguousarray(image, dtype=np.uint8), photometric_interpretation="RGB",
        bits_allocated=8, coordinate_system="PATIENT", study_instance_uid=_uid(), series_instance_uid=_uid(),
        series_number=1, sop_instance_uid=_uid(), instance_number=1, manufacturer=_MANUFACTURER,
        patient_orientation=("L", "F"),
        pixel_spacing=(pixel_size_mm, pixel_size_mm) if pixel_size_mm else None)


def segmentation(mask: np.ndarray, source: Any, *, software_version: str, model_name: str) -> bytes:
    """A binary DICOM Segmentation of one lesion mask referencing ``source``.

    Parameters
    ----------
    mask : numpy.ndarray
        ``(H, W) bool``, the source image's size (``Rows x Columns``).
    source : pydicom.Dataset
        The referenced image: :func:`reference_source` of a DICOM file, or :func:`secondary_capture`.
    software_version, model_name
        Recorded as the algorithm's version and the manufacturer's model name.

    Returns
    -------
    bytes
        The Segmentation file (DICOM part 10, explicit VR little endian).

    Raises
    ------
    ValueError
        The mask is not the source's size, or the source's header cannot be referenced.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (int(source.Rows), int(source.Columns)):
        raise ValueError(f"the mask is {mask.shape[1]} x {mask.shape[0]} px but its source image is "
                         f"{source.Columns} x {source.Rows} px")
    description = hd.seg.SegmentDescription(
        segment_number=1, segment_label=_SEGMENT_LABEL,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=_MANUFACTURER, version=software_version or "unknown", family=codes.cid7162.ArtificialIntelligence))
    try:
        result = hd.seg.Segmentation(
            source_images=[source], pixel_array=mask, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[description], series_instance_uid=_uid(), series_number=100,
            sop_instance_uid=_uid(), instance_number=1, manufacturer=_MANUFACTURER,
            manufacturer_model_name=model_name or _MANUFACTURER, software_versions=software_version or "unknown",
            device_serial_number="0", omit_empty_frames=False)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:  # a source header highdicom cannot use
        raise UnreferenceableSource(f"cannot make a DICOM Segmentation referencing this image ({exc})") from exc
    for group in result.get("SharedFunctionalGroupsSequence", []):
        for measures in group.get("PixelMeasuresSequence", []):
            if "SliceThickness" not in measures:  # a photograph has none; empty, the spacing reads back
                measures.SliceThickness = None
    buffer = io.BytesIO()
    result.save_as(buffer)
    return buffer.getvalue()


def encapsulated_pdf(pdf: bytes, source: Any, *, title: str) -> bytes:
    """A PDF as a DICOM Encapsulated PDF in ``source``'s study, referencing ``source`` (its header is copied
    as it is: pass :func:`reference_source` to keep identifiers out).

    Returns
    -------
    bytes
        The Encapsulated PDF file (DICOM part 10, explicit VR little endian).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import EncapsulatedPDFStorage, ExplicitVRLittleEndian

    now = datetime.now()
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta.MediaStorageSOPClassUID = EncapsulatedPDFStorage
    dataset.SOPClassUID = EncapsulatedPDFStorage
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = _uid()
    for keyword in (*_TYPE_2, "StudyInstanceUID"):
        setattr(dataset, keyword, source.get(keyword, ""))
    dataset.SeriesInstanceUID = _uid()
    dataset.Modality = "DOC"
    dataset.SeriesNumber = 101
    dataset.InstanceNumber = 1
    dataset.Manufacturer = _MANUFACTURER
    dataset.ConversionType = "WSD"
    dataset.ContentDate = now.strftime("%Y%m%d")
    dataset.ContentTime = now.strftime("%H%M%S")
    dataset.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    dataset.BurnedInAnnotation = "NO"
    dataset.DocumentTitle = title
    dataset.ConceptNameCodeSequence = []
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    dataset.SourceInstanceSequence = [reference]
    dataset.MIMETypeOfEncapsulatedDocument = "application/pdf"
    data = bytes(pdf)
    dataset.EncapsulatedDocumentLength = len(data)
    dataset.EncapsulatedDocument = data + (b"\x00" if len(data) % 2 else b"")
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def segmentation_files(image_source: Any, mask: np.ndarray, stem: str, *, software_version: str, model_name: str,
                       pixel_size_mm: float | None = None, include_identifiers: bool = False,
                       pdf: Callable[[str], bytes] | None = None, name: str | None = None,
                       pixel_sha256: str | None = None) -> dict[str, bytes]:
    """The DICOM files of one analysed image: ``<name>_seg.dcm`` (the Segmentation), ``<name>_report.dcm``
    (the PDF report as an Encapsulated PDF, when ``pdf`` is given) and, when the image is not a DICOM file,
    ``<name>_source.dcm``: the Secondary Capture of its pixels that both reference; so too for a DICOM file whose
    header cannot be referenced (:class:`UnreferenceableSource`: it was a failed download). ``<name>`` is
    :func:`export_stem`: ``stem`` with identifiers, else :func:`neutral_name` of the image's pixels.

    Parameters
    ----------
    image_source : bytes or path or binary file
        The image file the mask was made from (any format :func:`moleseg.core.imageio.read_image` reads).
    mask : numpy.ndarray
        ``(H, W) bool`` lesion mask, the image's size.
    stem : str
        The image file's stem: the files' names with identifiers only.
    include_identifiers : bool
        Copy a DICOM source's whole header, its patient and study identifiers included, and name the files and
        the report after ``stem`` (default: only :data:`REFERENCE_ATTRIBUTES`, the patient and study attributes
        empty, the neutral name).
    pdf : callable, optional
        Makes the PDF report for the image name it is given (the export's name of the image).
    name : str, optional
        The file's name, for the readers' messages only.
    pixel_sha256 : str, optional
        The hex SHA-256 of the image's decoded pixels when the caller has it already
        (:attr:`moleseg.engine.pipeline.Analysis.pixel_sha256`): a DICOM source is then not decoded again.

    Raises
    ------
    ValueError
        The image cannot be read (:class:`moleseg.core.imageio.ImageReadError`,
        :class:`moleseg.core.dicomio.DicomReadError`), or the mask is not its size.
    """
    from moleseg.core.dataset import image_sha256
    from moleseg.core.dicomio import read_dataset
    from moleseg.core.imageio import read_image

    files: dict[str, bytes] = {}
    dataset = read_dataset(image_source, name=name)
    needs_pixels = dataset is None or not (include_identifiers or pixel_sha256)  # a DICOM source decoded only so
    image = read_image(image_source, name=name) if needs_pixels else None
    digest = "" if include_identifiers else pixel_sha256 or image_sha256(image)
    shown = export_stem(stem, digest, include_identifiers=include_identifiers)

    def captured() -> Any:
        pixels = image if image is not None else read_image(image_source, name=name)
        capture = secondary_capture(pixels, pixel_size_mm=pixel_size_mm)
        buffer = io.BytesIO()
        capture.save_as(buffer)
        files[f"{shown}_source.dcm"] = buffer.getvalue()
        return capture

    source = captured() if dataset is None else reference_source(dataset, include_identifiers=include_identifiers)
    try:
        seg = segmentation(mask, source, software_version=software_version, model_name=model_name)
    except UnreferenceableSource:
        if dataset is None:
            raise
        source = captured()
        seg = segmentation(mask, source, software_version=software_version, model_name=model_name)
    files[f"{shown}_seg.dcm"] = seg
    if pdf is not None:
        files[f"{shown}_report.dcm"] = encapsulated_pdf(pdf(shown), source, title=f"moleseg report: {shown}")
    return files
