"""`mmgen serve`'s page in headless Chromium: type a prompt and see pictures, upload a picture and read a caption.

The server runs on a loopback port (uvicorn in a thread of this process, over a tiny trained run);
Playwright drives the system's Chromium (/usr/bin/chromium: `.ci/run` installs it with apt; Playwright
never downloads a browser here). Screenshots go to test-artefacts/ (or MMGEN_TEST_ARTEFACTS).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from generation_helpers import one_thread  # noqa: F401 (an autouse fixture)
from serve_helpers import picture_png, tiny_run

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
PROMPT = "a small red circle in the center"
TIMEOUT_MS = 120_000  # the shared 2-core machine can be slow; each job itself takes well under a second

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no {CHROMIUM} (apt-get install chromium)")


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    from mmgen.plugins.serve.app import create_app
    from mmgen.plugins.serve.background import serving
    from mmgen.plugins.serve.engine import Engine
    from mmgen.registry import load_registry

    engine = Engine(tiny_run(tmp_path_factory.getbasetemp()), registry=load_registry())
    with serving(create_app(engine, out_dir=tmp_path_factory.mktemp("serve-browser"))) as address:
        yield address


@pytest.fixture(scope="module")
def page(url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url)
        yield page
        browser.close()
        assert errors == [], errors  # the page's script ran without an error


def artefacts() -> Path:
    folder = Path(os.environ.get("MMGEN_TEST_ARTEFACTS", ROOT / "test-artefacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def loaded_pictures(page, selector: str) -> int:
    """How many of the matching <img> have loaded a picture (naturalWidth > 0)."""
    return page.eval_on_selector_all(selector, "images => images.filter(i => i.complete && i.naturalWidth > 0).length")


def test_typing_a_prompt_shows_pictures_and_their_steps(page):
    page.wait_for_function("document.getElementById('t2i-steps').value === '10'")  # the run's defaults arrived
    page.fill("#t2i-prompt", PROMPT)
    page.fill("#t2i-candidates", "3")
    page.fill("#t2i-steps", "4")
    page.click("#t2i-go")
    page.wait_for_selector("#out-t2i .status-text:text('done in')")
    page.wait_for_function("document.querySelectorAll('#t2i-pictures figure.output-picture img').length === 3")
    page.wait_for_function(
        "[...document.querySelectorAll('#out-t2i img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    assert loaded_pictures(page, "#t2i-pictures img") == 3
    assert page.is_hidden("#panel-i2t") and page.is_hidden("#panel-inpaint")
    assert loaded_pictures(page, "#out-t2i .strip img") == 3 * 4  # every step of every picture
    assert page.inner_text("#out-t2i .status-text").startswith("done in ")
    page.screenshot(path=str(artefacts() / "serve-t2i.png"), full_page=True)


def test_uploading_a_picture_shows_its_caption(page, tmp_path):
    picture = tmp_path / "picture.png"
    picture.write_bytes(picture_png())
    page.click("#tab-i2t")
    page.set_input_files("#i2t-image", str(picture))
    page.click("#i2t-go")
    page.wait_for_selector("#i2t-caption.final")
    caption = page.inner_text("#i2t-caption")
    assert caption.strip() not in ("", "…")
    assert page.locator("#out-i2t ol.texts li").count() == 12  # the run's 12 text steps, each shown
    page.screenshot(path=str(artefacts() / "serve-i2t.png"), full_page=True)


def test_a_generated_picture_can_be_inpainted_in_a_dragged_region(page):
    page.click("#tab-t2i")
    page.click("#t2i-pictures figure.output-picture button:text('Inpaint it')")
    page.wait_for_selector("#inpaint-canvas-wrap:not([hidden])")
    canvas = page.locator("#inpaint-canvas")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + 2, box["y"] + 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=4)
    page.mouse.up()
    region = [float(v) for v in page.input_value("#inpaint-region").split(",")]
    assert region[0] < 0.05 and region[1] < 0.05 and 0.45 <= region[2] <= 0.55 and 0.45 <= region[3] <= 0.55
    page.click("#inpaint-go")
    page.wait_for_selector("#out-inpaint .status-text:text('done in')")
    page.wait_for_function("(i => i && i.complete && i.naturalWidth > 0)(document.getElementById('inpaint-result'))")
    assert page.get_attribute("#inpaint-result", "src").endswith("/output-0.png")
    page.screenshot(path=str(artefacts() / "serve-inpaint.png"), full_page=True)


def test_a_bad_request_shows_the_servers_answer(page):
    page.click("#tab-t2i")
    page.fill("#t2i-prompt", "   ")
    page.click("#t2i-go")
    page.wait_for_selector("#out-t2i .error")
    assert page.inner_text("#out-t2i .error") == "prompt is blank"
