"""Real-browser checks: Streamlit's running indicator is visible while the page works, and
the expanders a person opened stay open through a fine-tune, a cancel and an upload."""
from __future__ import annotations

import json
import re

import pytest

from tests.helpers.browser import assert_no_exception, choose_model, open_app, wait_idle

pytestmark = pytest.mark.e2e


def _goto(page, url: str, path: str) -> None:
    if path == "export":  # no metrics on that page
        page.goto(f"{url}/{path}")
        page.locator('[data-testid="stExpander"]').first.wait_for(timeout=120_000)
    else:
        open_app(page, url, path)
    wait_idle(page, 180)


def _open(page, label: str):
    exp = page.locator('[data-testid="stExpander"]').filter(has_text=label).first
    if exp.locator("details").get_attribute("open") is None:
        exp.locator("summary").click()
        page.wait_for_timeout(300)
        wait_idle(page)
    assert is_open(exp)
    return exp


def is_open(exp) -> bool:
    return exp.locator("details").get_attribute("open") is not None


def test_the_running_indicator_shows_while_the_page_computes(page, app_url):
    """The toolbar's "minimal" mode hid Streamlit's status widget: a long computation looked
    like a page that had stopped drawing."""
    _goto(page, app_url, "surgery")
    choose_model(page, "digits_resnet")  # guides take seconds there (digits_cnn's can end before a poll sees them)
    wait_idle(page, 180)
    page.get_by_role("button", name="Compute guides").first.click()
    seen = False
    for _ in range(80):
        w = page.locator('[data-testid="stStatusWidget"]')
        if w.count() and w.first.is_visible():
            seen = True
            break
        page.wait_for_timeout(50)
    assert seen, "no running indicator while the guides were computed"
    wait_idle(page, 180)
    assert_no_exception(page)


def test_the_recover_panel_stays_open_after_a_fine_tune_and_a_cancel(page, app_url):
    _goto(page, app_url, "surgery")
    exp = _open(page, "Recover accuracy")
    steps = exp.locator('input[type="number"]').first
    steps.fill("3")
    steps.press("Enter")
    wait_idle(page)
    exp.get_by_role("button", name="Fine-tune").click()
    page.get_by_text("Last fine-tune").first.wait_for(timeout=120_000)
    wait_idle(page, 120)
    assert is_open(exp)
    steps.fill("5000")  # the most: the fine-tune still runs when its Cancel shows
    steps.press("Enter")
    wait_idle(page)
    exp.get_by_role("button", name="Fine-tune").click()
    exp.get_by_role("button", name="Cancel").click(timeout=60_000)
    # a Cancel that lands before the first training step (the job evaluates first) keeps nothing
    page.get_by_text(re.compile("Stopped after|cancelled before its first step")).first.wait_for(timeout=120_000)
    wait_idle(page, 120)
    assert is_open(exp)
    assert_no_exception(page)


def test_open_a_recipe_stays_open_after_an_upload(page, app_url, tmp_path):
    _goto(page, app_url, "export")
    exp = _open(page, "Open a recipe")
    model = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.inner_text().split("\n")[-1]
    recipe = tmp_path / "r.plan.json"
    recipe.write_text(json.dumps({"format": "prunescope.plan/1", "model": model.strip(), "steps": []}))
    exp.locator('input[type="file"]').set_input_files(str(recipe))
    page.wait_for_timeout(500)
    wait_idle(page, 60)
    assert is_open(exp)
    assert exp.get_by_role("button", name="Apply this recipe").count() or exp.get_by_text("recipe for model").count()
