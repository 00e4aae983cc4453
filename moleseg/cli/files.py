"""``moleseg predict``, ``moleseg merge`` and ``moleseg prepare``: image or mask files in, result files out
(segmentations and measurements, whole or in shards, optionally as DICOM; the shards' tables joined; training
label images), with their argument types.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from moleseg.core.config import default_model_spec, result_file_name
from moleseg.core.errors import folder_not_found
from moleseg.core.words import count_of, noun_for

from moleseg.cli.common import (CommandError, ProgressBar, check_out_not_an_input, failures_exit,
                                open_model, output_folder, printable, say, skipped_line, write_table)

if TYPE_CHECKING:
    from moleseg.engine.shards import Shard


def _input_files(inputs: Sequence[str], failures: list[tuple[str, str]]) -> list[Path]:
    """The image files of ``inputs`` (files and folders), each file once (a file given again, or also through
    its folder, is not segmented twice); a missing input is added to ``failures``."""
    from moleseg.core.pairing import list_images

    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files.extend(list_images(path))
        elif path.is_file():
            files.append(path)
        else:  # a link that loops, or leads to nothing, is not "not found": the name is there
            failures.append((item, f"{item}: " + ("a link that leads to no file or folder (a loop, or its target is "
                                                  "missing)" if path.is_symlink() else "not found")))
    unique: dict[Path, Path] = {}
    for file in files:
        unique.setdefault(file.resolve(), file)
    files = list(unique.values())
    if not files:
        for name, reason in failures:
            print(skipped_line(name, reason), file=sys.stderr)
        raise CommandError("no image files to process" + (" (" + "; ".join(
            printable(reason) for _, reason in failures) + ")" if failures else ""))
    return files


def parse_threshold(text: str) -> float | str | None:
    """``--lesion-threshold``: a probability in 0..1, ``argmax`` (None) or ``model`` (the model's calibrated
    threshold, :data:`moleseg.engine.segmenter.MODEL_THRESHOLD`)."""
    if text == "argmax":
        return None
    if text == "model":
        from moleseg.engine.segmenter import MODEL_THRESHOLD

        return MODEL_THRESHOLD
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a probability, 'argmax' or 'model'") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a lesion threshold must be in 0..1, not {value}")
    return value


def parse_outline_formats(text: str) -> tuple[str, ...]:
    """``--outlines``: comma-separated names of :data:`moleseg.core.outlines.OUTLINE_FORMATS`."""
    from moleseg.core.outlines import OutlineError, parse_formats

    try:
        return parse_formats(text)
    except OutlineError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_shard(text: str) -> Shard:
    """``--shard``: ``I/N`` (:class:`moleseg.engine.shards.Shard`)."""
    from moleseg.engine.shards import Shard, ShardError

    try:
        return Shard.parse(text)
    except ShardError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def cmd_predict(args: argparse.Namespace) -> int:
    from moleseg.core.modelinfo import ModelInfo
    from moleseg.core.report import MEASUREMENTS_CSV, OBJECTS_CSV, settings_sidecar, sidecar_name
    from moleseg.engine.predictfiles import output_stems, predict_files
    from moleseg.engine.shards import shard_positions, write_manifest

    if not args.with_names and (args.dicom_identifiers or args.shard):
        raise CommandError("--without-names and " + ("--dicom-identifiers contradict each other: the DICOM files "
                           "would keep the names" if args.dicom_identifiers else "--shard cannot be used together: a "
                           "shard's manifest names every input, for moleseg merge"))
    failures: list[tuple[str, str]] = []
    files = _input_files(args.inputs, failures)
    keys, names, positions = [str(file) for file in files], output_stems(files), list(range(len(files)))
    if args.shard is not None:  # named as in a single run of the whole archive
        positions = shard_positions(keys, args.shard)
        files, names = [files[p] for p in positions], [names[p] for p in positions]
    csv_name = args.shard.table_name(MEASUREMENTS_CSV) if args.shard else MEASUREMENTS_CSV
    objects_name = args.shard.table_name(OBJECTS_CSV) if args.shard else OBJECTS_CSV
    check_out_not_an_input(args.out, args.inputs, "its results would mix with the images there (a true "
                            "<name>_mask.png replaced, the results read as images by the next run)")
    segmenter = open_model(args.model or default_model_spec(), args.tta)  # before --out: no empty folder left
    version = ModelInfo.from_dict(segmenter.info).version_text
    with output_folder(args.out) as out:
        bar = ProgressBar(len(files), f"predicting with {segmenter.name}", args.quiet)
        try:
            outcome = predict_files(segmenter, files, out, batch_size=args.batch_size,
                                    pixel_size_mm=args.pixel_size_mm, lesion_threshold=args.lesion_threshold,
                                    outlines=args.outlines,
                                    model_version=version,
                                    progress=bar.update_to, output_names=names, with_names=args.with_names,
                                    note=lambda name, message: say(args, f"{printable(name)}: {message}"))
        finally:
            bar.close()
        rows, stopped, object_rows, settings = outcome.rows, outcome.stopped, outcome.object_rows, outcome.settings
        failures.extend(outcome.failures)
        if not args.with_names:  # named after the pixels: say which image they are (the table no longer does)
            for row in rows:
                say(args, f"{printable(row['source'])}: {row['output']}")
        if args.dicom_seg and not stopped:
            failures.extend(_write_dicom(args, out, rows, segmenter.name, version))
        if rows or (args.shard and not stopped):
            from moleseg.core.atomic import atomic_write

            try:
                write_table(out / csv_name, rows if args.with_names else [
                    {key: value for key, value in row.items() if key != "source"} for row in rows])
                atomic_write(out / sidecar_name(csv_name), settings_sidecar(csv_name, settings))
                if object_rows:
                    write_table(out / objects_name, object_rows)
                if args.shard and not stopped:  # last: a shard without its manifest did not finish (Ctrl-C, full disk)
                    done = {row["source"] for row in rows}
                    reasons = dict(reversed(outcome.failures))
                    write_manifest(out, args.shard, keys, positions,
                                   [(keys[p], reasons.get(Path(keys[p]).name, "not processed")) for p in positions
                                    if keys[p] not in done], MEASUREMENTS_CSV, objects_name if object_rows else None)
            except OSError as error:
                raise CommandError(f"{count_of(len(rows), 'image')} written to {printable(str(out))}, but {csv_name} "
                                   f"could not be written ({error.strerror or error})") from error
        shard = f" (shard {args.shard.text}: {len(files)} of {len(keys)} inputs)" if args.shard else ""
        print(f"{count_of(len(rows), 'image')} written to {printable(str(out))}{shard}")
        if stopped:
            failures_exit(failures)
            if outcome.interrupted:  # the table of what was written is there: end as Ctrl-C does
                raise KeyboardInterrupt
            raise CommandError(stopped)
        return failures_exit(failures)


def _write_dicom(args: argparse.Namespace, out: Path, rows: Sequence[dict], model_name: str,
                 version: str) -> list[tuple[str, str]]:
    """``--dicom-seg``: each written image's mask as ``<name>_seg.dcm`` (and ``<name>_source.dcm`` for an image
    that is not DICOM), :func:`moleseg.core.dicomexport.segmentation_files`, ``<name>`` the output's stem with
    ``--dicom-identifiers``, else a neutral name made from the pixels (each said on stderr with the input's name,
    unless ``--quiet``); the failures."""
    from moleseg import __version__
    from moleseg.core.atomic import atomic_write
    from moleseg.core.dicomexport import segmentation_files
    from moleseg.core.imageio import read_mask

    failures: list[tuple[str, str]] = []
    written: dict[str, str] = {}  # file name: the input it was written for
    for row in rows:
        source, stem = Path(row["source"]), row["output"]
        try:
            mask = read_mask(out / result_file_name(stem, "mask"), allow_empty=True)
            files = segmentation_files(source, mask, stem, software_version=f"moleseg {__version__} {version}".strip(),
                                       model_name=model_name, pixel_size_mm=args.pixel_size_mm,
                                       include_identifiers=args.dicom_identifiers)
            taken = next((written[name] for name in files if name in written), None)
            if taken is not None:  # the same pixels (or their digest's first digits) as an earlier input's
                raise ValueError(f"its files would replace those of {taken}, whose pixels give the same name; "
                                 "--dicom-identifiers names them after the files")
            written.update(dict.fromkeys(files, source.name))
            for name, data in files.items():
                atomic_write(out / name, data)
            if not args.dicom_identifiers and args.with_names:  # named after the pixels: say which image they are
                say(args, f"{printable(source.name)}: {', '.join(files)}")
        except (ValueError, OSError) as error:  # an unreadable image, a mask of another size, a full disk
            failures.append((source.name, f"{source.name}: no DICOM Segmentation written ({error})"))
    return failures


def cmd_merge(args: argparse.Namespace) -> int:
    from moleseg.core.report import MEASUREMENTS_CSV, OBJECTS_CSV
    from moleseg.engine.shards import ShardError, merge_shards

    folders = [Path(folder) for folder in args.folders]
    for folder in folders:  # before --out, which is the first of them unless given
        if not folder.is_dir():
            raise CommandError(f"{printable(str(folder))} is a file, not a shard folder" if folder.exists()
                               else folder_not_found(printable(str(folder))))
    with output_folder(args.out or args.folders[0]) as out:
        try:
            outcome = merge_shards(folders, out, MEASUREMENTS_CSV, OBJECTS_CSV)
        except ShardError as error:
            raise CommandError(str(error)) from None
        print(f"{count_of(outcome.rows, 'image')} of {count_of(outcome.shards, 'shard')} merged into "
              f"{printable(str(out / MEASUREMENTS_CSV))}")
        return failures_exit(outcome.failures)


def cmd_prepare(args: argparse.Namespace) -> int:
    from moleseg.core.imageio import ImageReadError, mask_problem, read_mask
    from moleseg.core.imagewrite import write_png
    from moleseg.core.pairing import list_images
    from moleseg.core.config import class_names
    from moleseg.core.targets import class_frequencies, make_targets
    from moleseg.engine.predictfiles import output_stems

    masks = list_images(args.masks) if Path(args.masks).is_dir() else []
    if not Path(args.masks).is_dir():
        raise CommandError(f"--masks {printable(args.masks)} is a file, not a folder of masks"
                           if Path(args.masks).exists() else folder_not_found(args.masks))
    if not masks:
        raise CommandError(f"no mask images in {args.masks}")
    check_out_not_an_input(args.out, [args.masks], "the label images would replace the masks of the same name")
    with output_folder(args.out) as out:
        stems = dict(zip(masks, output_stems(masks)))  # m.png and m.tif: m_png.png and m_tif.png
        failures: list[tuple[str, str]] = []
        degenerate = {"empty": 0, "full": 0}
        totals = None
        bar = ProgressBar(len(masks), "preparing targets", args.quiet)
        try:
            for index, path in enumerate(masks, start=1):
                try:
                    mask = read_mask(path, allow_empty=True)
                except ImageReadError as error:
                    failures.append((path.name, str(error)))
                    continue
                problem = mask_problem(mask)
                if problem is not None:
                    degenerate["full" if mask.any() else "empty"] += 1
                    print(f"warning: {printable(path.name)}: {problem}", file=sys.stderr)
                labels = make_targets(mask, classes=args.classes, border_width_px=args.border_width_px,
                                      shape=args.shape, border_at_image_edge=args.border_at_image_edge)
                write_png(out / f"{stems[path]}.png", labels.astype("uint8"))
                frequencies = class_frequencies(labels, args.classes) * labels.size
                totals = frequencies if totals is None else totals + frequencies
                bar.update_to(index)
        finally:
            bar.close()
        if totals is not None:
            share = totals / totals.sum()
            print(f"{count_of(len(masks) - len(failures), 'label image')} written to {out}; class frequencies "
                  + ", ".join(f"{name} {value:.4f}" for name, value in
                              zip(class_names(args.classes), share)))
        if degenerate["empty"] or degenerate["full"]:
            odd = degenerate["empty"] + degenerate["full"]
            print(f"warning: {degenerate['empty']} empty and {degenerate['full']} full {noun_for(odd, 'mask')} "
                  "among them", file=sys.stderr)
        return failures_exit(failures)
