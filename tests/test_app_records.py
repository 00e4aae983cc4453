"""The History and Compare pages and the Analyse page's "Save to records" form (AppTest); who the user is
(moleseg.app.identity) and what each page shows when the records database cannot be used."""

from __future__ import annotations

import datetime
import io
import ipaddress
import re
import zipfile
from dataclasses import replace

import numpy as np
import pytest

from app_helpers import analysed_mole, app_test, texts
from synthetic import mole_image, png_bytes
from moleseg.app import followup, identity, ui
from moleseg.app.device_profiles import NO_PROFILE
from moleseg.app.identity import NOT_SIGNED_IN, NOT_THROUGH_PROXY, personal_user, resolve_user
from moleseg.app.ui import PAGE_FILES
from moleseg.core.config import MIN_NOISE_PASSES, SIGN_IN_MAX_AGE_S
from moleseg.core.devices import DEVICE_PROFILES_FILE, DeviceProfile, read_profiles, save_profile
from moleseg.core.measure import measure_lesion
from moleseg.core.report import DISCLAIMER
from moleseg.core.settings import ServerSettings
from moleseg.engine.records import AuditEntry, Records
from moleseg.engine.recordtypes import NO_OWNER, User

#: The one user of personal mode, as the pages resolve it.
USER = personal_user()


@pytest.fixture
def isolated(app_folders):
    return app_folders


def test_history_lists_a_saved_record_and_opens_it(isolated):
    image, mask = mole_image(seed=3)
    records = Records()
    record_id = records.save(USER, image, mask, measure_lesion(mask, image=image), lesion="back mole",
                             visit_date="2026-02-03", body_site="back", notes="routine", image_name="m3.png",
                             model_name="classical")
    at = app_test(PAGE_FILES["history"])
    assert not at.exception
    lesions = at.dataframe[0].value
    assert list(lesions["lesion"]) == ["back mole"] and list(lesions["visits"]) == [1]
    visits = at.dataframe[1].value
    assert list(visits["id"]) == [record_id] and list(visits["image"]) == ["m3.png"]
    assert at.selectbox(key="history_visit").value == record_id
    assert len(at.get("image")) == 2
    measurements = at.dataframe[2].value
    assert "Area" in set(measurements["measurement"])
    assert any("routine" in text for text in texts(at.markdown))
    assert at.caption[-1].value == DISCLAIMER


def test_history_says_when_nothing_is_saved(isolated):
    at = app_test(PAGE_FILES["history"])
    assert not at.exception
    assert any("Nothing saved yet" in text for text in texts(at.info))


def test_history_deletes_a_visit(isolated):
    image, mask = mole_image(seed=1)
    record_id = Records().save(USER, image, mask, measure_lesion(mask), lesion="L")
    at = app_test(PAGE_FILES["history"])
    at.checkbox(key=f"history_delete_sure_{record_id}").check().run()
    at.button(key="history_delete").click().run()
    assert not at.exception
    assert Records().records(USER) == []
    assert any("Nothing saved yet" in text for text in texts(at.info))
    assert record_id not in [r.id for r in Records().records(USER)]


def test_the_next_visit_shown_after_a_delete_asks_again_before_it_is_deleted(isolated):
    """The 'Yes, delete' box stayed ticked for the visit shown next (after a delete, or another visit
    chosen): one more click on Delete removed it unasked."""
    image, mask = mole_image(seed=1)
    first, second, third = (Records().save(USER, image, mask, measure_lesion(mask), lesion="L",
                                           visit_date=f"2026-0{month}-01") for month in (1, 2, 3))
    at = app_test(PAGE_FILES["history"])
    assert at.selectbox(key="history_visit").value == third
    at.checkbox(key=f"history_delete_sure_{third}").check().run()
    at.selectbox(key="history_visit").set_value(second).run()
    assert at.button(key="history_delete").disabled
    at.selectbox(key="history_visit").set_value(third).run()
    at.checkbox(key=f"history_delete_sure_{third}").check().run()
    at.button(key="history_delete").click().run()
    assert [r.id for r in Records().records(USER)] == [second, first]
    assert not at.exception and at.button(key="history_delete").disabled  # the next visit: asked again


