"""The web app (``python -m fadm_lightning.app``): its API through ``gradio_client``, and (slow)
the page in a real headless Chromium.

The model is the tiny 256×256 FADM of ``test_inference.py`` (landmark attributes, a tiny FOMM with
random weights, saved as a training checkpoint): these tests check the mechanics of the app
(uploads, frame counts, errors, the temporary folder), not the quality of the output.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fadm_lightning.inference.jobs import JobError
from fadm_lightning.media.video import iter_frames, probe_video

from ..conftest import FIXTURES, REPO, TEST_THREADS
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
    running.workspace.upload_grace_s = 0.0  # the API's uploads go as soon as their job ends
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
    assert "notes.txt" in message and "not an image" in message, message
    assert str(server.workspace.root) not in message  # the name as uploaded, not the temp path
    assert set(server.workspace.files()) == before, "the failed job left files behind"

    # a video over the limit: a message naming the limit, nothing left behind
    server.web.settings.max_video_seconds = 0.1
    try:
        with pytest.raises(AppError, match="max_video_seconds"):
            client.predict(
                handle_file(str(FIXTURES / "source.png")),
                handle_file(str(clip)),
                api_name="/animate",
            )
    finally:
        server.web.settings.max_video_seconds = 60.0
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


# ------------------------------------------------------------------------------ load and limits
def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


BURST = """
import json, sys, threading, time
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

url, clip, folder, clients = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
outcomes, start = {}, threading.Barrier(clients)

def one(i):
    client = Client(url, verbose=False, download_files=f"{folder}/dl{i}")
    start.wait(60)
    began = time.perf_counter()
    try:
        mp4 = client.predict(handle_file(clip), max_frames=4, api_name="/rectify")
        outcomes[i] = ("result", mp4, time.perf_counter() - began)
    except AppError as err:
        outcomes[i] = ("error", str(err), time.perf_counter() - began)

threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(clients)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join(timeout=300)
print(json.dumps(list(outcomes.values())))
"""


def _burst(server, clip, folder: Path, clients: int) -> tuple[list, list, float]:
    """``clients`` API calls of /rectify (4 frames) at once from another process (so that this
    process's memory is the server's): (results, busy answers, seconds)."""
    folder.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", BURST, server.url, str(clip), str(folder), str(clients)],
        capture_output=True, text=True, timeout=400, env={**os.environ, "OMP_NUM_THREADS": str(TEST_THREADS)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    outcomes = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(outcomes) == clients, f"{clients - len(outcomes)} clients got no answer in 300 s"
    results = [o for o in outcomes if o[0] == "result"]
    busy = [o for o in outcomes if o[0] == "error"]
    return results, busy, time.perf_counter() - began


def test_twenty_concurrent_clients_get_a_result_or_busy_and_nothing_leaks(server, clip, workdir):
    """20 API clients at once on the loopback, twice: each gets its mp4 or a "busy, position N"
    answer at once (one job runs, ``max_queue`` wait); no upload stays behind, and the second
    burst does not grow the memory (the first one warms up threads and caches)."""
    server.web.queue.max_waiting = 2
    # the 20 uploads are one file in Gradio's cache (stored by content): the first job to end
    # must not take it from the others (the default grace period)
    server.workspace.upload_grace_s = 60.0
    before_files = set(server.workspace.files())
    rss = []
    try:
        for burst in range(2):
            results, busy, wall = _burst(server, clip, workdir / f"burst{burst}", 20)
            rss.append(_rss_mb())
            for _, message, _ in busy:
                assert re.search(r"busy, position (\d+)", message), message
                assert int(re.search(r"position (\d+)", message).group(1)) >= 4  # 1 runs, 2 wait
            assert results, "no client got its video"
            for _, mp4, _ in results:
                assert probe_video(mp4).num_frames == 4
            # a busy answer comes at once, not after the jobs ahead of it
            fastest_result = min(seconds for _, _, seconds in results)
            assert max(seconds for _, _, seconds in busy) < fastest_result + 5
            print(f"20 clients: {len(results)} results, {len(busy)} busy, {wall:.1f} s, "
                  f"RSS {rss[-1]:.0f} MiB")  # fmt: skip
    finally:
        server.web.queue.max_waiting = server.web.settings.max_queue
        server.workspace.upload_grace_s = 0.0
    # no upload is left once the grace period is over; what remains are the results
    server.workspace.sweep_uploads()
    new = set(server.workspace.files()) - before_files
    assert all(re.search(r"_rectified(_side_by_side)?\.mp4$", p.name) for p in new), sorted(new)
    assert rss[1] - rss[0] < 100, f"the second burst grew the memory by {rss[1] - rss[0]:.0f} MiB"


def test_a_job_over_max_seconds_is_refused_with_its_estimate_and_the_faster_preset(server, clip):
    """The estimate (measured per-call cost × calls per frame × frames) decides before any
    work; the message gives it and the preset that fits."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    web = server.web
    assert "1 denoiser call per frame" in web.preset_label("fast")  # sampler.steps=1 here
    assert "100 denoiser calls per frame" in web.preset_label("quality")
    quick, slow = web.estimate(8, "fast").seconds, web.estimate(8, "quality").seconds
    assert slow > 10 * quick > 0
    before = set(server.workspace.files())
    client = Client(server.url, verbose=False)
    web.settings.max_seconds = (quick + slow) / 2
    try:
        began = time.perf_counter()
        with pytest.raises(AppError) as caught:
            client.predict(handle_file(str(clip)), preset="quality", max_frames=8,
                           api_name="/rectify")  # fmt: skip
        refused_in = time.perf_counter() - began
    finally:
        web.settings.max_seconds = 300.0
    message = str(caught.value)
    assert "max_seconds" in message and "8 frames × (100 denoiser calls" in message, message
    assert "choose the fast preset (1 call per frame" in message, message
    assert refused_in < 10, refused_in
    assert set(server.workspace.files()) == before


