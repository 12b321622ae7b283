"""Real-browser checks of structured pruning, surgery (cut + undo) and export (download)."""
from __future__ import annotations

import re
import time

import pytest

from tests.helpers.browser import (
    assert_no_exception,
    global_slider,
    keep_screenshots,
    metric_value,
    open_app,
    reload_restored,
    upload_and_wait,
    wait_idle,
)

pytestmark = pytest.mark.e2e


def pick(page, label: str, option: str, within=None) -> None:
    """Choose ``option`` in the select box labelled ``label``."""
    root = within or page
    box = root.locator('[data-testid="stSelectbox"]').filter(has_text=label).first
    box.click()
    page.get_by_role("option", name=option, exact=True).click()
    wait_idle(page, 120)


def goto(page, title: str) -> None:
    page.locator('[data-testid="stSidebarNav"] a').filter(has_text=title).first.click()
    page.wait_for_timeout(500)
    wait_idle(page, 180)
    page.wait_for_selector('[data-testid="stMetric"], [data-testid="stCheckbox"]', timeout=180_000)


def wait_change(page, label: str, before: str, timeout: float = 60) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = metric_value(page, label)
        if v != before:
            return v
        page.wait_for_timeout(100)
    return metric_value(page, label)


def test_channel_granularity_makes_the_model_smaller_and_faster(page, app_url, tmp_path):
    open_app(page, app_url)
    pick(page, "Granularity", "channel (removed)")
    params0, macs0 = metric_value(page, "Non-zero params"), metric_value(page, "MACs / example")
    thumb = global_slider(page)
    thumb.focus()
    for _ in range(50):
        page.keyboard.press("ArrowRight")
    value = float(thumb.input_value())
    assert value == pytest.approx(0.5), f"the control reads {value} after 50 presses: a redraw took its focus"
    # key presses land as several edits: wait for the plan of the control's final value
    page.get_by_text(re.compile(r"prune channel by l1: sparsity 50\.0%")).first.wait_for(timeout=180_000)
    wait_idle(page, 120)
    assert wait_change(page, "Non-zero params", params0) != params0
    assert wait_change(page, "MACs / example", macs0) != macs0
    # latency is measured anew on the smaller model, with the base timed beside it: a delta
    # when the difference is outside the noise of the two timings, else the page says so
    # latency is timed after the page is drawn (a progress bar in its place), then redrawn
    metric = page.locator('[data-testid="stMetric"]').filter(
        has=page.locator('[data-testid="stMetricLabel"]', has_text=re.compile(r"^\s*Latency\s*$"))).first
    deadline, seen = time.time() + 120, 0
    while time.time() < deadline and seen < 3:  # timed, and still so a moment later (no other edit)
        lat = metric.inner_text() if metric.count() else ""
        seen = seen + 1 if " ms" in lat else 0
        page.wait_for_timeout(300)
    lat = metric.inner_text()
    assert "× base" in lat or page.get_by_text("no speed conclusion").count() > 0, lat
    assert metric_value(page, "Latency ratio").endswith("×")
    assert_no_exception(page)
    page.screenshot(path=str(tmp_path / "prune_channel.png"))
    # what the 50% channel prune changed: each view of the Explain page, screenshotted
    page.locator('[data-testid="stSidebarNav"] a').filter(has_text="Explain").first.click()
    for view in ("Changed predictions", "Where each model looks", "What a unit responds to", "Removed with it"):
        page.get_by_text(view).first.wait_for(timeout=120_000)
        page.get_by_text(view).first.scroll_into_view_if_needed()
        page.wait_for_timeout(500)
        assert_no_exception(page)
        page.screenshot(path=str(tmp_path / f"explain_{view.split()[0].lower()}.png"))
    assert page.locator('[data-testid="stImage"]').count() >= 12
    assert page.get_by_text("predictions changed on the quick subset").count() == 1
    page.get_by_text("Grad-CAM", exact=True).first.click()  # the map of each model's last feature map
    page.get_by_text("Grad-CAM: where each model looks").first.wait_for(timeout=120_000)
    page.get_by_text("Grad-CAM: where each model looks").first.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    assert_no_exception(page)
    page.screenshot(path=str(tmp_path / "explain_gradcam.png"))
    keep_screenshots(tmp_path.glob("*.png"))