def test_history_says_a_saved_lesion_may_extend_beyond_the_picture_and_its_pdf_too(isolated):
    """The Analyse page and its PDF flag a lesion cut by the frame (its area is a lower bound); the same
    visit reopened on the History page, and the PDF exported there, did not."""
    import io

    import pypdf

    image, _ = mole_image(seed=3)
    mask = np.zeros(image.shape[:2], bool)
    mask[:, : image.shape[1] // 2] = True  # the left half: most of its outline on the frame
    record_id = Records().save(USER, image, mask, measure_lesion(mask, image=image), lesion="edge")
    at = app_test(PAGE_FILES["history"])
    assert not at.exception
    assert any("may extend beyond the picture" in text for text in texts(at.warning))
    saved = Records().open(USER, record_id)
    text = pypdf.PdfReader(io.BytesIO(followup.saved_report(saved, "edge.png"))).pages[0].extract_text()
    assert "may extend beyond the picture" in text and "Lesion border analysis" in text
    inside = np.zeros(image.shape[:2], bool)
    inside[20:60, 30:90] = True
    inside_id = Records().save(USER, image, inside, measure_lesion(inside))
    assert followup.saved_notes(Records().open(USER, inside_id)) is None


def test_the_pdf_of_a_saved_cells_visit_is_a_cell_segmentation_report(isolated):
    import io

    import pypdf

    from moleseg.core.objects import field_measurements, find_objects

    image, _ = mole_image(seed=4)
    cells = np.zeros(image.shape[:2], bool)
    cells[10:20, 10:20] = cells[40:52, 60:70] = True
    cells_id = Records().save(USER, image, cells, field_measurements(find_objects(cells), cells.size))
    saved = Records().open(USER, cells_id)
    assert followup.saved_n_classes(saved) == 2
    text = pypdf.PdfReader(io.BytesIO(followup.saved_report(saved, "field.png"))).pages[0].extract_text()
    assert "Cell segmentation analysis" in text and "Lesion border analysis" not in text


def test_analyse_saves_to_records(isolated):
    image, _ = mole_image(seed=2)
    at = analysed_mole(image)
    at.text_input(key="analyse_save_lesion").input("arm 2")
    at.date_input(key="analyse_save_date").set_value(datetime.date(2026, 5, 6))
    at.text_area(key="analyse_save_notes").input("looks stable")
    at.button(key="analyse_save").click().run()
    assert not at.exception
    saved = Records().records(USER)
    assert len(saved) == 1
    record = saved[0]
    assert (record.lesion, record.visit_date, record.notes, record.image_name) == (
        "arm 2", "2026-05-06", "looks stable", "mole.png")
    assert record.model_name == "classical" and record.cleanup["rule"] == "article"
    assert record.corrected is False and record.pixel_size_mm is None
    opened = Records().open(USER, record.id)
    assert np.array_equal(opened.image, image)
    assert any("Saved as record" in text for text in texts(at.success))
    outcome = at.session_state["analyse_outcomes"][0]
    visit = at.session_state["analyse_visits"][outcome.key]  # what the image's PDF, CSV and sidecar print
    assert (visit.lesion, visit.visit_date, visit.notes) == ("arm 2", "2026-05-06", "looks stable")


def test_compare_page_shows_the_figures(isolated, lesion_scene):
    before, _ = lesion_scene()
    after, _ = lesion_scene(angle_deg=10.0, shift_px=(8.0, -4.0))
    at = app_test(PAGE_FILES["compare"])
    at.selectbox(key="compare_model").set_value("classical").run()
    at.file_uploader(key="compare_before").set_value(("before.png", png_bytes(before), "image/png"))
    at.file_uploader(key="compare_after").set_value(("after.png", png_bytes(after), "image/png")).run()
    assert not at.exception
    assert not at.warning
    metrics = {metric.label: metric.value for metric in at.metric}
    assert float(metrics["Rotation"].rstrip("°")) == pytest.approx(10.0, abs=1.0)
    assert abs(float(metrics["Area change"].split()[0])) < 3.0
    assert next(metric for metric in at.metric if metric.label == "Area change").delta == "within measurement noise"
    assert len(at.get("image")) == 1
    changes = at.dataframe[0].value
    assert "Area" in set(changes["Measurement"])
    assert changes.set_index("Measurement").loc["Area", "Reading"] == "within measurement noise"
    assert any(caption.value.startswith("Pixel size used: none (lengths in px only).") for caption in at.caption)
    assert at.caption[-1].value == DISCLAIMER
    comparison = at.session_state["compare_result"]
    assert comparison.registration.ok


def upload_two_visits(at, lesion_scene):
    """Upload a synthetic lesion and the same lesion turned by 10°, compared with the classical baseline."""
    before, _ = lesion_scene()
    after, _ = lesion_scene(angle_deg=10.0)
    at.selectbox(key="compare_model").set_value("classical").run()
    at.file_uploader(key="compare_before").set_value(("before.png", png_bytes(before), "image/png"))
    at.file_uploader(key="compare_after").set_value(("after.png", png_bytes(after), "image/png")).run()


def test_a_compare_rerun_that_changes_nothing_the_network_sees_does_not_segment_again(isolated, lesion_scene,
                                                                                       monkeypatch):
    """Every rerun of the Compare page (the view, the swipe, a download, the pixel size) segmented both uploads
    again; now the session's last comparison is reused, its segmentations for other settings, its lesion noise
    for the same passes and pixel size."""
    from moleseg.core.classical import ClassicalSegmenter

    segmented: list[int] = []  # images per network call
    predict = ClassicalSegmenter.predict_probabilities
    monkeypatch.setattr(ClassicalSegmenter, "predict_probabilities",
                        lambda self, images: segmented.append(len(images)) or predict(self, images))
    at = app_test(PAGE_FILES["compare"])
    upload_two_visits(at, lesion_scene)
    assert segmented == [1, 1]
    first = at.session_state["compare_result"]
    at.radio(key="compare_view").set_value(followup.VIEW_SWIPE).run()
    at.slider(key="compare_swipe").set_value(20).run()
    assert segmented == [1, 1] and at.session_state["compare_result"] is first  # nothing computed again
    at.number_input(key="compare_pixel_size").set_value(0.02).run()
    at.checkbox(key="compare_allow_scale").check().run()
    assert not at.exception and segmented == [1, 1]
    comparison = at.session_state["compare_result"]
    assert (comparison.pixel_size_mm, comparison.allow_scale) == (0.02, True)
    assert comparison.before is first.before and comparison.change("area", "mm2") is not None
    at.toggle(key="compare_own_noise").set_value(True).run()  # this lesion's noise: 2 x K more images
    assert segmented == [1, 1, MIN_NOISE_PASSES, MIN_NOISE_PASSES]
    noise = at.session_state["compare_result"].lesion_noise
    assert noise and at.session_state["compare_result"].noise_passes == MIN_NOISE_PASSES
    at.checkbox(key="compare_allow_scale").uncheck().run()  # the noise does not depend on the alignment
    assert at.session_state["compare_result"].lesion_noise == noise and len(segmented) == 4
    at.toggle(key="compare_own_noise").set_value(False).run()
    at.selectbox(key="compare_model").set_value("classical2").run()  # another model: segmented anew
    assert not at.exception and segmented == [1, 1, MIN_NOISE_PASSES, MIN_NOISE_PASSES, 1, 1]
    other, _ = lesion_scene(radius_px=66)
    at.file_uploader(key="compare_after").set_value(("later.png", png_bytes(other), "image/png")).run()
    assert not at.exception and segmented[6:] == [1, 1]  # another file: the pair segmented anew


def test_compare_offers_only_noise_passes_the_engine_accepts(isolated, lesion_scene):
    at = app_test(PAGE_FILES["compare"])
    upload_two_visits(at, lesion_scene)
    assert "compare_noise_passes" not in {widget.key for widget in at.number_input}  # off: published noise
    at.toggle(key="compare_own_noise").set_value(True).run()
    passes = at.number_input(key="compare_noise_passes")
    assert (passes.min, passes.value, passes.max) == (MIN_NOISE_PASSES, MIN_NOISE_PASSES, followup.PAGE_NOISE_PASSES)
    assert not at.exception and not at.error
    assert at.session_state["compare_result"].noise_passes == MIN_NOISE_PASSES


def test_compare_takes_the_pixel_size_from_the_device_profiles_analyse_uses(isolated, lesion_scene, monkeypatch,
                                                                            tmp_path):
    monkeypatch.setenv("MOLESEG_CORRECTIONS_DIR", str(tmp_path / "mine" / "dataset"))
    profiles = tmp_path / "mine" / DEVICE_PROFILES_FILE
    save_profile(profiles, DeviceProfile("Heine", 0.02))
    save_profile(profiles, DeviceProfile("DermLite DL4", 0.0125))  # chosen last
    at = app_test(PAGE_FILES["compare"])
    assert at.selectbox(key="compare_device").options == [NO_PROFILE, "Heine", "DermLite DL4"]
    assert at.selectbox(key="compare_device").value == "DermLite DL4"
    assert at.number_input(key="compare_pixel_size").value == 0.0125
    at.selectbox(key="compare_device").set_value("Heine").run()
    upload_two_visits(at, lesion_scene)
    assert not at.exception
    assert any(caption.value.startswith("Pixel size used: 0.02 mm per px.") for caption in at.caption)
    assert read_profiles(profiles).last == "Heine"  # the Analyse page's next session starts with it too


def test_compare_warnings_are_sentences(isolated, lesion_scene):
    before, _ = lesion_scene(seed=0)
    other, _ = lesion_scene(seed=7, radius_px=45)  # unrelated: the alignment fails
    at = app_test(PAGE_FILES["compare"])
    at.selectbox(key="compare_model").set_value("classical").run()
    at.file_uploader(key="compare_before").set_value(("before.png", png_bytes(before), "image/png"))
    at.file_uploader(key="compare_after").set_value(("after.png", png_bytes(other), "image/png")).run()
    assert not at.exception
    assert not at.warning
    (error,) = texts(at.error)  # the reason leads, no area figure, the table folded away
    assert error.startswith("Alignment failed") and error.endswith(".")
    assert "no change is reported" in error
    assert "Area change" not in {metric.label for metric in at.metric}
    assert at.expander[-1].label == "The figures, which must not be read as change"


def test_compare_page_compares_two_saved_visits_with_a_swipe(isolated, lesion_scene):
    before, true_before = lesion_scene(radius_px=60)
    after, true_after = lesion_scene(radius_px=66, angle_deg=5.0, shift_px=(4.0, 3.0))
    records = Records()
    january = records.save(USER, before, true_before, measure_lesion(true_before), lesion="arm",
                           visit_date="2026-01-01", image_name="jan.png", model_name="classical", pixel_size_mm=0.01)
    june = records.save(USER, after, true_after, measure_lesion(true_after), lesion="arm", visit_date="2026-06-01",
                 image_name="jun.png", model_name="classical", pixel_size_mm=0.01)
    records.save(USER, before, true_before, measure_lesion(true_before), lesion="once")  # one visit: not offered
    at = app_test(PAGE_FILES["compare"])
    at.radio(key="compare_source").set_value(followup.COMPARE_SAVED).run()
    assert not at.exception
    assert at.selectbox(key="compare_lesion").options == ["arm"]
    assert at.selectbox(key="compare_before_record").value == january  # the earlier visit first
    assert at.selectbox(key="compare_after_record").value == june
    comparison = at.session_state["compare_result"]
    expected = 100.0 * (true_after.sum() / true_before.sum() - 1.0)
    assert comparison.area_change_percent == pytest.approx(expected, abs=0.01)
    changes = {row["Measurement"]: row for row in at.dataframe[0].value.to_dict("records")}
    saved = {m.label: m.text for m in records.record(USER, january).measurements if m.unit == ""}
    assert changes["Compactness index"]["Before"] == saved["Compactness index"]  # as Analyse and History show it
    at.radio(key="compare_view").set_value(followup.VIEW_SWIPE).run()
    at.slider(key="compare_swipe").set_value(20).run()
    assert not at.exception
    assert len(at.get("image")) == 1
    assert [image.caption for element in at.get("image") for image in element.proto.imgs] == [
        "Before (cyan border) left of the line, aligned after image (magenta border) right of it"]
    metrics = {metric.label: metric.value for metric in at.metric}
    assert float(metrics["Area change"].split()[0]) == pytest.approx(expected, abs=0.1)
    # The pixel size box is left at 0: the earlier record's size is used, and said.
    assert any(caption.value.startswith("Pixel size used: 0.01 mm per px.") for caption in at.caption)
    assert comparison.lesion_id == "arm" and (comparison.before_date, comparison.after_date) == ("2026-01-01",
                                                                                               "2026-06-01")
    assert ("Lesion", "arm") in comparison.header() and ("Before visit", "2026-01-01") in comparison.header()


def test_compare_warns_when_before_is_dated_after_after_and_compares_in_date_order(isolated, lesion_scene):
    before, true_before = lesion_scene(radius_px=60)
    after, true_after = lesion_scene(radius_px=66, angle_deg=5.0, shift_px=(4.0, 3.0))
    records = Records()
    january = records.save(USER, before, true_before, measure_lesion(true_before), lesion="arm",
                           visit_date="2026-01-01", image_name="jan.png")
    june = records.save(USER, after, true_after, measure_lesion(true_after), lesion="arm", visit_date="2026-06-01",
                        image_name="jun.png")
    at = app_test(PAGE_FILES["compare"])
    at.radio(key="compare_source").set_value(followup.COMPARE_SAVED).run()
    assert not at.warning
    at.selectbox(key="compare_before_record").set_value(june).run()
    at.selectbox(key="compare_after_record").set_value(january).run()
    assert not at.exception
    assert any("Before (2026-06-01) is dated after" in text for text in texts(at.warning))
    grown = 100.0 * (true_after.sum() / true_before.sum() - 1.0)  # January to June, not the other way
    assert at.session_state["compare_result"].area_change_percent == pytest.approx(grown, abs=0.01)


def test_compare_does_not_pair_visits_saved_without_an_identifier_unless_asked(isolated, lesion_scene):
    image, lesion = lesion_scene(radius_px=60)
    other, other_lesion = lesion_scene(radius_px=40)
    records = Records()
    records.save(USER, image, lesion, measure_lesion(lesion), visit_date="2026-01-01")  # no identifier
    records.save(USER, other, other_lesion, measure_lesion(other_lesion), visit_date="2026-02-01")  # another mole?
    at = app_test(PAGE_FILES["compare"])
    at.radio(key="compare_source").set_value(followup.COMPARE_SAVED).run()
    assert not at.exception and "compare_result" not in at.session_state
    assert any("No lesion has two saved visits" in text for text in texts(at.info))
    at.checkbox(key="compare_unidentified").check().run()  # the user says they show one lesion
    assert at.selectbox(key="compare_lesion").options == [followup.NO_IDENTIFIER]
    assert any("without a lesion identifier" in text for text in texts(at.warning))
    assert "compare_result" in at.session_state


# --------------------------------------------------------------------------------------------------
# Who the user is (moleseg.app.identity), and ownership on the pages

SECRET = "s" * 24
SHARED = ServerSettings(mode="shared", address="0.0.0.0", allowed_hosts=("moles.example.org",),
                        identity="proxy-header", trusted_proxies=(ipaddress.ip_network("10.0.0.5"),
                                                                  ipaddress.ip_network("127.0.0.1")),
                        admin_users=frozenset({"boss"}), proxy_secret=SECRET)
FROM_PROXY = {"X-Forwarded-User": "alice", "X-Moleseg-Proxy-Secret": SECRET}


def test_personal_mode_has_one_user_who_reaches_every_record():
    user = resolve_user(ServerSettings(), {"X-Forwarded-User": "mallory"}, "203.0.113.9")
    assert user == personal_user() and user.admin and user.name


@pytest.mark.parametrize(("headers", "address", "expected"), [
    (FROM_PROXY, "10.0.0.5", User("alice")),
    (FROM_PROXY, None, User("alice")),  # a loopback peer: Streamlit reports None
    ({**FROM_PROXY, "X-Forwarded-User": "boss"}, "10.0.0.5", User("boss", admin=True)),
    ({"X-Forwarded-Email": "carol@clinic.example", "X-Moleseg-Proxy-Secret": SECRET}, "10.0.0.5",
     User("carol@clinic.example")),
    (FROM_PROXY, "10.0.0.6", NOT_THROUGH_PROXY),  # not the proxy's address
    (FROM_PROXY, "127.0.0.1", User("alice")),
    ({"X-Forwarded-User": "alice"}, None, NOT_THROUGH_PROXY),  # straight to the port: no secret
    ({**FROM_PROXY, "X-Moleseg-Proxy-Secret": SECRET[:-1] + "x"}, None, NOT_THROUGH_PROXY),
    ({"X-Moleseg-Proxy-Secret": SECRET, "X-Forwarded-User": "  "}, "10.0.0.5", NOT_SIGNED_IN),
])
def test_in_shared_mode_the_user_header_is_believed_only_from_the_proxy_with_its_secret(headers, address,
                                                                                        expected):
    assert resolve_user(SHARED, headers, address) == expected


def _starlette_headers(pairs: list[tuple[str, str]]):
    from starlette.datastructures import Headers

    return Headers(raw=[(name.lower().encode(), value.encode()) for name, value in pairs])


@pytest.mark.parametrize("make", [lambda pairs: __import__("streamlit").runtime.context.StreamlitHeaders(pairs),
                                  _starlette_headers], ids=["pages", "media gate"])
@pytest.mark.parametrize("header", ["X-Forwarded-User", "X-Forwarded-Email"])
def test_a_request_naming_its_user_twice_is_believed_for_nobody(make, header):
    """A proxy that adds its user header to the browser's instead of replacing it (HAProxy's add-header, Apache's
    RequestHeader add, Caddy's header_up +) passes the browser's value first, and the first was believed, by the
    pages (st.context.headers) and by the media gate (Starlette's headers) alike: anyone became the admin."""
    pairs = [(header, "boss"), (header, "alice"), ("X-Moleseg-Proxy-Secret", SECRET)]
    refusal = resolve_user(SHARED, make(pairs), "10.0.0.5")
    assert isinstance(refusal, identity.Refusal) and "more than once" in refusal.message
    assert resolve_user(SHARED, make(pairs[1:]), "10.0.0.5") == User("alice")  # once: believed as before


def test_a_loopback_peer_is_a_proxy_only_when_a_loopback_address_is_trusted():
    only_ipv6 = replace(SHARED, trusted_proxies=(ipaddress.ip_network("::1"),))
    assert resolve_user(only_ipv6, FROM_PROXY, None) == User("alice")
    remote_only = replace(SHARED, trusted_proxies=(ipaddress.ip_network("10.0.0.5"),))
    assert resolve_user(remote_only, FROM_PROXY, None) == NOT_THROUGH_PROXY


def test_with_streamlit_login_the_user_is_the_logged_in_e_mail():
    oidc = replace(SHARED, identity="streamlit-oidc", admin_users=frozenset({"boss@clinic.example"}))
    assert resolve_user(oidc, FROM_PROXY, None) == NOT_SIGNED_IN  # proxy headers mean nothing here
    assert resolve_user(oidc, {}, None, "boss@clinic.example") == User("boss@clinic.example", admin=True)


def test_the_audit_trail_says_from_whom_to_whom_a_visit_was_handed_over():
    entries = [AuditEntry("2026-01-02T10:00:00+00:00", "moleseg", "saved"),
               AuditEntry("2026-02-03T09:30:00+00:00", "root", "adopted", "moleseg", "Anna"),
               AuditEntry("2026-02-03T09:30:00+00:00", "root", "adopted", NO_OWNER, "Anna")]
    assert [row["what"] for row in followup.audit_rows(entries)] == [
        "saved", "adopted from moleseg to Anna", f"adopted from {followup.UNKNOWN_OWNER} to Anna"]
    assert [row["who"] for row in followup.audit_rows(entries)] == ["moleseg", "root", "root"]


@pytest.mark.parametrize(("claims", "expected"), [
    ({"is_logged_in": True, "email": "boss@clinic.example", "email_verified": True}, "boss@clinic.example"),
    ({"is_logged_in": True, "email": "boss@clinic.example"}, "boss@clinic.example"),  # a provider that never says
    ({"is_logged_in": True, "email": "boss@clinic.example", "email_verified": False}, None),  # typed, unchecked
    ({"is_logged_in": True, "email": "boss@clinic.example", "email_verified": "false"}, None),  # as a string
    ({"is_logged_in": False, "email": "boss@clinic.example"}, None),
    ({"is_logged_in": True, "email": ["boss@clinic.example"]}, None),
    ({}, None),  # no log-in configured
])
def test_an_oidc_e_mail_the_provider_says_is_not_verified_names_nobody(claims, expected):
    """An identity provider that lets its users type any address (``email_verified`` false) would otherwise let
    anyone sign in as an admin's address."""
    assert identity.oidc_email(claims) == expected
    oidc = replace(SHARED, identity="streamlit-oidc", admin_users=frozenset({"boss@clinic.example"}))
    believed = resolve_user(oidc, {}, None, identity.oidc_email(claims))
    assert believed == (User(expected, admin=True) if expected else NOT_SIGNED_IN)


def test_an_oidc_sign_in_older_than_the_limit_names_nobody():
    """Streamlit keeps a sign-in for 30 days and checks no time in it: someone whose account the clinic closed
    stayed signed in for up to a month. The identity token's issue time (``iat``) now counts: a sign-in older
    than SIGN_IN_MAX_AGE_S asks to sign in again."""
    now = 1_800_000_000.0
    fresh = {"is_logged_in": True, "email": "boss@clinic.example", "iat": now - SIGN_IN_MAX_AGE_S + 60}
    assert identity.oidc_email(fresh, now=now) == "boss@clinic.example"
    assert identity.oidc_email({**fresh, "iat": now - SIGN_IN_MAX_AGE_S - 60}, now=now) is None
    assert identity.oidc_email({**fresh, "iat": "yesterday"}, now=now) is None  # not a time: nothing to go by
    assert identity.oidc_email({**fresh, "iat": True}, now=now) is None

class _Claims(dict):
    """``st.user`` of a signed-in session: a mapping of the identity token's claims, read as attributes too."""

    __getattr__ = dict.get


def test_the_session_s_user_comes_from_the_verified_oidc_e_mail_only(monkeypatch):
    oidc = replace(SHARED, identity="streamlit-oidc", admin_users=frozenset({"boss@clinic.example"}))
    monkeypatch.setattr(identity, "load_settings", lambda: oidc)
    claims = _Claims(is_logged_in=True, email="boss@clinic.example", email_verified=True)
    monkeypatch.setattr(identity.st, "user", claims)
    assert identity.current_user() == User("boss@clinic.example", admin=True)
    monkeypatch.setattr(identity.st, "user", _Claims(claims, email_verified=False))
    assert identity.current_user() == NOT_SIGNED_IN

@pytest.mark.parametrize(("headers", "oidc_email", "expected"), [
    ({**FROM_PROXY, "X-Forwarded-User": "  alice \t"}, None, User("alice")),  # blanks around: the same name
    ({**FROM_PROXY, "X-Forwarded-User": " boss "}, None, User("boss", admin=True)),
    ({**FROM_PROXY, "X-Forwarded-User": "Dr. Anna Müller"}, None, User("Dr. Anna Müller")),
    ({**FROM_PROXY, "X-Forwarded-User": "", "X-Forwarded-Email": " carol@clinic.example "}, None,
     User("carol@clinic.example")),
    ({**FROM_PROXY, "X-Forwarded-User": "al\x07ice"}, None, NOT_SIGNED_IN),  # no sign-in gives a control character
    ({}, "  boss@clinic.example ", User("boss@clinic.example", admin=True)),
    ({}, " \t", NOT_SIGNED_IN),
])
def test_a_signed_in_name_follows_the_one_rule_for_names(headers, oidc_email, expected):
    """The name is :func:`moleseg.core.userspace.signed_in_name` of the header or the e-mail, as ``moleseg adopt``
    takes it."""
    settings = SHARED if oidc_email is None else replace(SHARED, identity="streamlit-oidc",
                                                         admin_users=frozenset({"boss@clinic.example"}))
    assert resolve_user(settings, headers, "10.0.0.5", oidc_email) == expected


@pytest.fixture
def shared_mode(monkeypatch):
    """The pages in shared mode; AppTest's requests carry no proxy header, so nobody is believed."""
    monkeypatch.setattr(identity, "load_settings", lambda: SHARED)


def test_in_shared_mode_without_the_proxy_history_and_compare_refuse_and_show_no_record(isolated, shared_mode):
    image, mask = mole_image(seed=1)
    Records().save(User("alice"), image, mask, measure_lesion(mask), lesion="alice arm")
    at = app_test(PAGE_FILES["history"])
    assert not at.exception
    assert texts(at.error) == [NOT_THROUGH_PROXY.message]
    assert not at.dataframe and not at.get("image")
    at.switch_page(PAGE_FILES["compare"]).run()
    at.radio(key="compare_source").set_value(followup.COMPARE_SAVED).run()
    assert not at.exception and texts(at.error) == [NOT_THROUGH_PROXY.message]
    assert "compare_lesion" not in [box.key for box in at.selectbox]


def test_in_shared_mode_without_the_proxy_analyse_refuses_to_save(isolated, shared_mode):
    at = analysed_mole(mole_image(seed=2)[0])
    at.button(key="analyse_save").click().run()
    assert not at.exception
    assert texts(at.error) == [f"Could not save: {NOT_THROUGH_PROXY.message}"]
    assert Records().records(User("admin", admin=True)) == []


def test_history_opens_a_visit_from_its_link_and_shows_its_audit_trail(isolated):
    image, mask = mole_image(seed=3)
    records = Records()
    first = records.save(USER, image, mask, measure_lesion(mask), lesion="arm", visit_date="2026-01-01")
    records.save(USER, image, mask, measure_lesion(mask), lesion="leg", visit_date="2026-03-01")
    at = app_test()
    at.query_params["visit"] = str(first)
    at.switch_page(PAGE_FILES["history"]).run()
    assert not at.exception
    assert at.selectbox(key="history_lesion").value == "arm" and at.selectbox(key="history_visit").value == first
    saved_at = records.record(USER, first).saved_at  # e.g. 2026-12-07T08:43:33+00:00, shown for people
    (visit_line,) = [text for text in texts(at.markdown) if text.startswith("**Visit**")]
    assert f"**saved** {ui.plain_markdown(followup.moment_text(saved_at))} by" in visit_line
    assert saved_at[:10] + "T" not in visit_line
    at.run()  # shown again: 'opened' once
    trail = at.dataframe[3].value
    assert list(trail["who"]) == [USER.name, USER.name] and list(trail["what"]) == ["saved", "opened"]
    at = app_test()
    at.query_params["visit"] = "4711"
    at.switch_page(PAGE_FILES["history"]).run()
    assert texts(at.error) == ["Cannot open this record: no saved analysis with id 4711."]
    assert not at.get("image")


def test_the_history_page_s_pdf_export_is_in_the_audit_trail_as_its_zip_export_is(isolated):
    """The README: the audit trail records who exported a visit, as a ZIP or as a PDF (the History page's two
    downloads: :meth:`Records.export` and :func:`followup.exported_report`)."""
    image, mask = mole_image(seed=4)
    records = Records()
    record_id = records.save(USER, image, mask, measure_lesion(mask), lesion="arm")
    saved = records.open(USER, record_id, audit=False)
    assert followup.exported_report(records, USER, record_id, saved).startswith(b"%PDF")
    assert zipfile.is_zipfile(io.BytesIO(records.export(USER, record_id)))
    assert [(entry.user, entry.action) for entry in records.audit_trail(USER, record_id)] == [
        (USER.name, "saved"), (USER.name, "exported"), (USER.name, "exported")]


def test_another_user_s_visit_is_neither_listed_nor_opened_by_its_link(isolated, monkeypatch):
    image, mask = mole_image(seed=3)
    theirs = Records().save(User("bob"), image, mask, measure_lesion(mask), lesion="bob leg")
    monkeypatch.setattr(identity, "current_user", lambda: User("alice"))
    at = app_test(PAGE_FILES["history"])
    assert any("Nothing saved yet" in text for text in texts(at.info))
    at = app_test()
    at.query_params["visit"] = str(theirs)
    at.switch_page(PAGE_FILES["history"]).run()
    assert texts(at.error) == [f"Cannot open this record: no saved analysis with id {theirs}."]
    assert not at.get("image") and not at.dataframe
    Records().save(User("bob"), image, mask, measure_lesion(mask), lesion="bob leg")  # bob's second visit
    at.switch_page(PAGE_FILES["compare"]).run()
    at.radio(key="compare_source").set_value(followup.COMPARE_SAVED).run()
    assert not at.exception and any("No lesion has two saved visits" in text for text in texts(at.info))


@pytest.mark.parametrize(("link", "shown"), [
    ("99999999999999999999", "99999999999999999999"),  # beyond SQLite's 64-bit integers: OverflowError
    ("\u00b2", "\u00b2"),  # str.isdigit's superscript two, which int() refuses
    ("[Sign in again](https:evil.example)", ui.plain_markdown("[Sign in again](https:evil.example)")),
])
def test_a_crafted_visit_link_is_a_missing_record_told_as_plain_text(isolated, link, shown):
    at = app_test()
    at.query_params["visit"] = link
    at.switch_page(PAGE_FILES["history"]).run()
    assert not at.exception
    assert texts(at.error) == [f"Cannot open this record: no saved analysis with id {shown}."]
    assert not re.search(r"(?<!\\)\]\(", texts(at.error)[0])  # no unescaped "](": a crafted link draws no link


def test_another_user_s_image_name_is_shown_to_an_admin_as_plain_text(isolated, monkeypatch):
    image, mask = mole_image(seed=3)
    Records().save(User("bob"), image, mask, measure_lesion(mask), lesion="bob leg",
                   image_name=(name := "![](https:tracker.example) [Sign in again](https:evil.example).png"))
    monkeypatch.setattr(identity, "current_user", lambda: User("boss", admin=True))
    at = app_test(PAGE_FILES["history"])
    assert not at.exception
    captions = [image.caption for element in at.get("image") for image in element.proto.imgs]
    assert captions[0] == f"{ui.plain_markdown(name)}: saved border"
    assert not re.search(r"(?<!\\)\]\(", captions[0])  # no picture fetched, no link drawn


# --------------------------------------------------------------------------------------------------
# A records database that cannot be used: each page says so in one sentence, analysis goes on

def test_a_damaged_database_is_one_error_on_each_page_and_analysis_still_works(isolated):
    from moleseg.core.config import RECORDS_DB_NAME, data_dir

    folder = data_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RECORDS_DB_NAME).write_bytes(b"not a database at all\n" * 300)
    expected = f"The records database {folder / RECORDS_DB_NAME} cannot be used: it is not a database"
    at = app_test(PAGE_FILES["history"])
    assert not at.exception
    (message,) = texts(at.error)
    assert message.startswith(expected) and message.endswith("saving is refused until then.")
    at.switch_page(PAGE_FILES["compare"]).run()
    at.radio(key="compare_source").set_value(followup.COMPARE_SAVED).run()
    assert not at.exception and texts(at.error) == [message]
    at.switch_page(PAGE_FILES["analyse"]).run()
    at.selectbox(key="analyse_model").set_value("classical").run()
    image, _ = mole_image(seed=2)
    at.file_uploader(key="analyse_upload_files").set_value(("mole.png", png_bytes(image), "image/png")).run()
    assert not at.exception and at.get("image")  # the analysis is shown
    at.button(key="analyse_save").click().run()
    assert not at.exception and texts(at.error) == [f"Could not save: {message}"]


