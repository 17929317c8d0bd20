"""The web UI in a real headless Chromium against a real server.

Selenium drives Debian's ``chromium`` through its matching ``chromedriver``
(both from ``scripts/system-deps.sh``; selenium is never let fetch a
browser). Packages are published as a user would, with ``rspm add``; the
browser clicks from ``/`` to a signed wheel, downloads its ``.asc``, and
``gpg --verify`` checks it against the wheel. Screenshots of the pages at
desktop and phone width (and one in dark mode) are written to
``test-artifacts/screenshots/`` under the project root.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.packages import build_wheel
from tests.support.rpackages import build_r_package
from tests.support.server import ServerProcess, wait_for

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
CHROMIUM_FLAGS = ("--no-sandbox", "--headless", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic",
                  "--disable-dev-shm-usage")
DESKTOP = (1280, 900)
PHONE = (390, 844)
README = """# Signed demo

A package published **with a signature**.

```python
import signed_demo
```
"""
# Each sets window.pwned if it ever runs.
HOSTILE = "<script>window.pwned=1</script>"
HOSTILE_README = f"""# Evil

{HOSTILE}

[click me](javascript:window.pwned=2)

<a href="javascript:window.pwned=3">raw link</a> <img src="x" onerror="window.pwned=4">

<svg onload="window.pwned=5"></svg> <iframe srcdoc="<script>parent.pwned=6</script>"></iframe>
"""


class Browser:
    """A headless Chromium session with a download directory and screenshots."""

    def __init__(self, driver: webdriver.Chrome, downloads: Path) -> None:
        self.driver = driver
        self.downloads = downloads

    def open(self, url: str) -> None:
        self.driver.get(url)
        self.wait_loaded()

    def wait_loaded(self) -> None:
        WebDriverWait(self.driver, 20).until(
            lambda d: d.execute_script("return document.readyState") == "complete")

    def link(self, text: str) -> WebElement:
        element: WebElement = WebDriverWait(self.driver, 20).until(
            expected_conditions.element_to_be_clickable((By.LINK_TEXT, text)))
        return element

    def click(self, text: str) -> None:
        self.link(text).click()
        self.wait_loaded()

    def text(self, css: str = "body") -> str:
        return " ".join(self.driver.find_element(By.CSS_SELECTOR, css).text.split())

    def script(self, code: str) -> Any:
        return self.driver.execute_script(code)

    def console_errors(self) -> list[str]:
        return [entry["message"] for entry in self.driver.get_log("browser")
                if entry["level"] == "SEVERE"]

    def screenshot(self, name: str, *, dark: bool = False) -> None:
        """The whole page at desktop and phone width, as ``{name}-{desktop,phone}.png``."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        cdp = self.driver.execute_cdp_cmd
        cdp("Emulation.setEmulatedMedia", {"features": [
            {"name": "prefers-color-scheme", "value": "dark" if dark else "light"}]})
        suffix = "-dark" if dark else ""
        for label, (width, height) in (("desktop", DESKTOP), ("phone", PHONE)):
            cdp("Emulation.setDeviceMetricsOverride", {
                "width": width, "height": height, "deviceScaleFactor": 1,
                "mobile": label == "phone"})
            full = cdp("Page.getLayoutMetrics", {})["cssContentSize"]
            shot = cdp("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width,
                         "height": min(max(full["height"], height), 6000), "scale": 1}})
            (SCREENSHOTS / f"{name}{suffix}-{label}.png").write_bytes(
                base64.b64decode(shot["data"]))
        cdp("Emulation.clearDeviceMetricsOverride", {})
        cdp("Emulation.setEmulatedMedia", {"features": []})


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Chromium with a fresh, empty profile; downloads go to a directory of its own."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and chromedriver, \
        "chromium and chromedriver are missing: scripts/system-deps.sh installs them"
    home = Path(tempfile.mkdtemp(prefix="pm-chromium-"))
    downloads = home / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={home / 'profile'}"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {
        "download.default_directory": str(downloads), "download.prompt_for_download": False,
        "safebrowsing.enabled": False})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver,
                                              log_output=str(home / "chromedriver.log")),
                              options=options)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior",
                           {"behavior": "allow", "downloadPath": str(downloads)})
    try:
        yield Browser(driver, downloads)
    finally:
        driver.quit()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def gnupg() -> Iterator[tuple[dict[str, str], str, Path]]:
    """A throwaway signing key: (env with GNUPGHOME, fingerprint, exported public key)."""
    home = Path(tempfile.mkdtemp(prefix="pm-gpg-"))
    env = {**os.environ, "GNUPGHOME": str(home)}

    def gpg(*args: str) -> str:
        return subprocess.run(["gpg", "--batch", *args], env=env, capture_output=True,
                              text=True, check=True, timeout=60).stdout

    gpg("--passphrase", "", "--quick-gen-key", "Release Bot <release@example.com>",
        "ed25519", "sign", "never")
    fingerprint = next(line.split(":")[9] for line in
                       gpg("--with-colons", "--list-keys").splitlines()
                       if line.startswith("fpr:"))
    public = home / "release-key.asc"
    public.write_text(gpg("--armor", "--export", fingerprint))
    yield env, fingerprint, public
    subprocess.run(["gpgconf", "--kill", "all"], env=env, capture_output=True, check=False)
    shutil.rmtree(home, ignore_errors=True)


