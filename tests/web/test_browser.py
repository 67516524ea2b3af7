"""The search page in a real browser: search/app.py started as a command over a gallery with an account, driven by
headless Debian Chromium through Playwright, which signs in through the form first and signs out at the end. The test installs Debian's chromium and a CJK font with apt when they are missing (as root,
as in CI; no browser download works here); a browser or font still missing fails the test, it never skips."""
import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from playwright.sync_api import sync_playwright

from person.cli import users
from person.gallery import sources
from person.gallery.encoders import ExportEncoder
from person.gallery.enroll import enroll
from tests.web.test_app import detections, start_app

CHROMIUM = "/usr/bin/chromium"
BROWSER_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync"]
CHINESE = "穿红色外套的女孩"
PACKAGES = ("chromium", "fonts-wqy-microhei")


@pytest.fixture(scope="module")
def debian_browser():
    """Install the Debian packages the test needs when one is missing (idempotent: nothing to do the next time)."""
    missing = [p for p in PACKAGES if subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True,
                                                     text=True).stdout != "install ok installed"]
    if missing and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", *missing]):
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
            assert done.returncode == 0, f"{' '.join(cmd)} failed: {done.stderr[-2000:]}"
    return CHROMIUM


def test_the_page_signs_in_searches_draws_boxes_and_renders_chinese_in_chromium(debian_browser, trained_setup,
                                                                                  plain_export, tmp_path,
                                                                                  monkeypatch):
    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing: apt-get install -y --no-install-recommends chromium"
    fonts = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True, text=True).stdout if \
        shutil.which("fc-list") else ""
    assert fonts.strip(), "no CJK font: Chinese would render as boxes; apt-get install -y fonts-wqy-microhei"
    photos = tmp_path / "photos"
    shutil.copytree(trained_setup[0].parent / "Part1", photos)
    boxes = sources.detections(detections(photos, tmp_path / "d.jsonl"), photos)  # every row has a box
    enroll(tmp_path / "g", ExportEncoder(plain_export), boxes, workers=0)
    monkeypatch.setattr("sys.stdin", io.StringIO("a long passphrase\n"))  # as `echo ... | search/users.py add`
    users.main(["--gallery", str(tmp_path / "g"), "add", "ann"])
    proc, url = start_app(["--gallery", str(tmp_path / "g"), "--text-model", str(plain_export), "--image-model",
                           str(plain_export), "--thumb-cache", str(tmp_path / "thumbs")], tmp_path / "app.log")
    problems = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
            page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            page.goto(url)  # redirected to the sign-in page: the form posts under the CSP's form-action 'self'
            assert page.url == f"{url}/signin"
            page.fill("#name", "ann")
            page.fill("#password", "a long passphrase")
            page.click("#signin button[type=submit]")
            page.wait_for_url(f"{url}/")
            page.wait_for_function("() => document.querySelector('#account').textContent"
                                   ".includes('signed in as ann (viewer)')")
            page.wait_for_function("() => document.querySelector('#gallery').textContent"
                                   ".includes('12 people enrolled')")

            page.fill("#q", "a man in a red coat")
            page.press("#q", "Enter")
            page.wait_for_selector("#results .card")
            first = page.locator("#results .card").first
            page.wait_for_function("() => { const i = document.querySelector('#results .card img');"
                                   " return i && i.complete && i.naturalWidth > 0; }")
            box, picture = first.locator(".box"), first.locator("img")
            box.wait_for()
            drawn, image = box.bounding_box(), picture.bounding_box()
            assert drawn["width"] > 1 and drawn["height"] > 1, drawn
            assert image["x"] <= drawn["x"] and drawn["x"] + drawn["width"] <= image["x"] + image["width"] + 1
            assert page.locator("#results .card").count() == 10  # the top-N selector's default
            # The tiny export's card measured no threshold that holds: each hit is below every operating point.
            assert first.locator(".strength").text_content() == "below every operating point"
            status = page.text_content("#status")
            assert "results for “a man in a red coat”" in status and " ms" in status, status

            page.fill("#q", CHINESE)
            page.press("#q", "Enter")
            page.wait_for_function(f"() => document.querySelector('#status').textContent.includes('{CHINESE}')")
            assert page.input_value("#q") == CHINESE

            page.locator("#results .card .similar").first.click()
            page.wait_for_function("() => document.querySelector('#status').textContent"
                                   ".includes('results for person #')")
            page.wait_for_function("() => [...document.querySelectorAll('#results .card img')].slice(0, 4)"
                                   ".every(i => i.complete && i.naturalWidth > 0)")
            page.fill("#q", CHINESE)  # in the box for the screenshot: it must show as text, not boxes
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)

            page.fill("#q", "   ")
            page.press("#q", "Enter")
            assert page.get_attribute("#status", "class") == "error"

            page.set_viewport_size({"width": 390, "height": 844})  # a phone
            page.fill("#q", CHINESE)
            page.press("#q", "Enter")
            page.wait_for_function(f"() => document.querySelector('#status').textContent.includes('{CHINESE}')")
            assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing runs off the screen
            page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)

            page.click("#signout button")
            page.wait_for_url(f"{url}/signin")
            assert page.context.cookies() == []  # the session cookie is gone
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert not problems, problems
    print(f"screenshots: {tmp_path / 'page.png'} {tmp_path / 'phone.png'}")