def test_cut_a_block_then_undo_restores_the_metrics(page, app_url, tmp_path):
    open_app(page, app_url)
    goto(page, "Surgery")
    acc0, params0 = metric_value(page, "Accuracy"), metric_value(page, "Non-zero params")
    ms = page.locator('[data-testid="stMultiSelect"]').filter(has_text="Selected blocks").first
    ms.click()
    page.get_by_role("option").nth(1).click()
    page.keyboard.press("Escape")
    wait_idle(page)
    page.get_by_role("button", name="Cut", exact=True).click()
    seen = ""  # the cut's progress bar says what it does (caught when the cut outlasts a poll)
    deadline = time.time() + 30
    while time.time() < deadline and metric_value(page, "Non-zero params") == params0:
        bar = page.locator('[data-testid="stProgress"]')
        if bar.count() and not seen:
            seen = bar.first.inner_text()
            page.screenshot(path=str(tmp_path / "surgery_cut_progress.png"))
        page.wait_for_timeout(20)
    assert not seen or seen.startswith(("Cut ", "Latency")), seen
    wait_idle(page, 180)
    assert wait_change(page, "Non-zero params", params0) != params0
    assert_no_exception(page)
    page.screenshot(path=str(tmp_path / "surgery_cut.png"))
    page.get_by_role("button", name="↶ Undo").first.click()
    wait_idle(page, 180)
    deadline = time.time() + 60
    while metric_value(page, "Non-zero params") != params0 and time.time() < deadline:
        page.wait_for_timeout(100)
    assert metric_value(page, "Non-zero params") == params0
    assert metric_value(page, "Accuracy") == acc0


def test_export_in_the_browser_and_download_the_file(page, app_url, tmp_path):
    open_app(page, app_url)
    goto(page, "Export")
    page.get_by_role("button", name="Export", exact=True).click()
    onnx = page.locator('[data-testid="stDownloadButton"]').get_by_role("button", name="onnx", exact=True)
    onnx.wait_for(timeout=180_000)
    wait_idle(page, 60)
    assert_no_exception(page)
    table = page.locator('[data-testid="stDataFrame"]').first
    table.wait_for()
    with page.expect_download(timeout=60_000) as dl:
        onnx.click()
    path = tmp_path / dl.value.suggested_filename
    dl.value.save_as(str(path))
    assert path.name == "digits_cnn.onnx" and path.stat().st_size > 10_000
    page.screenshot(path=str(tmp_path / "export.png"))


def test_nothing_is_fetched_from_outside_this_machine(browser, app_url):
    """Fonts, icons and scripts all come from the app itself: it looks the same offline."""
    from urllib.parse import urlparse

    page = browser.new_page()
    hosts = set()
    page.on("request", lambda r: hosts.add(urlparse(r.url).hostname))
    try:
        for path in ("/prune", "/model", "/surgery"):
            page.goto(app_url + path)
            wait_idle(page)
            page.wait_for_timeout(1500)
            assert_no_exception(page)
    finally:
        page.close()
    assert hosts and hosts <= {"127.0.0.1", "localhost", None}, hosts


def test_open_a_recipe_file_on_the_export_page(page, app_url, tmp_path):
    """A recipe from a file becomes the plan; one for another model is a message and the plan stays."""
    from core.plan import Plan
    from core.prune import Prune

    good = tmp_path / "good.plan.json"
    Plan("digits_cnn").then(Prune(criterion="l1", granularity="weight", sparsity=0.4)).save(good)
    other = tmp_path / "other.plan.json"
    Plan("digits_mlp").then(Prune(sparsity=0.2)).save(other)
    open_app(page, app_url)
    goto(page, "Export")
    page.get_by_text("Open a recipe").first.click()
    upload = page.locator('.st-key-recipe_file input[type="file"]')
    upload.set_input_files(str(other))
    page.get_by_text("is a recipe for model 'digits_mlp'").first.wait_for(timeout=60_000)
    upload.set_input_files(str(good))
    page.get_by_role("button", name=re.compile("Apply this recipe")).click()
    page.get_by_text("Applied good.plan.json: 1 step(s).").first.wait_for(timeout=120_000)
    wait_idle(page, 120)
    assert_no_exception(page)
    page.screenshot(path=str(tmp_path / "export_open_recipe.png"))
    goto(page, "Prune")
    assert metric_value(page, "Sparsity") == "40.0%"
    keep_screenshots([tmp_path / "export_open_recipe.png"])


