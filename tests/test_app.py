"""The web app: its handlers called directly, and the page driven in Debian's headless Chromium.

Run by hand, this file takes the README's screenshot with the same browser code as the test:
    cp photos/kit/val/lomiri__backgrounds-picosdeeuropa_by_Aitzol_Berasategi.jpg /tmp/picos_de_europa.jpg
    python tests/test_app.py --model cinn/pretrained/default --photo /tmp/picos_de_europa.jpg
"""

from __future__ import annotations

import argparse
import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from cinn.programs.app import EXPIRED, ColorizerApp, Limits, main
from PIL import Image

from cinn.colorizer import Colorizer

ROOT = Path(__file__).resolve().parents[1]
# Gradio 6.31's queue statistics use pandas options that pandas 3 deprecates: not ours to fix.
pytestmark = [
    pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]
CHROMIUM = Path("/usr/bin/chromium")
# Without the networking flags Chromium calls Google's servers at start, which a closed network refuses.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
WIDTH, HEIGHT = 203, 141  # odd on purpose: not multiples of any stride
CAPTION = re.compile(r"^#(\d+) · -?\d+\.\d{3} bits/dim · T=0\.8$")
LIMITS = Limits(max_file_mb=1, max_megapixels=0.05, max_waiting=1)  # small, so the "huge" uploads are cheap


def write_photo(path: Path, width: int = WIDTH, height: int = HEIGHT) -> Path:
    """A colour photo: a gradient, a bright square and noise."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:height, 0:width]
    image = np.stack([cols / width * 200, rows / height * 160, 120 + 0 * rows], axis=-1)
    image[height // 4 : height // 2, width // 3 : width // 2] = (240, 230, 40)
    Image.fromarray(np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)).save(path)
    return path


def as_text(markdown: str) -> str:
    """The words a status line shows, without Markdown's emphasis and escapes."""
    return re.sub(r"[\\*]", "", markdown)