def test_a_second_click_on_save_with_the_same_border_and_visit_saves_nothing_and_names_the_record(isolated):
    at = analysed_mole(mole_image(seed=2)[0])
    at.text_input(key="analyse_save_lesion").input("arm 2")
    nodes = [(node.type, getattr(node, "label", "")) for node in at.main]  # the page's elements, top to bottom
    save = nodes.index(("button", "Save mole.png to records"))  # right under the visit form, above the exports
    assert nodes.index(("text_area", "Notes")) < save < nodes.index(("download_button", "Overlay (PNG)"))
    at.button(key="analyse_save").click().run()
    at.button(key="analyse_save").click().run()  # the same analysis and visit again
    (first,) = Records().records(USER)
    assert texts(at.info)[-1] == ui.plain_markdown(
        f"mole.png is already saved as record {first.id}, with this border and visit: nothing saved again. "
        "Change the border or the visit to save another visit.")
    at.text_area(key="analyse_save_notes").input("second look")  # another visit: saved
    at.button(key="analyse_save").click().run()
    assert [record.notes for record in Records().records(USER)] == ["second look", ""]
    Records().delete(USER, first.id)  # deleted in History: saving the first visit again makes a new record
    at.text_area(key="analyse_save_notes").input("")
    at.button(key="analyse_save").click().run()
    assert not at.exception and any("Saved as record" in text for text in texts(at.success))
    assert len(Records().records(USER)) == 2


