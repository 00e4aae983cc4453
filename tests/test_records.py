"""Tests of moleseg.engine.records: save, reopen, list, delete, concurrency, crash mid-save."""

from __future__ import annotations

import io
import math
import multiprocessing
import sqlite3
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from moleseg.core.config import DATA_DIR_ENV, RECORDS_DB_NAME
from moleseg.core.measure import measure_lesion
from moleseg.engine import records as records_module
from moleseg.engine.records import MIGRATIONS, Records


def sample(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    mask = np.zeros((40, 50), bool)
    mask[10:30, 12 + seed % 5:35] = True
    return image, mask


def save_sample(records: Records, seed: int = 0, **fields) -> int:
    image, mask = sample(seed)
    return records.save(image, mask, measure_lesion(mask, pixel_size_mm=0.02, image=image), **fields)


def files_of(folder: Path) -> list[Path]:
    return sorted(p for p in (folder / "files").rglob("*") if p.is_file())


def test_save_and_reopen_identical(tmp_path):
    records = Records(tmp_path)
    image, mask = sample()
    measurements = measure_lesion(mask, pixel_size_mm=0.02, image=image)
    record_id = records.save(image, mask, measurements, lesion="left shoulder mole", visit_date="2026-03-01",
                             body_site="back", notes="first visit", image_name="a.jpg", model_name="dermoscopy",
                             model_version="1.2", cleanup={"rule": "article", "closing_radius_px": 15},
                             lesion_threshold=0.45, pixel_size_mm=0.02, corrected=True)
    saved = Records(tmp_path).open(record_id)  # a fresh instance: as after a server restart
    assert np.array_equal(saved.image, image) and saved.image.dtype == np.uint8
    assert np.array_equal(saved.mask, mask) and saved.mask.dtype == bool
    record = saved.record
    assert (record.lesion, record.visit_date, record.body_site, record.notes) == (
        "left shoulder mole", "2026-03-01", "back", "first visit")
    assert (record.model_name, record.model_version, record.lesion_threshold, record.pixel_size_mm) == (
        "dermoscopy", "1.2", 0.45, 0.02)
    assert record.cleanup == {"rule": "article", "closing_radius_px": 15}
    assert record.corrected is True
    assert [(m.key, m.unit, m.label, m.meaning) for m in record.measurements] == [
        (m.key, m.unit, m.label, m.meaning) for m in measurements]
    for got, expected in zip(record.measurements, measurements):
        assert got.value == expected.value or (math.isnan(got.value) and math.isnan(expected.value))


def test_identifier_is_optional_and_lists_group_by_lesion(tmp_path):
    records = Records(tmp_path)
    first = save_sample(records, 0, lesion="L1", visit_date="2026-01-10")
    second = save_sample(records, 1, lesion="L1", visit_date="2026-04-10")
    anonymous = save_sample(records, 2)
    lesions = {summary.lesion: summary for summary in records.lesions()}
    assert lesions["L1"].visits == 2
    assert (lesions["L1"].first_visit, lesions["L1"].last_visit) == ("2026-01-10", "2026-04-10")
    assert lesions[""].visits == 1
    assert [r.id for r in records.records("L1")] == [second, first]
    assert [r.id for r in records.records("")] == [anonymous]


def test_delete_removes_the_row_and_the_files(tmp_path):
    records = Records(tmp_path)
    keep = save_sample(records, 0)
    gone = save_sample(records, 1)
    uid = records.record(gone).uid
    assert (tmp_path / "files" / uid / "image.png").is_file()
    records.delete(gone)
    assert not (tmp_path / "files" / uid).exists()
    assert [r.id for r in records.records()] == [keep]
    with pytest.raises(KeyError):
        records.open(gone)
    assert len(files_of(tmp_path)) == 2


def test_crash_mid_save_leaves_no_half_record(tmp_path, monkeypatch):
    records = Records(tmp_path)
    save_sample(records, 0)
    before = files_of(tmp_path)

    def crash(connection, values):
        assert (tmp_path / "files" / values["uid"] / "mask.png").is_file()  # the files were written first
        raise OSError("simulated crash between the file writes and the commit")

    monkeypatch.setattr(records_module, "insert_analysis_row", crash)
    with pytest.raises(OSError, match="simulated crash"):
        save_sample(records, 1)
    monkeypatch.undo()
    assert len(records.records()) == 1
    assert files_of(tmp_path) == before
    assert len(list((tmp_path / "files").iterdir())) == 1


def test_failed_insert_rolls_back(tmp_path, monkeypatch):
    records = Records(tmp_path)
    real_insert = records_module.insert_analysis_row

    def insert_then_fail(connection, values):
        real_insert(connection, values)
        raise RuntimeError("failure after the insert, before the commit")

    monkeypatch.setattr(records_module, "insert_analysis_row", insert_then_fail)
    with pytest.raises(RuntimeError):
        save_sample(records, 0)
    assert records.records() == []
    assert files_of(tmp_path) == []


def test_concurrent_threads_all_saved(tmp_path):
    records = Records(tmp_path)
    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(lambda seed: save_sample(records, seed, lesion=f"L{seed % 3}"), range(24)))
    assert len(set(ids)) == 24
    assert sorted(r.id for r in records.records()) == sorted(ids)
    assert len(files_of(tmp_path)) == 48


def _save_in_process(folder: str, start: int, count: int) -> list[int]:
    records = Records(folder)
    return [save_sample(records, seed) for seed in range(start, start + count)]


def test_concurrent_processes_all_saved(tmp_path):
    context = multiprocessing.get_context("spawn")
    with context.Pool(3) as pool:
        results = pool.starmap(_save_in_process, [(str(tmp_path), 10 * k, 5) for k in range(3)])
    ids = [i for chunk in results for i in chunk]
    records = Records(tmp_path)
    assert sorted(r.id for r in records.records()) == sorted(ids)
    assert len(ids) == 15
    assert len(files_of(tmp_path)) == 30


def test_schema_is_versioned_and_in_wal_mode(tmp_path):
    records = Records(tmp_path)
    assert records.schema_version == len(MIGRATIONS)
    connection = sqlite3.connect(tmp_path / RECORDS_DB_NAME)
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    connection.execute("PRAGMA user_version = 99")
    connection.close()
    with pytest.raises(ValueError, match="newer moleseg"):
        Records(tmp_path)


def test_data_folder_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "elsewhere"))
    records = Records()
    assert records.path == tmp_path / "elsewhere" / RECORDS_DB_NAME
    assert records.path.is_file()


def test_bad_input_is_refused_without_a_trace(tmp_path):
    records = Records(tmp_path)
    image, mask = sample()
    with pytest.raises(ValueError, match="differ in size"):
        records.save(image, mask[:-1], [])
    with pytest.raises(ValueError, match="not a date"):
        records.save(image, mask, [], visit_date="yesterday")
    assert records.records() == [] and files_of(tmp_path) == []


def test_export_holds_the_files_and_the_settings(tmp_path):
    records = Records(tmp_path)
    record_id = save_sample(records, 0, lesion="L1", model_name="classical", pixel_size_mm=0.02)
    archive = zipfile.ZipFile(io.BytesIO(records.export(record_id)))
    names = set(archive.namelist())
    assert {f"record_{record_id}_image.png", f"record_{record_id}_mask.png",
            f"record_{record_id}_measurements.csv", f"record_{record_id}.json"} <= names
    assert b"area_mm2" in archive.read(f"record_{record_id}_measurements.csv")
    assert b'"pixel_size_mm": 0.02' in archive.read(f"record_{record_id}.json")