def bad_uploads(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, words the page must show)."""
    corrupt = folder / "broken.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    text = folder / "notes.txt"
    text.write_text("not a photo\n")
    huge = write_photo(folder / "huge.png", 400, 300)  # 0.12 megapixels > LIMITS
    return {
        "corrupt": (corrupt, "Cannot use broken.png"),
        "not an image": (text, "Cannot use notes.txt: not an image format"),
        "huge": (huge, "400x300 pixels, more than this page"),
        "a sliver": (write_photo(folder / "sliver.png", 20, 300), "20x300 pixels are longer than"),
    }


@pytest.fixture(scope="module")
def app(debug_release):
    app = ColorizerApp(Colorizer.from_pretrained(debug_release), LIMITS)
    yield app
    app.close()


def test_handlers_use_colorize_photo_and_more_keeps_the_earlier_samples(app, tmp_path):
    photo = write_photo(tmp_path / "photo.png")
    gray, items, status, session = app.colorize(str(photo), 2, 0.7, 5, None)
    assert gray.mode == "L" and gray.size == (WIDTH, HEIGHT)
    assert len(items) == 2 and "photo.png, 203×141 pixels: 2 colorizations, seed 5" in as_text(status)
    assert "own colours" in status
    # The same call the library user makes, with the same seed, gives the same pixels: one code path.
    expected = app.model.colorize_photo(Image.open(photo), 2, 0.7, torch.Generator().manual_seed(5))
    for (path, caption), image, bits in zip(items, expected.images, expected.bits_per_dim, strict=True):
        assert np.array_equal(np.asarray(Image.open(path)), np.asarray(image))
        assert f"{bits:.3f} bits/dim" in caption
    items_more, status, session = app.more(3, 0.7, session)
    assert items_more[:2] == items and len(items_more) == 5 and "5 colorizations" in status
    assert len({Image.open(path).tobytes() for path, _ in items_more}) == 5, "samples should differ"
    _, items_mode, _, _ = app.colorize(str(photo), 4, 0.0, 5, session)
    assert len(items_mode) == 1, "temperature 0 gives the single mode-like sample"


def test_bad_uploads_give_a_sentence_and_no_session(app, tmp_path):
    for name, (path, words) in bad_uploads(tmp_path).items():
        for gray, gallery, status, session in (app.preview(str(path), None), app.colorize(str(path), 2, 0.7, 0, None)):
            assert (gray, gallery, session) == (None, [], None), name
            assert words in as_text(status), f"{name}: {status}"
    items, status, session = app.more(2, 0.7, None)
    assert (items, session) == ([], None) and "Colorize" in status


@contextmanager
def model_held(app: ColorizerApp, monkeypatch):
    """While the block runs, a colorization that starts stays in the model (``entered`` is set) until the
    block ends: a long colorization, without the wait."""
    entered, release = threading.Event(), threading.Event()
    colorize_photo = app.model.colorize_photo

    def held(*args, **kwargs):
        entered.set()
        release.wait(120)
        return colorize_photo(*args, **kwargs)

    monkeypatch.setattr(app.model, "colorize_photo", held)
    try:
        yield entered
    finally:
        release.set()


def wait_for(condition, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_requests_beyond_the_waiting_limit_are_told_the_page_is_busy(app, tmp_path, monkeypatch):
    import gradio  # noqa: F401  (imported by the server before any request; a first import is slow on a busy machine)

    photo = str(write_photo(tmp_path / "photo.png"))
    answers = []

    def click(seed: int) -> threading.Thread:
        thread = threading.Thread(target=lambda: answers.append(app.colorize(photo, 1, 0.5, seed, None)))
        thread.start()
        return thread

    with model_held(app, monkeypatch) as entered:
        running, waiting = click(1), click(2)  # LIMITS: one request in the model, one waiting
        wait_for(lambda: entered.is_set() and app.model_turns.admitted == 2)
        turned_away = click(3)
        turned_away.join(60)
        assert not turned_away.is_alive(), "a request beyond the waiting limit must be answered at once"
        assert "The page is busy: 2 colorizations are running or waiting" in answers[0][2]
        assert answers[0][3] is None, "a request turned away keeps no session"
    running.join(120)
    waiting.join(120)
    for _, items, status, session in answers[1:]:
        assert len(items) == 1 and "1 colorization" in status, "the requests that waited are served"
        app.forget(session)


def test_a_preview_never_waits_behind_a_colorization(app, tmp_path, monkeypatch):
    from gradio_client import Client, handle_file

    photo = write_photo(tmp_path / "photo.png")
    corrupt, words = bad_uploads(tmp_path)["corrupt"]
    with serving(app) as url:
        client = Client(url, verbose=False)
        with model_held(app, monkeypatch) as entered:
            colorization = client.submit(handle_file(str(photo)), 1, 0.5, 0, api_name="/colorize")
            wait_for(entered.is_set)
            _, _, status = client.submit(handle_file(str(corrupt)), api_name="/preview").result(timeout=30)
            assert words in as_text(status)
            assert not colorization.done(), "the colorization was still in the model"
        assert "1 colorization" in as_text(colorization.result(timeout=120)[2])


def test_an_idle_session_is_forgotten_and_its_files_removed(app, tmp_path):
    import gradio as gr

    photo = str(write_photo(tmp_path / "photo.png"))
    idle = app.colorize(photo, 1, 0.5, 0, None)[3]  # e.g. an API caller's, which never closes its session
    active = app.colorize(photo, 1, 0.5, 1, None)[3]
    past = time.time() - app.limits.session_seconds - 1
    os.utime(idle.folder, (past, past))
    app.preview(None, None)  # every request sweeps
    assert not idle.folder.exists() and active.folder.exists()
    assert app.more(1, 0.5, idle) == ([], EXPIRED, None)
    assert len(app.more(1, 0.5, active)[0]) == 2
    app.forget(active)
    # Gradio drops the session's state (the decoded photo) after the same time, and its own copies of the files.
    page = app.build()
    states = [block for block in page.blocks.values() if isinstance(block, gr.State)]
    assert [state.time_to_live for state in states] == [app.limits.session_seconds]
    assert page.delete_cache[1] == app.limits.session_seconds


def test_sigterm_stops_the_server_and_removes_its_files(debug_release, tmp_path):
    port = free_port()
    env = {**os.environ, "TMPDIR": str(tmp_path), "GRADIO_TEMP_DIR": str(tmp_path / "gradio")}
    command = [sys.executable, str(ROOT / "pipelines" / "app.py"), "--model", str(debug_release), "--port", str(port)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: serves(port) or server.poll() is not None, seconds=300)  # a busy machine starts slowly
        assert server.poll() is None, server.communicate()[0]
        time.sleep(1)  # the stop may come while Gradio is still starting: the files must go then too
        assert len(list(tmp_path.glob("cinn-app-*"))) == 1
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=60)[0]
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.returncode == 0, output
    assert list(tmp_path.glob("cinn-app-*")) == [], "the colorizations' folder outlived the server"


def serves(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_main_reports_a_missing_model(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "nothing"), "--port", "7999"]) == 2
    assert f"model release {str(tmp_path / 'nothing')!r} does not exist" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serving(app: ColorizerApp):
    """The page on a free localhost port for the duration of the block."""
    port = free_port()
    page = app.launch("127.0.0.1", port, block=False)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        page.close()


@contextmanager
def browser_page(url: str, width: int = 1400, height: int = 900):
    """A page of headless Chromium on ``url``, and the list of requests it made to other hosts."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(60_000)  # generous: CI machines may be busy
            elsewhere = []
            local = (url, "data:", "blob:")
            page.on("request", lambda request: None if request.url.startswith(local) else elsewhere.append(request.url))
            page.goto(url)
            page.wait_for_selector("#colorize")
            yield page, elsewhere
        finally:
            browser.close()