def test_a_running_job_stops_at_twice_max_seconds(server, clip):
    web = server.web
    saved = (web.costs.call_s, web.costs.frame_s, web.settings.max_seconds)
    web.costs.call_s, web.costs.frame_s = 0.0, 0.0  # an estimate of 0 s lets the job start
    web.settings.max_seconds = 1e-3
    before = set(server.workspace.files())
    try:
        with pytest.raises(JobError, match=r"stopped after .* twice the limit"):
            web.rectify(str(clip), max_frames=8)
    finally:
        web.costs.call_s, web.costs.frame_s, web.settings.max_seconds = saved
    assert set(server.workspace.files()) == before


def test_the_quality_label_of_a_release_says_100_calls(server):
    """A model whose own sampler is the official one (a converted release): the default preset's
    label says 100 calls per frame, not "a distilled student"."""
    from fadm_lightning.inference.jobs import WebApp
    from fadm_lightning.inference.model import SamplerSettings
    from fadm_lightning.sampler import OFFICIAL

    web = server.web
    pipe = copy.copy(web.refiner.pipe)  # the same networks, the official sampler as its own
    pipe.sampler = OFFICIAL
    release = replace(web.refiner, pipe=pipe)
    app = WebApp(release, SamplerSettings(), web.animate_options, web.rectify_options,
                 web.settings, web.workspace, log=lambda m: None)  # fmt: skip
    label = app.preset_label("fast")
    assert "100 denoiser calls per frame" in label and "100 steps, η=1" in label, label
    assert app.fastest_preset() == "balanced"


def test_uploads_are_size_limited_names_stay_inside_and_the_server_is_local(
    ckpt, clip, server, workdir
):
    """A second app with max_upload_mb=1: a 2 MB upload is refused by the server; an upload with
    a hostile name gives a result whose name has only safe characters, inside the folder."""
    from gradio_client import Client, handle_file

    from fadm_lightning.inference.app import start

    assert server.url.startswith("http://127.0.0.1:")  # the default server_name
    cfg = _compose("app", [*app_overrides(ckpt, free_port()), "max_upload_mb=1"])
    small = start(cfg, log=lambda message: None)
    try:
        client = Client(small.url, verbose=False, download_files=str(workdir / "dl_small"))
        big = workdir / "big.mp4"
        big.write_bytes(clip.read_bytes() + os.urandom(2 * 2**20))
        with pytest.raises(Exception, match=r"(?i)size|large|413"):
            client.predict(handle_file(str(big)), api_name="/rectify")
        assert not [p for p in small.workspace.files() if p.name == "big.mp4"]

        hostile = workdir / "..%2F..%2Fescape; rm -rf ~ $(id).mp4"
        shutil.copy(clip, hostile)
        mp4 = client.predict(handle_file(str(hostile)), max_frames=2, api_name="/rectify")
        assert probe_video(mp4).num_frames == 2
        made = [p for p in small.workspace.jobs.rglob("*.mp4")]
        assert made and all(re.fullmatch(r"[\w.-]+", p.name) for p in made), made
        assert all(small.workspace.root in p.resolve().parents for p in small.workspace.files())
    finally:
        small.close()
    assert not small.workspace.root.exists()


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
    env = {**os.environ, "OMP_NUM_THREADS": str(TEST_THREADS), "PYTHONUNBUFFERED": "1"}
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
