"""The web app measured from a browser (not a timed test): seconds from starting ``pedtumorseg serve`` until its
address answers and until the page is ready in the browser (the page opened as soon as the address answers), and
slider move -> a new axial frame in the browser (ms), on one case; then how long a second user's page takes on the
running server.

    PYTHONPATH=PedTumorSeg .venv/bin/python benchmarks/bench_web.py --data <folder with one case folder> \
        [--model bundle.zip] [--moves 10]

Needs the ``web`` extra, Playwright and Debian's chromium. The moves jump the NET -> ET ratio slider between its
ends (Home / End keys), so every move recomputes the relabel of the whole tumor box.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _start(data: str, model: str, port: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO / "PedTumorSeg"))
    command = [sys.executable, "-m", "pedtumorseg", "serve", "--data", data, "--port", str(port), "--device", "CPU"]
    if model:
        command += ["--model", model]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)


def _wait_answer(url: str, started: float, timeout: float = 180) -> float:
    while time.monotonic() - started < timeout:
        try:
            urllib.request.urlopen(url, timeout=2)
            return time.monotonic() - started
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the server did not answer")


def _measure(page, url: str, moves: int, started_at: float) -> dict:
    page.goto(url)
    page.wait_for_selector("#pts-open", timeout=60_000)
    ready = time.monotonic() - started_at
    page.click("#pts-open")
    page.wait_for_function("document.querySelector('#pts-status').innerText.includes('Apply')")
    page.click("#pts-apply")
    page.wait_for_function("document.querySelector('#pts-status').innerText.startsWith('Done')", timeout=900_000)
    page.wait_for_timeout(3000)
    axial = page.locator("#pts-views img.image-display-area").nth(3)
    thumb = page.locator("#pts-ratio_high [role=slider]")
    thumb.focus()
    latencies = []
    for i in range(moves):
        before = axial.get_attribute("src")
        t = time.monotonic()
        thumb.press("Home" if i % 2 == 0 else "End")
        page.wait_for_function("([el, s]) => el.src !== s", arg=[axial.element_handle(), before], timeout=30_000)
        latencies.append(1000 * (time.monotonic() - t))
        page.wait_for_timeout(1000)
    return {"page_ready_s": ready, "latencies_ms": latencies}


def _next_session(browser, url: str) -> float:
    """Seconds until a second user's page is ready on the running server (its worker was started ahead)."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    started = time.monotonic()
    page.goto(url)
    page.wait_for_selector("#pts-open", timeout=60_000)
    ready = time.monotonic() - started
    context.close()
    return ready


def main() -> None:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default="")
    parser.add_argument("--port", type=int, default=8790)
    parser.add_argument("--moves", type=int, default=10)
    args = parser.parse_args()
    url = f"http://127.0.0.1:{args.port}/"
    with sync_playwright() as p:  # the browser is open before the server starts, as a user's would be
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        started_at = time.monotonic()
        server = _start(args.data, args.model, args.port)
        try:
            answered = _wait_answer(url + "status", started_at)  # asking for the status starts no session
            result = _measure(page, url, args.moves, started_at)
            result["next_session_s"] = _next_session(browser, url)
        finally:
            os.killpg(server.pid, 15)
            server.wait(timeout=30)
            browser.close()
    lat = result["latencies_ms"]
    print(f"server answered {answered:.1f} s after its start; the page was ready {result['page_ready_s']:.1f} s after "
          f"the start; a second user's page was ready {result['next_session_s']:.1f} s after opening it")
    print(f"slider -> new axial frame: median {statistics.median(lat):.0f} ms (min {min(lat):.0f}, max "
          f"{max(lat):.0f}, {len(lat)} moves)")


if __name__ == "__main__":
    main()
