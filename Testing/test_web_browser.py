"""``pedtumorseg serve`` in a real browser: Debian's chromium driven by Playwright, headless, against a server on
127.0.0.1 with a tiny random-weight bundle on a small phantom. Open, Apply, the segments in the axial view in their
colors, a slider moving the table and the overlay, an Islands edit kept when a slider moves, a paint stroke, the
downloaded export equal to ``pedtumorseg predict``, the model chosen from two, refusals (path traversal, missing
token), sessions isolated from each other.

Skipped with the reason when Playwright, chromium, the web extra or offscreen rendering are missing. Screenshots go
to ``$PEDTUMORSEG_SCREENSHOTS`` (default: the test's temporary folder).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from conftest import write_tiny_bundle
from web_server import Server, chromium_path, processes, skip_reason

_SKIP = skip_reason()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(_SKIP is not None, reason=str(_SKIP))]
AXIAL = 3  # the axial view is the 4th image of the "Quad View" layout (coronal, sagittal, 3D, axial)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from pedtumorseg.phantoms.clean import make_phantom, write_phantom

    root = tmp_path_factory.mktemp("web")
    data = root / "data"
    case = write_phantom(make_phantom(3, "small"), data)
    bundle = write_tiny_bundle(root / "tiny.zip")
    from pedtumorseg.conventions import LABEL_NAMES

    # a second model to choose, without a CC label (its CC output channel is background)
    no_cc = write_tiny_bundle(root / "tiny-no-cc.zip", name="tiny-no-cc", extra={
        "labels": {str(k): LABEL_NAMES[k] for k in (1, 2, 4)},
        "outputs": {"activation": "softmax", "labels": [0, 1, 2, 0, 4]}})
    shots = Path(os.environ.get("PEDTUMORSEG_SCREENSHOTS") or root / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    server = Server(data, bundle, extra=["--model", str(no_cc)], log=root / "serve.log")
    try:
        ready = server.wait_ready()
        yield {"root": root, "data": data, "case": case, "bundle": bundle, "server": server, "ready_s": ready,
               "shots": shots}
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"], headless=True)
        yield b
        b.close()


def _status(page) -> str:
    return page.inner_text("#pts-status")


def _table(page) -> dict:
    rows = {}
    for line in page.inner_text("#pts-volumes").splitlines()[1:]:
        cells = line.split("\t")
        rows[cells[0]] = float(cells[1])
    return rows


def _wait_table_change(page, before: dict, timeout_s: float = 20) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = _table(page)
        if now != before:
            return now
        page.wait_for_timeout(100)
    return _table(page)


def _axial_pixels(page) -> np.ndarray:
    from PIL import Image

    shot = page.locator("#pts-views img.image-display-area").nth(AXIAL).screenshot()
    return np.asarray(Image.open(io.BytesIO(shot)).convert("RGB")).astype(int)


def _color_count(pixels: np.ndarray, label: int, tolerance: int = 30) -> int:
    from pedtumorseg.conventions import LABEL_COLORS

    target = np.array(LABEL_COLORS[label]) * 255
    return int((np.abs(pixels - target).max(axis=2) <= tolerance).sum())


def _wait_pixels(page, predicate, timeout_s: float = 10) -> np.ndarray:
    deadline = time.monotonic() + timeout_s
    pixels = _axial_pixels(page)
    while not predicate(pixels) and time.monotonic() < deadline:
        page.wait_for_timeout(150)
        pixels = _axial_pixels(page)
    return pixels


def _open_and_apply(page, site) -> None:
    page.goto(site["server"].url)
    page.wait_for_selector("#pts-open", timeout=60_000)
    page.click("#pts-open")
    page.wait_for_function("document.querySelector('#pts-status').innerText.includes('Apply')", timeout=60_000)
    page.click("#pts-apply")
    page.wait_for_function("document.querySelector('#pts-status').innerText.startsWith('Done')", timeout=120_000)


def _slider_key(page, name: str, key: str) -> None:
    thumb = page.locator(f"#pts-{name} [role=slider]")
    thumb.focus()
    thumb.press(key)


def _predict_labels(site, out: Path) -> np.ndarray:
    import SimpleITK as sitk

    subprocess.run([sys.executable, "-m", "pedtumorseg", "predict", "--case", str(site["case"]), "--out", str(out),
                    "--model", str(site["bundle"]), "--device", "cpu", "--folds", "0", "--no-tta"],
                   check=True, capture_output=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    return sitk.GetArrayFromImage(sitk.ReadImage(str(next(out.glob("*-seg.nii.gz")))))


def test_open_apply_slider_edit_export_in_the_browser(site, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        _walk_the_workflow(page, site)
    finally:
        page.close()


def _walk_the_workflow(page, site):
    """Long on purpose: one browser session walks the whole workflow; each step needs the state the last left."""
    import SimpleITK as sitk

    started = time.monotonic()
    _open_and_apply(page, site)
    print(f"server answered after {site['ready_s']:.1f} s; open + apply {time.monotonic() - started:.1f} s")
    table = _table(page)
    assert table["WT"] > 0 and set(table) == {"ET", "NET", "CC", "ED", "TC", "WT"}
    # the axial view shows the segments in their colors where the label map has them
    pixels = _wait_pixels(page, lambda p: _color_count(p, 1) > 0)
    page.screenshot(path=str(site["shots"] / "web-after-apply.png"))
    for label, region in ((1, "ET"), (2, "NET"), (3, "CC")):
        if table[region] > 0.5:
            assert _color_count(pixels, label) > 0, f"no {region} color in the axial view"
    # export, downloaded by the browser = `pedtumorseg predict` on the same case (same bundle, first fold, no TTA,
    # default post-processing); the files also lie in this session's export folder on the server
    page.click("#pts-export")
    page.wait_for_function("document.querySelector('#pts-status').innerText.startsWith('Exported')")
    name = f"{site['case'].name}-seg.nii.gz"
    with page.expect_download() as download:
        page.click(f"#pts-exported a:text-is('{name}')")
    downloaded = site["root"] / "downloaded" / name
    download.value.save_as(downloaded)
    web = sitk.GetArrayFromImage(sitk.ReadImage(str(downloaded)))
    cli = _predict_labels(site, site["root"] / "predict")
    assert np.array_equal(web, cli)
    exported = site["data"].parent / "data-exports" / site["case"].name
    for suffix in ("-seg.nii.gz", ".seg.nrrd", "-volumes.csv", "-stats.json", "-overlay.png"):
        assert (exported / f"{site['case'].name}{suffix}").stat().st_size > 0
    # a slider: the NET -> ET ratio threshold down to its lowest: NET becomes ET; the table and the overlay follow
    red_before = _color_count(pixels, 1)
    _slider_key(page, "ratio_high", "Home")
    after = _wait_table_change(page, table)
    assert after["ET"] > table["ET"] and after["NET"] < table["NET"] and after["CC"] == table["CC"]
    pixels = _wait_pixels(page, lambda p: _color_count(p, 1) > red_before)
    assert _color_count(pixels, 1) > red_before
    page.screenshot(path=str(site["shots"] / "web-after-slider.png"))
    # an edit with trame-slicer's Islands effect (keep the largest island of the active segment, ET): the table
    # follows, and the next slider move keeps the edit (as the module does)
    page.click("#pts-effect-islands")
    edited = _wait_table_change(page, after, timeout_s=60)
    assert 0 < edited["ET"] < after["ET"]
    page.screenshot(path=str(site["shots"] / "web-after-edit.png"))
    _slider_key(page, "min_volume_et", "End")  # would change ET only: the edited ET segment is kept as it is
    page.wait_for_function("document.querySelector('#pts-min_volume_et').innerText.includes('2000')")
    page.wait_for_timeout(3000)
    assert _table(page) == edited
    # paint (the active segment, ET) with the mouse across the axial view: the table follows
    page.click("#pts-effect-paint")
    view = page.locator("#pts-views img.image-display-area").nth(AXIAL)
    view.hover()
    box = view.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - 60, cy)
    page.mouse.down()
    for step in range(13):
        page.mouse.move(cx - 60 + 10 * step, cy + (step % 3) * 4)
        page.wait_for_timeout(100)
    page.mouse.up()
    painted = _wait_table_change(page, edited, timeout_s=60)
    assert painted["ET"] > edited["ET"]
    page.screenshot(path=str(site["shots"] / "web-after-paint.png"))


def test_a_path_outside_the_data_folder_is_refused(site, browser):
    page = browser.new_page()
    page.goto(site["server"].url)
    page.wait_for_selector("#pts-open", timeout=60_000)
    # the model is chosen from the bundles the server offers: one without CC hides the CC slider, and back
    page.locator("#pts-min_volume_cc").wait_for(state="visible")
    page.evaluate("window.trame.state.set('pts_model_index', 1)")
    page.wait_for_function("document.querySelector('#pts-model').innerText.includes('tiny-no-cc')")
    page.locator("#pts-min_volume_cc").wait_for(state="hidden")
    assert page.locator("#pts-min_volume_et").is_visible()
    page.evaluate("window.trame.state.set('pts_model_index', 0)")
    page.locator("#pts-min_volume_cc").wait_for(state="visible")
    assert "tiny-no-cc" not in page.inner_text("#pts-model")
    for bad in ("../", "../../etc", "/etc", "~"):
        page.evaluate(f"window.trame.state.set('pts_case', {bad!r}); window.trame.state.set('pts_error', '')")
        page.wait_for_function("document.querySelector('#pts-error').innerText === ''")  # not the last one's
        page.click("#pts-open")
        page.wait_for_function("document.querySelector('#pts-error').innerText.includes('not a case')")
        assert "etc" not in page.inner_text("#pts-error").replace(bad, "")
    page.close()


def test_token_and_isolated_sessions(tmp_path, site, browser):
    """Two users (two browser contexts) each get a session of their own: opening a case in one leaves the other's
    untouched; the second page of one session is refused; a third user is turned away at --sessions 2."""
    token = "t0ken-for-tests-0123456789"
    server = Server(site["data"], site["bundle"], extra=["--token", token, "--sessions", "2"],
                    log=tmp_path / "serve.log")
    users = [browser.new_context(), browser.new_context()]
    try:
        server.wait_ready()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(server.url, timeout=10)
        assert refused.value.code == 403
        pages = [user.new_page() for user in users]
        for page in pages:
            page.goto(server.url + f"?token={token}")
            page.wait_for_selector("#pts-open", timeout=60_000)
        assert pages[0].url != pages[1].url and "/s/" in pages[0].url
        pages[0].click("#pts-open")
        pages[0].wait_for_function("document.querySelector('#pts-status').innerText.includes('Apply')")
        pages[1].wait_for_timeout(500)
        assert pages[1].inner_text("#pts-status").startswith("Choose a case")
        assert pages[1].evaluate("window.trame.state.get('pts_volumes')") == []
        same = users[0].new_page()  # the same session in a second page: its case is held by the first page
        same.goto(pages[0].url)
        same.wait_for_timeout(3000)
        assert same.locator("#pts-open").count() == 0 or same.locator("#pts-open").is_disabled()
        with pytest.raises(urllib.error.HTTPError) as busy:  # both sessions in use
            urllib.request.urlopen(server.url + f"?token={token}", timeout=30)
        assert busy.value.code == 503
    finally:
        for user in users:
            user.close()
        server.stop()


def test_upload_a_case_and_refuse_a_bad_one(site, browser, tmp_path):
    page = browser.new_page()
    try:
        page.goto(site["server"].url)
        page.wait_for_selector("#pts-open", timeout=60_000)
        images = sorted(p for p in site["case"].iterdir() if "-seg" not in p.name)
        page.locator("input[type=file]").set_input_files([str(p) for p in images])
        page.wait_for_function("document.querySelector('#pts-status').innerText.startsWith('Uploaded as')",
                               timeout=60_000)
        page.click("#pts-open")
        page.wait_for_function("document.querySelector('#pts-status').innerText.includes('Apply')", timeout=60_000)
        # Apply, then Cancel while the background prediction runs: no result, and its process is gone
        page.click("#pts-apply")
        page.wait_for_selector("#pts-cancel:not([disabled])", timeout=30_000)
        page.click("#pts-cancel")
        page.wait_for_function("document.querySelector('#pts-status').innerText.startsWith('Cancelled')",
                               timeout=60_000)
        assert not page.locator("#pts-volumes").is_visible()
        deadline = time.monotonic() + 10
        while processes(b"pedtumorseg", b"predict") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert processes(b"pedtumorseg", b"predict") == []
        bad = tmp_path / images[0].name
        bad.write_bytes(images[0].read_bytes()[:300])  # cut short
        page.locator("input[type=file]").set_input_files([str(bad)] + [str(p) for p in images[1:]])
        page.wait_for_function("document.querySelector('#pts-error').innerText.includes('upload refused')",
                               timeout=60_000)
        message = page.inner_text("#pts-error")
        assert images[0].name in message and str(tmp_path) not in message
        # a DICOM study comes as one .zip: a broken one is refused by its name
        broken = tmp_path / "study.zip"
        broken.write_bytes(b"PK\x03\x04 not a zip")
        page.locator("input[type=file]").set_input_files([str(broken)])
        page.wait_for_function("document.querySelector('#pts-error').innerText.includes('study.zip')", timeout=60_000)
        assert "upload refused: study.zip: not a readable zip file" in page.inner_text("#pts-error")
        session = page.url.split("/s/")[1].split("/")[0]  # each session has its own upload folder
        uploads = site["data"].parent / "data-exports" / "uploads" / session
        assert sorted(p.name for p in uploads.iterdir()) == ["upload-1"]  # the refused ones left nothing
    finally:
        page.close()