def upload(page, path: Path, expected_status: str = "") -> str:
    """Replaces the photo as a user would (clear, then choose a file) -> the status line once it shows the words."""
    chooser = page.locator("#photo input[type=file]")
    if not chooser.count():  # a file is shown: Gradio offers the chooser again once it is cleared
        page.locator("#photo button[aria-label='Clear']").click()
    chooser.set_input_files(str(path))
    if expected_status:
        page.locator("#status", has_text=expected_status).wait_for()
    return page.locator("#status").inner_text()


def colorize(page, button: str, total: int) -> list[tuple[str, str]]:
    """Clicks ``button`` and waits for ``total`` colorizations -> [(image URL, caption)]."""
    page.click(button)
    page.wait_for_function(f"document.querySelectorAll('#gallery .thumbnail-lg img').length === {total}")
    page.locator("#status", has_text=f"{total} colorization").wait_for()
    images = page.locator("#gallery .thumbnail-lg img")
    return [(image.get_attribute("src"), image.get_attribute("alt")) for image in images.all()]


# Skipped on a developer's machine without Chromium; in CI (CI=true) a missing browser fails the test.
@pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"),
    reason="Debian's chromium is not installed (apt-get install chromium)",
)
def test_page_in_headless_chromium(app, tmp_path):
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: CI installs Debian's chromium (.ci/run) for this test"
    photo = write_photo(tmp_path / "photo.png")
    with serving(app) as url, browser_page(url) as (page, elsewhere):
        upload(page, photo, "ready")
        page.locator("#samples input[type=number]").fill("3")
        page.locator("#temperature input[type=number]").fill("0.8")
        page.locator("#seed input").fill("7")
        first = colorize(page, "#colorize", 3)
        second = colorize(page, "#more", 6)
        assert second[:3] == first, "More samples must keep the earlier colorizations"
        pngs = []
        for index, (src, caption) in enumerate(second, start=1):
            assert CAPTION.match(caption) and CAPTION.match(caption).group(1) == str(index), caption
            response = page.request.get(src)
            assert response.ok, src
            pngs.append(response.body())
            assert Image.open(io.BytesIO(pngs[-1])).size == (WIDTH, HEIGHT), "colorizations at full resolution"
        assert len(set(pngs)) == 6, "samples should differ"

        page.locator("#gallery .thumbnail-item").first.click()
        with page.expect_download() as download:
            page.locator("#gallery button[aria-label='Download']").first.click()
        assert download.value.suggested_filename == "photo_color_01.png"
        assert Path(download.value.path()).read_bytes() == pngs[0]

        for name, (path, words) in bad_uploads(tmp_path).items():
            upload(page, path, words)  # waits for the words: fails if they never show
            assert page.locator("#gallery .thumbnail-item").count() == 0, name
        oversized = tmp_path / "oversized.png"
        oversized.write_bytes(np.random.default_rng(0).bytes(LIMITS.max_file_mb * 2**20 + 1))
        upload(page, oversized)
        page.get_by_text('exceed the maximum allowed size of 1.0 Mb: "oversized.png"').wait_for()
        assert page.request.get(url).ok, "the server keeps serving"
        upload(page, photo, "ready")
        assert len(colorize(page, "#colorize", 3)) == 3
        assert elsewhere == [], f"the page reached beyond localhost: {elsewhere}"


def take_screenshot(argv: list[str] | None = None) -> None:
    """Serves a model, colorizes a photo in Chromium and saves the page as a PNG."""
    parser = argparse.ArgumentParser(description=take_screenshot.__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--photo", type=Path, required=True)
    parser.add_argument("--samples", default="6")
    parser.add_argument("--temperature", help="default: the page's")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "app_screenshot.png")
    args = parser.parse_args(argv)
    app = ColorizerApp(Colorizer.from_pretrained(args.model), model_name=args.model.name)
    with serving(app) as url, browser_page(url, 1280, 800) as (page, _):
        upload(page, args.photo, "ready")
        page.locator("#samples input[type=number]").fill(args.samples)
        if args.temperature:
            page.locator("#temperature input[type=number]").fill(args.temperature)
        colorize(page, "#colorize", int(args.samples))
        page.wait_for_function("[...document.querySelectorAll('img')].every(image => image.complete)")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.out), full_page=True)
    app.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    take_screenshot()
