"""The web app (``python -m fadm_lightning.app``): its API through ``gradio_client``, and (slow)
the page in a real headless Chromium.

The model is the tiny 256×256 FADM of ``test_inference.py`` (landmark attributes, a tiny FOMM with
random weights, saved as a training checkpoint): these tests check the mechanics of the app
(uploads, frame counts, errors, the temporary folder), not the quality of the output.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from fadm_lightning.media.video import iter_frames, probe_video

from ..conftest import FIXTURES, REPO
from .test_inference import TINY_256, _compose, save_checkpoint, write_video

pytest.importorskip("dlib", reason="the face crops and landmark attributes need dlib")
pytest.importorskip("gradio", reason="the web app needs gradio")
pytest.importorskip("gradio_client", reason="the API test needs gradio_client")
pytestmark = pytest.mark.filterwarnings("ignore:FOMMCoarseGenerator. RANDOM WEIGHTS")

CLIP_FRAMES = 8
CHROMEDRIVER = Path(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def app_overrides(ckpt: Path, port: int) -> list[str]:
    return [
        f"ckpt={ckpt}",
        f"server_port={port}",
        "sampler.steps=1",
        "sampler.batch_size=4",
        "device=cpu",
    ]


def frame_count(path: str | Path) -> int:
    return sum(1 for _ in iter_frames(path))


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("app")


@pytest.fixture(scope="module")
def ckpt(workdir) -> Path:
    return save_checkpoint(workdir / "tiny.ckpt", TINY_256)


@pytest.fixture(scope="module")
def clip(workdir) -> Path:
    """The first 8 frames of the real clip (with an AAC track)."""
    if not FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {FIXTURES}")
    frames = np.stack(list(iter_frames(FIXTURES / "driving.mp4", max_frames=CLIP_FRAMES)))
    return write_video(workdir / "clip8.mp4", frames, 25, audio="aac")


@pytest.fixture(scope="module")
def server(ckpt, clip):
    """The app in this process (the command's own ``start``) on a free port."""
    from fadm_lightning.inference.app import start

    cfg = _compose("app", app_overrides(ckpt, free_port()))
    running = start(cfg, log=lambda message: None)
    yield running
    running.close()
    assert not running.workspace.root.exists(), "the temporary folder outlived the app"


# ------------------------------------------------------------------------------ the API
def test_api_animates_the_real_portrait_and_refuses_a_text_file(server, clip, workdir):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(server.url, verbose=False, download_files=str(workdir / "downloads"))
    began = time.perf_counter()
    result = client.predict(
        handle_file(str(FIXTURES / "source.png")), handle_file(str(clip)), api_name="/animate"
    )
    seconds = time.perf_counter() - began
    assert isinstance(result, str) and result.endswith(".mp4"), result
    info = probe_video(result)
    assert (info.num_frames, info.width, info.height) == (CLIP_FRAMES, 256, 256)
    assert frame_count(result) == CLIP_FRAMES and info.audio_codec == "aac"
    print(f"/animate: {CLIP_FRAMES} frames in {seconds:.1f} s")

    # the API's uploads are removed once the job is done; its result stays until pruned
    before = set(server.workspace.files())
    notes = workdir / "notes.txt"
    notes.write_text("not a portrait\n")
    with pytest.raises(AppError) as caught:
        client.predict(handle_file(str(notes)), handle_file(str(clip)), api_name="/animate")
    message = str(caught.value)
    assert "notes.txt" in message and "unreadable image" in message, message
    assert str(server.workspace.root) not in message  # the name as uploaded, not the temp path
    assert set(server.workspace.files()) == before, "the failed job left files behind"

    # a video over the limit: a message naming the limit, nothing left behind
    server.web.settings.max_seconds = 0.1
    try:
        with pytest.raises(AppError, match="max_seconds"):
            client.predict(
                handle_file(str(FIXTURES / "source.png")),
                handle_file(str(clip)),
                api_name="/animate",
            )
    finally:
        server.web.settings.max_seconds = 60.0
    assert set(server.workspace.files()) == before


def test_api_rectify_and_no_face(server, clip, workdir):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(server.url, verbose=False, download_files=str(workdir / "downloads"))
    result = client.predict(handle_file(str(clip)), max_frames=5, api_name="/rectify")
    assert probe_video(result).num_frames == 5 and frame_count(result) == 5

    before = set(server.workspace.files())
    blank = workdir / "grey.mp4"
    write_video(blank, np.full((3, 64, 64, 3), 128, np.uint8), 25)
    with pytest.raises(AppError, match="no face"):
        client.predict(handle_file(str(blank)), api_name="/rectify")
    assert set(server.workspace.files()) == before


def test_page_is_served_offline(server):
    """The page and its theme name no address outside this machine (no web fonts, no CDN)."""
    with urllib.request.urlopen(server.url, timeout=30) as response:
        page = response.read().decode()
    with urllib.request.urlopen(server.url.rstrip("/") + "/theme.css", timeout=30) as response:
        theme = response.read().decode()
    for text in (page, theme):
        assert "fonts.googleapis" not in text and "cdn.jsdelivr" not in text
    assert "FADM" in page
    from fadm_lightning.inference import app

    assert not Path(app.__file__).with_suffix(".pyi").exists()  # Gradio writes none beside it


# ------------------------------------------------------------------------------ a real browser
def _chrome(download_dir: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1280,1500", "--disable-gpu"):  # fmt: skip
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def _shots_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("FADM_APP_SCREENSHOTS", tmp_path / "screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _upload(driver, container_id: str, path: Path) -> None:
    from selenium.webdriver.common.by import By

    field = driver.find_element(By.CSS_SELECTOR, f"#{container_id} input[type=file]")
    driver.execute_script("arguments[0].style.display = 'block';", field)
    field.send_keys(str(path))


def _wait_video_src(driver, container_id: str, timeout: float) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def src(d):
        found = d.find_elements(By.CSS_SELECTOR, f"#{container_id} video")
        value = found[0].get_attribute("src") if found else None
        return value or False

    return WebDriverWait(driver, timeout, poll_frequency=0.5).until(src)


@pytest.mark.slow
def test_browser_uploads_animates_and_plays_the_result(ckpt, clip, tmp_path):
    """The command in a subprocess; Chromium uploads the portrait and the clip, clicks Animate,
    and the video the page plays is downloaded and decoded."""
    if not (CHROMEDRIVER.exists() and CHROMIUM.exists()):
        pytest.skip(
            f"needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)"
        )
    pytest.importorskip("selenium", reason="needs selenium")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    temp = tmp_path / "apptemp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "fadm_lightning.app", *app_overrides(ckpt, port),
               f"temp_dir={temp}"]  # fmt: skip
    log = (tmp_path / "app.log").open("w")
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    shots = _shots_dir(tmp_path)
    driver = None
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, (tmp_path / "app.log").read_text()
            try:
                urllib.request.urlopen(url, timeout=5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the app did not start in 180 s"
                time.sleep(1)
        driver = _chrome(tmp_path)
        driver.get(url)
        WebDriverWait(driver, 60).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "#portrait input[type=file]")
        )
        driver.save_screenshot(str(shots / "animate_before.png"))
        driver.find_element(By.ID, "animate-button").click()  # nothing uploaded: a message
        WebDriverWait(driver, 60).until(
            lambda d: "give the portrait and the driving video" in d.page_source
        )
        driver.save_screenshot(str(shots / "animate_error.png"))
        _upload(driver, "portrait", FIXTURES / "source.png")
        _upload(driver, "driving", clip)
        WebDriverWait(driver, 60).until(
            lambda d: (
                d.find_elements(By.CSS_SELECTOR, "#driving video")
                and d.find_elements(By.CSS_SELECTOR, "#portrait img")
            )
        )
        driver.find_element(By.ID, "animate-button").click()
        src = _wait_video_src(driver, "animated", 240)
        time.sleep(1)
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(str(shots / "animate_after.png"))
        served = tmp_path / "served.mp4"
        with urllib.request.urlopen(src, timeout=60) as response:
            served.write_bytes(response.read())
        assert frame_count(served) == CLIP_FRAMES
        assert probe_video(served).num_frames == CLIP_FRAMES

        driver.find_element(By.XPATH, "//button[@role='tab'][contains(., 'Rectify')]").click()
        WebDriverWait(driver, 30).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "#rectify-input input[type=file]")
        )
        _upload(driver, "rectify-input", clip)
        WebDriverWait(driver, 60).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "#rectify-input video")
        )
        driver.find_element(By.ID, "rectify-button").click()
        _wait_video_src(driver, "rectified", 240)
        time.sleep(1)
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(str(shots / "rectify_after.png"))
    finally:
        if driver is not None:
            driver.quit()
        process.send_signal(signal.SIGINT)  # Ctrl-C: the app removes its folder
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
    left = [p for p in temp.rglob("*") if p.is_file()] if temp.exists() else []
    assert not left, f"the app left {left}"
    if os.environ.get("FADM_APP_SCREENSHOTS") is None:
        shutil.rmtree(shots, ignore_errors=True)
