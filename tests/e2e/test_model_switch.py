"""Issue 23 (12): after a switch of model in the sidebar the Model page showed the new
model's title above the previous model's figures (Streamlit keeps a run's elements on
screen until the next run draws over them) for the seconds the new figures took."""
from __future__ import annotations

import time

from tests.helpers.browser import assert_no_exception, metric_value, open_app, wait_idle

SEEN = """() => {
  const main = document.querySelector('[data-testid="stMain"]') || document.body;
  const titles = [...main.querySelectorAll('h3')].map(e => e.innerText);
  const metrics = [...main.querySelectorAll('[data-testid="stMetric"]')].map(e => e.innerText);
  const running = document.querySelectorAll('[data-testid="stStatusWidget"]').length > 0;
  return [titles.join(' | '), metrics, running];
}"""


def test_after_a_switch_the_new_title_never_stands_above_the_previous_models_figures(page, app_url):
    open_app(page, app_url, "model")
    old = {label: metric_value(page, label) for label in ("Parameters (base)", "MACs / example (base)")}
    box = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first
    box.click()
    page.get_by_role("option", name="digits_resnet", exact=True).click()
    seen, deadline = [], time.time() + 180
    while time.time() < deadline:  # what the page shows while the switch runs
        titles, metrics, running = page.evaluate(SEEN)
        seen.append((titles, metrics))
        params = [m for m in metrics if m.startswith("Parameters (base)")]
        if not running and "digits_resnet" in titles and params and not params[0].endswith(old["Parameters (base)"]):
            break  # the new model's figures are drawn
        page.wait_for_timeout(20)
    wait_idle(page, 120)
    assert_no_exception(page)
    new = {label: metric_value(page, label) for label in old}
    assert new != old
    under_new = [m for t, ms in seen if "digits_resnet" in t for m in ms]
    assert under_new, "the new title never showed"
    stale = [m for m in under_new if any(m.startswith(label) and m.endswith(v) for label, v in old.items())]
    assert not stale, f"the previous model's figures under the new title: {stale[:3]}"