def test_saved_times_read_as_a_date_and_a_clock_time_with_the_zone():
    assert followup.moment_text("2026-12-07T08:43:33+00:00") == "2026-12-07 08:43:33 UTC"
    assert followup.moment_text("2026-12-07T09:43:33+01:00") == "2026-12-07 09:43:33 UTC+01:00"
    assert followup.moment_text("2026-12-07T08:43:33") == "2026-12-07 08:43:33"
    assert followup.moment_text("yesterday") == "yesterday"


def test_compare_starts_with_the_saved_visits_once_a_lesion_has_two(isolated):
    at = app_test(PAGE_FILES["compare"])
    assert at.radio(key="compare_source").value == followup.COMPARE_UPLOADS  # nothing saved: two uploads
    image, mask = mole_image(seed=3)
    for day in ("2026-01-01", "2026-03-01"):
        Records().save(USER, image, mask, measure_lesion(mask), lesion="arm", visit_date=day)
    at = app_test(PAGE_FILES["compare"])  # a new session of the page
    assert not at.exception and at.radio(key="compare_source").value == followup.COMPARE_SAVED
    assert at.selectbox(key="compare_lesion").value == "arm"
    assert followup.first_compare_source(NOT_THROUGH_PROXY) == followup.COMPARE_UPLOADS