def test_open_your_own_model_with_an_image_zip_prune_and_reload(page, app_url, tmp_path):
    """A factory with an uploaded image-folder zip (made here), pruned on the Prune page; a
    reload of the page finds the model and its plan."""
    from tests.helpers.browser import move_and_time
    from tests.helpers.data import image_folder, zip_of

    z = zip_of(image_folder(tmp_path / "pets"), tmp_path / "pets.zip")
    open_app(page, app_url)
    goto(page, "Model")
    page.get_by_text("Open your own model").first.click()
    page.locator(".st-key-open_name input").fill("e2e_pets")
    page.locator(".st-key-open_factory input").fill("demo_models.nets:DigitsCNN")
    page.locator(".st-key-open_dkind").get_by_text("upload", exact=True).click()
    wait_idle(page)
    upload_and_wait(page, "open_dfile", z, ".st-key-open_mean input")  # the image settings, shown for a zip
    wait_idle(page)
    page.locator(".st-key-open_shape input").fill("1,8,8")
    page.locator(".st-key-open_shape input").press("Enter")
    wait_idle(page)
    page.screenshot(path=str(tmp_path / "open_image_zip.png"))
    page.get_by_role("button", name="Open the model").click()
    wait_idle(page, 180)
    picker = page.locator('[data-testid="stSidebar"] [role="combobox"]').first  # the model picker
    deadline = time.time() + 120
    while picker.input_value() != "e2e_pets (yours, random weights)" and time.time() < deadline:
        page.wait_for_timeout(200)
    assert picker.input_value() == "e2e_pets (yours, random weights)"
    wait_idle(page, 120)
    assert_no_exception(page)
    goto(page, "Prune")
    move_and_time(page, presses=30)
    assert metric_value(page, "Sparsity") == "30.0%"
    reload_restored(page)
    assert page.locator('[data-testid="stSidebar"] [role="combobox"]').first.input_value() == \
        "e2e_pets (yours, random weights)"
    assert metric_value(page, "Sparsity") == "30.0%"
    assert_no_exception(page)
    page.screenshot(path=str(tmp_path / "own_model_restored.png"))
    keep_screenshots(tmp_path.glob("*.png"))


def open_torchvision_with_zip(page, name: str, arch: str, kwargs: str, zip_path, score: str | None = None) -> None:
    """On the Model page: open torchvision's ``arch`` as ``name`` with ``kwargs`` (JSON) and the
    uploaded ``zip_path`` of images at 64 x 64 (``score``: the box score threshold), and wait for
    the picker to hold it."""
    page.get_by_text("Open your own model").first.click()
    page.locator(".st-key-open_name input").fill(name)
    page.locator(".st-key-open_source").get_by_text("torchvision", exact=True).click()
    wait_idle(page)
    page.locator(".st-key-open_arch input").fill(arch)
    page.locator(".st-key-open_kwargs input").fill(kwargs)
    page.locator(".st-key-open_dkind").get_by_text("upload", exact=True).click()
    wait_idle(page)
    upload_and_wait(page, "open_dfile", zip_path, ".st-key-open_size input")  # the image settings, shown for a zip
    page.locator(".st-key-open_size input").fill("64,64")
    page.locator(".st-key-open_size input").press("Enter")
    if score is not None:
        page.locator(".st-key-open_score input").fill(score)
        page.locator(".st-key-open_score input").press("Enter")
    wait_idle(page)
    page.get_by_role("button", name="Open the model").click()
    wait_idle(page, 240)
    picker = page.locator('[data-testid="stSidebar"] [role="combobox"]').first
    deadline = time.time() + 180
    while not picker.input_value().startswith(name) and time.time() < deadline:
        page.wait_for_timeout(200)
    assert picker.input_value().startswith(name)
    wait_idle(page, 180)


def test_open_a_torchvision_segmenter_with_an_uploaded_zip_of_masks_prune_and_read_mean_iou(page, app_url, tmp_path):
    """torchvision's LR-ASPP (random weights, nothing fetched) with an uploaded zip of images and
    label masks (made here): judged by mean IoU, which a pruning move changes."""
    from tests.helpers.browser import move_and_time
    from tests.helpers.data import mask_folder, zip_of

    z = zip_of(mask_folder(tmp_path / "streets"), tmp_path / "streets.zip")
    open_app(page, app_url)
    goto(page, "Model")
    open_torchvision_with_zip(page, "e2e_streets", "lraspp_mobilenet_v3_large", '{"num_classes": 3}', z)
    assert_no_exception(page)  # the Model page: the eval set by main class and labelled pixels
    page.screenshot(path=str(tmp_path / "segmenter_model_page.png"), full_page=True)
    page.get_by_role("tab", name="Eval set").click()
    page.get_by_text("in the quick subset").first.wait_for(timeout=30_000)
    page.wait_for_timeout(1000)  # the table draws on a canvas
    page.screenshot(path=str(tmp_path / "segmenter_eval_set.png"))
    goto(page, "Prune")
    assert metric_value(page, "Mean IoU").endswith("%") and metric_value(page, "Pixel accuracy").endswith("%")
    assert metric_value(page, "Output error") == "0.0%"  # the base against itself
    move_and_time(page, presses=60)
    assert metric_value(page, "Sparsity") == "60.0%"
    # measured again on the pruned model (random weights: its class map may be one class everywhere, so its
    # mean IoU need not move; the output error against the base must)
    assert metric_value(page, "Output error") != "0.0%" and metric_value(page, "Mean IoU").endswith("%")
    assert_no_exception(page)
    page.screenshot(path=str(tmp_path / "segmenter_mean_iou.png"), full_page=True)
    keep_screenshots(tmp_path.glob("*.png"))


