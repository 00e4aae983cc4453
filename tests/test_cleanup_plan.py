"""Per-image cleanup on the Analyse page: the plan, slider limits and widget starting values (no Streamlit)."""

from __future__ import annotations

from moleseg.app.cleanup_plan import (AutoCleanup, CleanupChoice, CleanupPlan, cleanup_slider_limits,
                                      cleanup_widget_values, rule_label, scope_caption,
                                      shown_image_key)
from moleseg.core.cleanup import CleanupSettings


def test_a_choice_applies_to_its_image_until_applied_to_all():
    plan = CleanupPlan()
    mine = CleanupChoice(CleanupSettings(closing_radius_px=3), None)
    plan.record("a", mine)
    assert plan.for_image("a") == mine and plan.for_image("b") is None
    everyone = CleanupChoice(CleanupSettings(closing_radius_px=40), 0.4)
    plan.record("a", everyone, apply_to_all=True)
    assert plan.for_image("a") == everyone and plan.for_image("b") == everyone
    plan.record("a", mine, apply_to_all=False)  # unticked: the others are automatic again
    assert plan.for_image("a") == mine and plan.for_image("b") is None
    plan.clear()
    assert plan.for_image("a") is None


def test_slider_limits_follow_the_image_size():
    # a 2816 x 2112 photo: automatic closing 132 px, border 35 px
    big = AutoCleanup(CleanupSettings(closing_radius_px=132, border_width_px=35), 2112, 2816)
    assert cleanup_slider_limits(big) == (281, 70)
    small = AutoCleanup(CleanupSettings(closing_radius_px=15, border_width_px=4), 96, 112)
    assert cleanup_slider_limits(small) == (80, 40)
    huge = AutoCleanup(CleanupSettings(closing_radius_px=900, border_width_px=35), 20000, 30000)
    assert cleanup_slider_limits(huge) == (1000, 600)
    assert cleanup_slider_limits(None) == (80, 40)


def test_widget_values_start_from_the_recorded_choice_else_the_automatic_cleanup():
    auto = AutoCleanup(CleanupSettings(closing_radius_px=132, border_width_px=35), 2112, 2816)
    values = cleanup_widget_values(None, auto, 0.35)
    assert (values["closing"], values["border"], values["use_threshold"], values["threshold"]) == (132, 35, True, 0.35)
    assert cleanup_widget_values(None, auto, None)["use_threshold"] is False
    recorded = CleanupChoice(CleanupSettings(rule="grow_inside", closing_radius_px=7), None)
    values = cleanup_widget_values(recorded, auto, 0.35)
    assert (values["rule"], values["closing"], values["use_threshold"]) == ("grow_inside", 7, False)


def test_the_image_in_view_is_the_selected_upload_else_the_first_analysed():
    assert shown_image_key(["a", "b"], "b") == "b"
    assert shown_image_key(["a", "b"], "gone", analysed_keys=["b"]) == "b"
    assert shown_image_key(["a", "b"], None) == "a"
    assert shown_image_key([], None) is None


def test_the_scope_caption_names_the_image_the_manual_cleanup_changes():
    assert scope_caption(False, 3, "IMD004.jpg") == ("Applies to IMD004.jpg only (the image under Show image); "
                                                     "tick Apply to all images to change all 3.")
    assert scope_caption(True, 3, "IMD004.jpg") == scope_caption(False, 1, "IMD004.jpg") == "Applies to every image."


def test_each_lesion_rule_is_offered_by_its_name_and_in_words():
    from moleseg.core.cleanup import RULES

    assert [rule_label(rule) for rule in RULES] == [
        "article: INSIDE plus the closed BORDER band (the article's method)",
        "grow_inside: INSIDE grown outward by the border width (for models that draw the border too thick)"]