def _ci_token(server: ServerProcess, source: str) -> str:
    return server.rspm("create", "token", "--quiet", "--description=Release CI",
                       f"--sources={source}", "--scope=sources:write").stdout.strip()


def test_click_from_home_to_a_signed_wheel_and_verify_its_signature(
        make_server: type[ServerProcess], browser: Browser, tmp_path: Path,
        gnupg: tuple[dict[str, str], str, Path]) -> None:
    """From /, a user clicks the repo and the package, sees SIGNED with the key id on
    the signed wheel (verified against the trusted key) and the token that uploaded
    it, downloads the .asc, and gpg --verify accepts it for the wheel. The search box
    works from the keyboard alone."""
    gpg_env, fingerprint, public = gnupg
    server = make_server(extra_config=f"[Signatures]\nTrustedKeys = {public}\n").start()
    server.setup_python()
    token = _ci_token(server, "local-python-src")
    dist = tmp_path / "dist"
    dist.mkdir()
    wheel = build_wheel(dist, "signed-demo", "1.0.0", summary="A signed demo package",
                        metadata_fields=[("Description-Content-Type", "text/markdown"),
                                         ("Author", "Release Bot")],
                        description=README)
    subprocess.run(["gpg", "--batch", "--local-user", fingerprint, "--detach-sign",
                    "--armor", str(wheel)], env=gpg_env, check=True, capture_output=True)
    build_wheel(dist, "signed-demo", "0.9.0", summary="An older unsigned release")
    server.rspm("add", "--source=local-python-src", f"--path={dist}",
                env=server.remote_env(token))

    browser.open(server.url("/"))
    assert "Repositories" in browser.text("h1")
    browser.screenshot("home")
    browser.click("python")
    assert browser.driver.current_url == server.url("/repos/python/")
    browser.screenshot("repo")
    browser.click("signed-demo")
    assert browser.driver.current_url == server.url("/repos/python/packages/signed-demo/")
    assert browser.text("h1") == "signed-demo 1.0.0"
    browser.screenshot("package")
    browser.screenshot("package", dark=True)

    dist_item = browser.driver.find_element(
        By.XPATH, f"//li[contains(@class, 'dist')][.//a[text()='{wheel.name}']]")
    shown = " ".join(dist_item.text.split())
    label = dist_item.find_element(By.CSS_SELECTOR, ".label.signed")
    assert label.text == "SIGNED"
    assert label.value_of_css_property("color") in ("rgba(26, 127, 55, 1)", "rgb(26, 127, 55)")
    assert f"Key {fingerprint[-16:]}" in shown
    assert "verified against a trusted key" in shown
    assert "by token “Release CI”" in shown
    assert "A package published with a signature." in browser.text(".readme")

    dist_item.find_element(By.LINK_TEXT, f"{wheel.name}.asc").click()
    saved = browser.downloads / f"{wheel.name}.asc"
    wait_for(lambda: saved.is_file() and not list(browser.downloads.glob("*.crdownload")),
             30, "the .asc download")
    verified = subprocess.run(["gpg", "--batch", "--verify", str(saved), str(wheel)],
                              env=gpg_env, capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0, verified.stderr

    browser.open(server.url("/"))
    search = browser.driver.find_element(By.ID, "home-q")
    search.send_keys("signed", Keys.ENTER)
    browser.wait_loaded()
    assert browser.driver.current_url == server.url("/search?q=signed")
    browser.screenshot("search")
    browser.link("signed-demo").send_keys(Keys.ENTER)
    browser.wait_loaded()
    assert browser.driver.current_url == server.url("/repos/python/packages/signed-demo/")
    assert browser.console_errors() == []


def test_hostile_metadata_runs_no_script_in_the_browser(
        make_server: type[ServerProcess], browser: Browser, tmp_path: Path) -> None:
    """A wheel and an R package whose summary, author, URLs and README hold scripts,
    event handlers and javascript: links are shown as text: in the browser nothing
    sets window.pwned, no alert opens, the page holds no script element, and the
    console reports no blocked inline script (nothing tried to run)."""
    server = make_server().start()
    server.setup_python()
    python_token = _ci_token(server, "local-python-src")
    server.setup_r()
    r_token = _ci_token(server, "local-r-src")
    dist = tmp_path / "dist"
    dist.mkdir()
    build_wheel(dist, "evil-demo", "1.0.0", summary=HOSTILE, description=HOSTILE_README,
                metadata_fields=[("Description-Content-Type", "text/markdown"),
                                 ("Author", '<img src="x" onerror="window.pwned=7">'),
                                 ("Home-page", "javascript:window.pwned=8"),
                                 ("Project-URL", "Docs, javascript:window.pwned=9"),
                                 ("Classifier", HOSTILE)])
    server.rspm("add", "--source=local-python-src", f"--path={dist}",
                env=server.remote_env(python_token))
    rdir = tmp_path / "r"
    rdir.mkdir()
    build_r_package(rdir, "labR", "0.1.0")
    build_r_package(rdir, "evilR", "1.0.0", title=HOSTILE, imports=["labR"],
                    description_extra="URL: javascript:window.pwned=10\n"
                                      f"BugReports: {HOSTILE}\n"
                                      'Author: <img src="x" onerror="window.pwned=11">')
    server.rspm("add", "--source=local-r-src", f"--path={rdir}",
                env=server.remote_env(r_token))

    pages = {"evil-home": "/", "evil-repo": "/repos/python/",
             "evil-package": "/repos/python/packages/evil-demo/",
             "evil-search": "/search?q=evil", "evil-r-package": "/repos/cran/packages/evilR/",
             "not-found": "/repos/python/packages/no-such-thing/"}
    for name, path in pages.items():
        browser.open(server.url(path))
        # Following a README's links must run nothing either (some are empty anchors,
        # so they are clicked as a script would, not as a pointer would).
        for link in browser.driver.find_elements(By.CSS_SELECTOR, ".readme a"):
            browser.driver.execute_script("arguments[0].click()", link)
        assert browser.script("return window.pwned === undefined && !window.parent.pwned"), \
            path
        assert browser.script("return document.scripts.length") == 0, path
        assert browser.script(
            "return [...document.querySelectorAll('*')].flatMap(e => [...e.attributes])"
            ".filter(a => a.name.startsWith('on') || /^\\s*javascript:/i.test(a.value))"
            ".length") == 0, path
        blocked = [m for m in browser.console_errors() if "Content Security Policy" in m]
        assert blocked == [], path
        browser.screenshot(name)

    browser.open(server.url("/repos/python/packages/evil-demo/"))
    assert HOSTILE in browser.text(".lead")
    assert HOSTILE in browser.text(".readme")
    browser.open(server.url("/repos/cran/packages/evilR/"))
    assert HOSTILE in browser.text(".lead")
    browser.click("labR")
    assert browser.driver.current_url == server.url("/repos/cran/packages/labR/")
    browser.screenshot("r-package")
