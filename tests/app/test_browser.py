"""The web app in a real browser: Debian's chromium and chromium-driver, headless, through
selenium. Upload a sound through the file input, match it, and check that the players, the
spectrograms and the sliders work.

Without chromium the test skips, except in CI (``CI=true``), where it fails. Set
``SYNTHMATCH_SCREENSHOT=docs/img/app.png`` to write the screenshot there (for the README);
otherwise it goes to the test's temporary folder.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
MODULES = ("fastapi", "multipart", "uvicorn", "soundfile", "selenium")


def browser_paths() -> tuple[str, str]:
    """The chromium and chromedriver executables; skip (fail in CI) without them or without
    the Python packages the test drives them with."""
    chromium = next((p for p in map(shutil.which, CHROMIUM) if p), None)
    driver = shutil.which("chromedriver")
    missing = [m for m in MODULES if importlib.util.find_spec(m) is None]
    missing += [name for name, path in (("chromium", chromium), ("chromedriver", driver))
                if path is None]
    if missing:
        message = (f"the browser test needs {', '.join(missing)}: apt-get install chromium "
                   "chromium-driver; pip install -e '.[test,app,leaderboard]'")
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI must install them)")
        pytest.skip(message)
    return chromium, driver


@pytest.fixture
def server():
    """The app on a free local port, in a thread of this process."""
    import uvicorn

    from synthmatch.app.server import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(create_app(allowed_hosts=("127.0.0.1",)), host="127.0.0.1",
                            port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    end = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > end or not thread.is_alive():
            raise RuntimeError("the web app did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=15)
    assert not thread.is_alive(), "the web app did not stop"


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--mute-audio",
                 "--window-size=1280,900", "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(flag)
    session = webdriver.Chrome(options=options, service=Service(driver))
    session.set_page_load_timeout(20)
    yield session
    session.quit()


def sound(path: Path, rate: int = 44100) -> Path:
    """A plucked C4 with an overtone, stereo 24-bit: what a user might drop on the page."""
    import soundfile

    t = np.arange(int(1.5 * rate)) / rate
    tone = (0.5 * np.sin(2 * np.pi * 261.63 * t) + 0.2 * np.sin(2 * np.pi * 523.25 * t)) \
        * np.exp(-3.0 * t)
    soundfile.write(path, np.stack([tone, 0.8 * tone], axis=1), rate, subtype="PCM_24")
    return path


def test_upload_match_listen_and_adjust(browser, server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(browser, 25, poll_frequency=0.1)
    browser.get(server)
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#synth option"))
    # A text file named like a sound: the server's refusal is shown on the page.
    fake = tmp_path / "notes.wav"
    fake.write_text("not a sound at all")
    browser.find_element(By.ID, "file").send_keys(str(fake))
    browser.find_element(By.ID, "start").click()
    wait.until(lambda b: b.find_element(By.ID, "error").is_displayed())
    assert "not an audio file" in browser.find_element(By.ID, "error").text

    browser.find_element(By.ID, "file").send_keys(str(sound(tmp_path / "pluck.wav")))
    assert browser.find_element(By.ID, "file-name").text == "pluck.wav"
    assert not browser.find_element(By.ID, "error").is_displayed()
    Select(browser.find_element(By.ID, "synth")).select_by_value("subtractive")
    budget = browser.find_element(By.ID, "budget")
    budget.clear()
    budget.send_keys("16")
    browser.find_element(By.ID, "start").click()

    wait.until(lambda b: b.find_element(By.ID, "result").is_displayed())
    assert browser.find_element(By.ID, "error").is_displayed() is False
    assert "16 renders" in browser.find_element(By.ID, "status").text

    def loaded(b) -> bool:  # both players have decoded a 1 s sound, the picture is drawn
        return b.execute_script(
            "const [t, m, img] = ['target', 'match', 'spectrograms'].map("
            "  (id) => document.getElementById(id));"
            "return t.readyState >= 1 && m.readyState >= 1 && img.complete"
            "  && img.naturalWidth > 0 && Math.abs(t.duration - 1) < 0.01"
            "  && Math.abs(m.duration - 1) < 0.01;")

    wait.until(loaded)
    sliders = browser.find_elements(By.CSS_SELECTOR, "#params input[type=range]")
    assert len(sliders) == 24  # one per parameter of the subtractive synth
    cutoff = browser.find_element(By.ID, "value-9")
    assert cutoff.text.endswith(" Hz")  # cutoff_hz, shown in real units
    before = {"audio": browser.find_element(By.ID, "match").get_attribute("src"),
              "cutoff": cutoff.text,
              "picture": browser.find_element(By.ID, "spectrograms").get_attribute("src")}
    assert "params=" not in before["audio"]

    slider = browser.find_element(By.ID, "param-9")
    for _ in range(60):  # keyboard steps of 0.001: a clear move of the cutoff
        slider.send_keys(Keys.ARROW_LEFT if float(slider.get_attribute("value")) > 0.5
                         else Keys.ARROW_RIGHT)
    wait.until(lambda b: "params=" in b.find_element(By.ID, "match").get_attribute("src"))
    wait.until(lambda b: b.find_element(By.ID, "value-9").text != before["cutoff"])
    wait.until(lambda b: "params=" in b.find_element(By.ID, "spectrograms").get_attribute("src"))
    wait.until(loaded)
    # The browser fetched the re-rendered sound from the server.
    fetched = browser.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name)"
        ".filter((n) => n.includes('/match.wav?params='))")
    assert fetched, "no re-render was requested"
    assert browser.find_element(By.ID, "edited").is_displayed()
    assert "params=" in browser.find_element(By.ID, "preset").get_attribute("href")

    target = Path(os.environ.get("SYNTHMATCH_SCREENSHOT") or tmp_path / "app.png")
    target.parent.mkdir(parents=True, exist_ok=True)
    browser.execute_script("document.activeElement.blur(); window.scrollTo(0, 0)")
    for _ in range(2):  # the whole page: resize until it fits (the layout may reflow)
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1280, height + 140)
        time.sleep(0.2)
    assert browser.save_screenshot(str(target))
    assert target.stat().st_size > 10_000
