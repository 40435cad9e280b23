"""The search page (search.web) served by a real uvicorn, over HTTP and in headless Chromium.

The browser test drives Debian's Chromium (/usr/bin/chromium, installed by scripts/setup_browser.sh, which
``make test`` runs) with Playwright; it never downloads a browser.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from search import VideoIndex
from tests.helpers import colour_videos, save_noise_adapters

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> VideoIndex:
    base = tmp_path_factory.mktemp("web")
    colour_videos(base / "videos")
    (base / "outside").mkdir()
    (base / "outside" / "secret.mp4").write_bytes(b"not for the web")
    adapters = save_noise_adapters(base / "adapters", seed=0)
    index = VideoIndex.build(
        base / "index", videos=[base / "videos"], adapters=adapters, pretrained=None, window=1, progress=False
    )
    os.symlink(base / "outside" / "secret.mp4", base / "videos" / "escape.mp4")  # added after indexing
    index.encoder  # noqa: B018  (loaded before the server's first request)
    return index


@pytest.fixture(scope="module")
def server(index):
    """``(host, port)`` of the app served by uvicorn in a thread."""
    import uvicorn

    from search.web import create_app

    config = uvicorn.Config(create_app(index), host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield server.servers[0].sockets[0].getsockname()[:2]
    server.should_exit = True
    thread.join(10)


def get(server, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection(*server, timeout=30)
    conn.request("GET", path, headers=headers or {})  # the path is sent as written, '..' included
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


def test_api_search_thumbnails_and_range_requests(server, index):
    status, _, body = get(server, "/api/search?q=a%20blue%20video&k=5")
    assert status == 200
    results = json.loads(body)["results"]
    expected = index.search("a blue video", k=5)
    assert [r["entry"] for r in results] == [r.entry for r in expected] and len(results) == 5
    status, headers, thumb = get(server, results[0]["thumb_url"])
    assert status == 200 and headers["content-type"] == "image/jpeg" and thumb[:2] == b"\xff\xd8"

    path = Path(expected[0].path)
    size = path.stat().st_size
    status, headers, whole = get(server, f"/video/{expected[0].entry}")
    assert status == 200 and whole == path.read_bytes() and headers["accept-ranges"] == "bytes"
    assert headers["content-type"] == "video/mp4"
    status, headers, part = get(server, f"/video/{expected[0].entry}", {"Range": "bytes=100-199"})
    assert status == 206 and part == path.read_bytes()[100:200]
    assert headers["content-range"] == f"bytes 100-199/{size}"
    status, _, body = get(server, "/api/search?q=%20")
    assert status == 400 and "empty query" in json.loads(body)["error"]


def test_files_outside_the_indexed_roots_are_refused(server, index):
    rel = index.entry(0).path.split(index.roots[0] + "/")[1]
    assert get(server, f"/files/0/{rel}")[0] == 200
    for path in (
        "/files/0/../outside/secret.mp4",
        "/files/0/%2E%2E/outside/secret.mp4",
        "/files/0/escape.mp4",
        "/files/0//etc/passwd",
        "/files/0/..%5Coutside%5Csecret.mp4",  # backslashes
        "/files/0/red.mp4%00.txt",  # a NUL byte
    ):
        status, _, body = get(server, path)
        assert status == 403 and b"not for the web" not in body, path  # as the module docstring promises
    assert get(server, "/files/0/escape.mp4")[0] == 403  # a symlink whose target leaves the root
    for path in ("/files/7/red.mp4", "/files/-1/red.mp4", "/files/x/red.mp4"):  # -1 is not the last root
        status, _, body = get(server, path)
        assert (status, body) == (404, b"no such root"), path
    assert get(server, f"/video/{len(index)}")[0] == 404 and get(server, "/video/x")[0] == 404


@pytest.mark.parametrize("k", ["0", "-5", "three"])
def test_api_search_refuses_k_as_the_cli_does(server, k):
    status, _, body = get(server, f"/api/search?q=red&k={k}")
    assert status == 400
    assert json.loads(body)["error"] == f"k={k}: expected a whole number of results, at least 1"


@pytest.mark.slow
def test_page_in_headless_chromium(server, index, tmp_path):
    """Type a query, see the expected top result, click results: the player gets their file and start time."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: scripts/setup_browser.sh installs it")
        pytest.skip(f"{CHROMIUM} is missing: run scripts/setup_browser.sh")
    from playwright.sync_api import sync_playwright

    query = "a yellow video"
    expected = index.search(query, k=24)
    later = next(r for r in expected if r.start)  # a window that starts after 0 s
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.goto(f"http://{server[0]}:{server[1]}/")
            page.fill("#q", query)
            page.press("#q", "Enter")
            page.wait_for_selector(".result")
            cards = page.locator(".result")
            assert cards.count() == len(expected)
            assert cards.first.locator(".name").inner_text() == expected[0].video_id
            assert cards.first.get_attribute("data-entry") == str(expected[0].entry)
            page.wait_for_function("[...document.images].every((i) => i.complete && i.naturalWidth > 0)")
            page.screenshot(path=str(tmp_path / "search.png"))

            cards.first.click()
            src = page.eval_on_selector("#player", "v => v.src")
            assert src.split("/", 3)[3].startswith(f"video/{expected[0].entry}")
            page.locator(f'.result[data-entry="{later.entry}"]').click()
            src = page.eval_on_selector("#player", "v => v.src")
            assert src.endswith(f"/video/{later.entry}#t={later.start:g},{later.end:g}")
            page.wait_for_function("v => v.readyState >= 1", arg=page.query_selector("#player"))
            current = page.eval_on_selector("#player", "v => v.currentTime")
            assert later.start - 0.05 <= current <= later.end, (
                f"player at {current} s, expected {later.start}"
            )
        finally:
            browser.close()
    screenshot = os.environ.get("DISCOVLA_SEARCH_SCREENSHOT")
    if screenshot:  # how docs/search.png is made
        shutil.copy(tmp_path / "search.png", screenshot)
