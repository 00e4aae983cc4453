"""The per-user disk quota (``user_quota_gb``): the usage walk and its cache, the refusal's sentence, and the
writes it stops (a training start, a save to "My dataset", a save to the records). No training; about 3 s."""

from __future__ import annotations

import pytest

from app_helpers import analysed_mole, app_test, texts
from synthetic import mole_image
from moleseg.app import quota
from moleseg.app.identity import personal_user
from moleseg.app.ui import PAGE_FILES
from moleseg.core import diskusage
from moleseg.core.config import USER_USAGE_CACHE_S
from moleseg.core.markup import plain_markdown
from moleseg.core.settings import load_settings
from moleseg.engine.records import Records
from moleseg.engine.session import SessionFolder, owned_session_folders


@pytest.fixture
def empty_usage_cache(monkeypatch):
    """The process's usage cache, empty for this test: what other tests measured (and when) stays out of it."""
    monkeypatch.setattr(diskusage, "_cache", {})


def test_the_usage_is_every_file_under_the_folders_links_not_followed_and_cached(tmp_path, empty_usage_cache):
    (tmp_path / "space" / "runs" / "r1").mkdir(parents=True)
    (tmp_path / "space" / "runs" / "r1" / "model.keras").write_bytes(b"x" * 1000)
    (tmp_path / "space" / "devices.json").write_bytes(b"y" * 24)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "big").write_bytes(b"z" * 10_000)
    (tmp_path / "space" / "link").symlink_to(tmp_path / "elsewhere")
    link_size = (tmp_path / "space" / "link").lstat().st_size
    assert diskusage.folder_bytes(tmp_path / "space") == 1024 + link_size
    assert diskusage.folder_bytes(tmp_path / "absent") == 0
    folders = [tmp_path / "space", tmp_path / "elsewhere"]
    assert diskusage.usage_bytes(folders, now=0.0) == 11_024 + link_size
    (tmp_path / "elsewhere" / "more").write_bytes(b"m" * 500)
    assert diskusage.usage_bytes(folders, now=USER_USAGE_CACHE_S / 2) == 11_024 + link_size  # believed a while
    assert diskusage.usage_bytes(folders, now=USER_USAGE_CACHE_S) == 11_524 + link_size


def test_the_usage_cache_forgets_measures_past_their_time(tmp_path, empty_usage_cache):
    """Before, every set of folders measured stayed cached for the server's life: a user's set changes with each
    session folder (a script opens any number) and each saved visit, hundreds of paths each time."""
    later = 1e12  # any time: the cache starts empty
    for number in range(3):
        session = tmp_path / f"moleseg-session-{number}"
        session.mkdir()
        (session / "a.png").write_bytes(b"x" * 10)
        assert diskusage.usage_bytes([tmp_path / "space", session], now=later + number * USER_USAGE_CACHE_S) == 10
    assert list(diskusage._cache) == [tuple(sorted([str(tmp_path / "space"), str(session)]))]


def test_the_refusal_gives_the_usage_the_quota_and_what_to_delete():
    assert diskusage.quota_refusal(25 * 10**9, 0, "delete x") is None  # no quota
    assert diskusage.quota_refusal(19 * 10**9, 20, "delete x") is None
    assert diskusage.quota_refusal(20_500_000_000, 20, "delete x") == (
        "Your files take 20.50 GB of your 20 GB quota on this server: delete x, then try again.")


@pytest.fixture
def over_quota(app_folders, monkeypatch, tmp_path):
    """Personal mode with a quota of 1,000 bytes and 2,000 bytes of runs: over it."""
    monkeypatch.setenv("MOLESEG_USER_QUOTA_GB", "0.000001")
    monkeypatch.setenv("MOLESEG_CORRECTIONS_DIR", str(tmp_path / "mine"))
    load_settings.cache_clear()
    (app_folders["runs"] / "old-run").mkdir()
    (app_folders["runs"] / "old-run" / "model.keras").write_bytes(b"x" * 2000)
    return app_folders


def test_over_quota_no_training_starts_and_nothing_is_saved(over_quota, tmp_path):
    """Before, a user of a shared server could fill its disk with runs, datasets and saved pictures."""
    runs = over_quota["runs"]
    with pytest.raises(quota.OverQuota) as refused:  # what the Train and Study pages call before a start
        quota.check_session_quota()
    assert str(refused.value) == (
        f"Your files take 0.00 GB of your 1e-06 GB quota on this server: delete saved visits you no longer need "
        f"on the History page, close the tabs holding an uploaded dataset, or ask the server's operator to remove "
        f"old runs, studies or images of My dataset from {runs}, then try again.")
    at = analysed_mole(mole_image(seed=1)[0])
    at.button(key="analyse_save").click().run()
    assert not at.exception
    assert [text for text in texts(at.error) if "quota" in text] == [f"Could not save: {refused.value}"]
    assert Records().records(personal_user()) == []
    at.button(key="analyse_dataset_save").click().run()
    assert not at.exception
    assert f"Could not save to {tmp_path / 'mine'}: {refused.value}" in texts(at.error)
    assert not (tmp_path / "mine").exists()  # nothing half written
    assert [path.name for path in runs.iterdir()] == ["old-run"]


def test_under_quota_the_saved_visits_pictures_count(app_folders, monkeypatch):
    user = personal_user()
    image, mask = mole_image(seed=2)
    Records().save(user, image, mask, [])
    pictures = sum(diskusage.folder_bytes(folder) for folder in Records().owned_folders(user.name))
    assert pictures > 1000
    monkeypatch.setenv("MOLESEG_USER_QUOTA_GB", str(pictures * 2 / diskusage.BYTES_PER_GB))
    load_settings.cache_clear()
    quota.check_session_quota()  # under: nothing said
    monkeypatch.setenv("MOLESEG_USER_QUOTA_GB", str(pictures / 2 / diskusage.BYTES_PER_GB))
    load_settings.cache_clear()
    with pytest.raises(quota.OverQuota):
        quota.check_session_quota()


def test_datasets_unpacked_in_a_user_s_sessions_count_and_over_the_quota_no_zip_is_unpacked(app_folders, monkeypatch):
    """Before, the datasets unpacked from uploaded ZIPs counted in no quota: up to 4 GiB in each session, and a
    script opens as many sessions as it likes, so one user could fill the server's temporary folder."""
    import io
    import zipfile

    user = personal_user()
    mine, theirs = SessionFolder(owner=user.name), SessionFolder(owner="someone else")
    for folder in (mine, theirs):
        (folder.fresh("dataset") / "big.bin").write_bytes(b"x" * 5000)
    assert owned_session_folders(user.name) == [mine.path]
    monkeypatch.setenv("MOLESEG_USER_QUOTA_GB", str(4000 / diskusage.BYTES_PER_GB))  # the runs are empty
    load_settings.cache_clear()
    with pytest.raises(quota.OverQuota) as refused:
        quota.check_session_quota()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("dataset/images/a.png", b"x")
        archive.writestr("dataset/masks/a.png", b"x")
    at = app_test(PAGE_FILES["prepare"])
    at.radio(key="prepare_source").set_value("a ZIP upload").run()
    at.file_uploader(key="prepare_zip").set_value(("moles.zip", buffer.getvalue(), "application/zip")).run()
    assert not at.exception and texts(at.error) == [f"moles.zip: {plain_markdown(str(refused.value))}"]
    assert [path for path in app_folders["tmp"].rglob("a.png")] == []  # nothing unpacked
    theirs.remove()
    mine.remove()
    quota.check_session_quota()  # their sessions gone: under the quota again