@pytest.fixture
def downloads(monkeypatch):
    """Every download button each page run draws, by key: its file name and its data (a callable for a download
    made when clicked)."""
    from streamlit.delta_generator import DeltaGenerator

    drawn: dict[str, tuple[str, object]] = {}
    original = DeltaGenerator.download_button

    def recording(self, label, data, file_name=None, *args, **kwargs):
        drawn[kwargs["key"]] = (file_name, data)
        return original(self, label, data, file_name, *args, **kwargs)

    monkeypatch.setattr(DeltaGenerator, "download_button", recording)
    return drawn


def test_history_exports_a_visit_without_names_and_the_record_keeps_them(isolated, downloads):
    from test_dicom_names import pdf_words, unzipped

    from moleseg.core.dataset import image_sha256
    from moleseg.core.dicomexport import neutral_name

    image, mask = mole_image(seed=3)
    record_id = Records().save(USER, image, mask, measure_lesion(mask, image=image), lesion="MRN 4711",
                               visit_date="2026-03-14", notes="Dr Schmidt", image_name="Mueller_Anna.png")
    at = app_test(PAGE_FILES["history"])
    assert downloads["history_export"][0] == f"record_{record_id}.zip"
    assert "Mueller_Anna.png" in unzipped(downloads["history_export"][1]())[f"record_{record_id}_measurements.csv"
                                                                              ].decode()
    at.toggle(key="history_exports_without_names").set_value(True).run()
    assert not at.exception
    stem = neutral_name(image_sha256(image))
    assert (downloads["history_export"][0], downloads["history_pdf"][0]) == (f"{stem}.zip", f"{stem}_report.pdf")
    files = unzipped(downloads["history_export"][1]())
    text = "\n".join([*files, *(data.decode("latin-1") for data in files.values()),
                      *pdf_words(downloads["history_pdf"][1]())]).lower()
    assert [secret for secret in ("mueller", "4711", "schmidt", "03-14") if secret in text] == []
    assert list(at.dataframe[1].value["image"]) == ["Mueller_Anna.png"]  # the page still shows the record's name
    assert Records().record(USER, record_id).image_name == "Mueller_Anna.png"


def test_compare_exports_the_comparison_without_names(isolated, lesion_scene, downloads):
    from moleseg.core.dataset import image_sha256
    from moleseg.core.dicomexport import neutral_name

    before, _ = lesion_scene()
    after, _ = lesion_scene(angle_deg=10.0)
    at = app_test(PAGE_FILES["compare"])
    at.selectbox(key="compare_model").set_value("classical").run()
    at.file_uploader(key="compare_before").set_value(("Mueller_before.png", png_bytes(before), "image/png"))
    at.file_uploader(key="compare_after").set_value(("Mueller_after.png", png_bytes(after), "image/png")).run()
    assert '"before": "Mueller_before.png"' in downloads["compare_json"][1]
    at.toggle(key="compare_exports_without_names").set_value(True).run()
    assert not at.exception
    summary = downloads["compare_json"][1]
    assert "mueller" not in summary.lower() and "mueller" not in downloads["compare_pdf"][1]().decode("latin-1").lower()
    assert (f'"before": "{neutral_name(image_sha256(before))}"' in summary
            and f'"after": "{neutral_name(image_sha256(after))}"' in summary)