def test_open_a_torchvision_detector_with_coco_boxes_prune_it_and_see_every_page(page, app_url, tmp_path):
    """torchvision's Faster R-CNN (random weights, nothing fetched) with an uploaded zip of images
    and a COCO-style JSON of boxes (made here), a box score threshold given: judged by mAP and by
    the base's boxes found again; a channel prune moves them; every page opens (screenshots kept)."""
    from tests.helpers.data import box_folder, zip_of

    z = zip_of(box_folder(tmp_path / "shapes"), tmp_path / "shapes.zip")
    open_app(page, app_url)
    goto(page, "Model")
    pick(page, "Latency batch size", "8")  # a detector timed at 64 images a batch is slow on two cores
    open_torchvision_with_zip(page, "e2e_boxes", "fasterrcnn_mobilenet_v3_large_320_fpn",
                              '{"num_classes": 3, "min_size": 96, "max_size": 96}', z, score="0.05")
    assert_no_exception(page)
    assert metric_value(page, "mAP (base, quick)").endswith("%")
    page.screenshot(path=str(tmp_path / "detector_model.png"), full_page=True)
    goto(page, "Prune")
    assert metric_value(page, "Box recall") == "100.0%"  # the base against itself
    assert metric_value(page, "mAP@0.5:0.95").endswith("%")
    pick(page, "Granularity", "channel (removed)")
    params0 = metric_value(page, "Non-zero params")
    thumb = global_slider(page)
    thumb.focus()
    for _ in range(30):
        page.keyboard.press("ArrowRight")
    page.get_by_text(re.compile(r"prune channel by l1: sparsity 30\.0%")).first.wait_for(timeout=180_000)
    wait_idle(page, 180)
    assert wait_change(page, "Non-zero params", params0) != params0  # channels removed: a smaller detector
    assert wait_change(page, "Box recall", "100.0%", 120) != "100.0%"
    assert_no_exception(page)
    # fine-tune it on the labelled boxes: a few steps of its own losses, a plan step
    exp = page.locator('[data-testid="stExpander"]').filter(has_text="Recover accuracy").first
    if exp.locator("details").first.get_attribute("open") is None:
        exp.locator("summary").click()
    wait_idle(page)
    pick(page, "Learn from", "labelled boxes", within=exp)  # what a detector learns from (or the base's boxes)
    box = exp.locator('input[type="number"]').first
    box.fill("3")
    box.press("Enter")
    wait_idle(page)
    exp.get_by_role("button", name="Fine-tune").click()
    page.get_by_text(re.compile(r"Last fine-tune")).first.wait_for(timeout=240_000)
    wait_idle(page, 180)
    assert_no_exception(page)
    assert page.get_by_text(re.compile(r"boxes unmatched \(1 − F1\)")).count()
    page.screenshot(path=str(tmp_path / "detector_prune.png"), full_page=True)
    for title in ("Sensitivity", "Surgery", "Explain", "Export", "History"):
        page.locator('[data-testid="stSidebarNav"] a').filter(has_text=title).first.click()
        page.get_by_role("heading", name=re.compile(rf"^{title} ·")).first.wait_for(timeout=180_000)
        others = page.get_by_role("heading", name=re.compile(r"^(Model|Prune|Sensitivity|Surgery|Explain|Export|"
                                                               r"History) ·")).filter(has_not_text=title)
        deadline = time.time() + 180
        while others.count() and time.time() < deadline:  # the previous page's elements, until drawn over
            page.wait_for_timeout(300)
        wait_idle(page, 180)
        page.wait_for_timeout(1000)
        assert_no_exception(page)
        page.screenshot(path=str(tmp_path / f"detector_{title.lower()}.png"), full_page=True)
    keep_screenshots(tmp_path.glob("*.png"))
