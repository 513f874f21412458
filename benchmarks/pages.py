"""Page-speed benchmark: the gallery over a throttled connection, before and after, in one run.

Run: ``.venv/bin/python -m benchmarks.pages`` (``make bench`` runs it too). It serves two copies
of the app side by side, each on its embedded defaults (labels off, so both hold the same bytes)
and each seeded with the same 24 photos (``benchmarks.gallery``):

- **before**: commit ``511498e`` (``--baseline``), the gallery before the week's UI work, checked
  out with ``git worktree add`` into a temporary directory and removed afterwards;
- **after**: this checkout.

Each load is a fresh browser context (a cold cache) in Debian's headless Chromium, throttled
through the DevTools protocol: ``Network.emulateNetworkConditions`` at "Fast 3G" (1.6 Mbit/s
down, 750 kbit/s up, 150 ms round trip) and ``Emulation.setCPUThrottlingRate`` 4x. Loads of the
two alternate, so a busy neighbour slows both alike. Per load it records

- largest contentful paint (``PerformanceObserver`` on ``largest-contentful-paint``, buffered;
  the last entry once the network is idle) and which element it was;
- the load event (``PerformanceNavigationTiming.loadEventEnd``);
- bytes over the wire (the sum of ``Network.loadingFinished.encodedDataLength``: headers and
  bodies, as transferred) and the number of requests (network ones: not ``data:`` URLs);

and prints the median of ``--loads`` loads of each, and after / before. Figures, not asserts.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Error, sync_playwright

from benchmarks.gallery import ROOT, App, photos
from benchmarks.machine import cpu_model
from tests.browser import CHROMIUM, CHROMIUM_ARGS

BASELINE = "511498e"
IMAGES = 24
#: Chrome DevTools' "Fast 3G" figures, as the issue names them.
NETWORK = {
    "offline": False,
    "latency": 150,  # ms, added to each round trip
    "downloadThroughput": 1.6e6 / 8,  # bytes per second
    "uploadThroughput": 750e3 / 8,
}
CPU_SLOWDOWN = 4

LCP_OBSERVER = """
  window.__lcp = null;
  new PerformanceObserver((list) => {
    const entries = list.getEntries();
    const last = entries[entries.length - 1];
    const el = last.element;
    window.__lcp = {
      ms: last.startTime,
      what: last.url ? 'img ' + last.url.split('/').pop()
                     : (el ? el.tagName.toLowerCase() + ' text' : 'gone'),
    };
  }).observe({ type: 'largest-contentful-paint', buffered: true });
"""
PAGE_FIGURES = """
  () => ({ lcp: window.__lcp,
           load: performance.getEntriesByType('navigation')[0].loadEventEnd })
"""


@dataclass(frozen=True)
class Load:
    lcp_ms: float
    lcp_element: str
    load_ms: float
    transferred: int
    requests: int


def load_gallery(browser: Browser, url: str, *, cpu_slowdown: int) -> Load:
    """One cold load of ``url`` at 1280x800 over the throttled connection."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.add_init_script(LCP_OBSERVER)
        cdp = context.new_cdp_session(page)
        transferred: list[float] = []
        # Chromium reports data: URLs (the gallery's painted placeholders, Bootstrap's inline
        # SVG icons) as loads too; they never touch the network, so they are not counted.
        local: set[str] = set()

        def sent(event: dict[str, Any]) -> None:
            if event["request"]["url"].startswith("data:"):
                local.add(event["requestId"])

        def finished(event: dict[str, Any]) -> None:
            if event["requestId"] not in local:
                transferred.append(event["encodedDataLength"])

        cdp.on("Network.requestWillBeSent", sent)
        cdp.on("Network.loadingFinished", finished)
        cdp.send("Network.enable")
        cdp.send("Network.clearBrowserCache")
        cdp.send("Network.emulateNetworkConditions", NETWORK)
        if cpu_slowdown > 1:
            cdp.send("Emulation.setCPUThrottlingRate", {"rate": cpu_slowdown})
        page.goto(url, wait_until="load", timeout=180_000)
        page.wait_for_load_state("networkidle", timeout=180_000)
        figures: dict[str, Any] = page.evaluate(PAGE_FIGURES)
        lcp = figures["lcp"] or {"ms": float("nan"), "what": "none"}
        return Load(
            lcp_ms=float(lcp["ms"]),
            lcp_element=str(lcp["what"]),
            load_ms=float(figures["load"]),
            transferred=int(sum(transferred)),
            requests=len(transferred),
        )
    finally:
        context.close()


def cpu_throttling_works(browser: Browser) -> bool:
    """Whether this Chromium honours Emulation.setCPUThrottlingRate (a busy loop slows down)."""
    spin = "() => { const t = performance.now(); let x = 0; for (let i = 0; i < 3e7; i++) x += i;"
    spin += " return performance.now() - t; }"
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto("about:blank")
        cdp = context.new_cdp_session(page)
        plain = min(page.evaluate(spin) for _ in range(3))
        try:
            cdp.send("Emulation.setCPUThrottlingRate", {"rate": CPU_SLOWDOWN})
        except Error:  # any refusal means "not available here"
            return False
        slowed = min(page.evaluate(spin) for _ in range(3))
        return bool(slowed > plain * (CPU_SLOWDOWN / 2))
    finally:
        context.close()


@contextmanager
def checkout(commit: str, scratch: Path) -> Iterator[Path]:
    """``commit`` in a temporary git worktree (detached), removed again afterwards."""
    path = scratch / f"tree-{commit}"
    git = ["git", "-C", str(ROOT)]
    subprocess.run(
        [*git, "worktree", "add", "--detach", str(path), commit], check=True, capture_output=True
    )
    try:
        yield path
    finally:
        subprocess.run(
            [*git, "worktree", "remove", "--force", str(path)], check=False, capture_output=True
        )


def revision(tree: Path) -> str:
    head = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return head + (" + uncommitted changes" if dirty else "")


def median(loads: list[Load], field: str) -> float:
    return float(statistics.median(getattr(load, field) for load in loads))


def most_common(values: list[str]) -> str:
    return max(set(values), key=values.count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--loads", type=int, default=5, help="cold loads of each gallery")
    parser.add_argument("--baseline", default=BASELINE, help="the 'before' commit")
    args = parser.parse_args()

    seeds = photos(IMAGES)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-pages-") as tmp:
        scratch = Path(tmp)
        with checkout(args.baseline, scratch) as old_tree:
            labels_off = {"LABELER": "none"}
            trees = {"before": old_tree, "after": ROOT}
            revisions = {name: revision(tree) for name, tree in trees.items()}
            with (
                App(scratch / "before", source=old_tree, env=labels_off) as before,
                App(scratch / "after", source=ROOT, env=labels_off) as after,
            ):
                apps = {"before": before, "after": after}
                for name, app in apps.items():
                    print(
                        f"seeding {name} ({revisions[name]}) with {IMAGES} images...",
                        file=sys.stderr,
                    )
                    for filename, data in seeds:
                        app.upload(filename, data)
                with sync_playwright() as driver:
                    browser = driver.chromium.launch(
                        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
                    )
                    chromium = browser.version
                    cpu = CPU_SLOWDOWN if cpu_throttling_works(browser) else 1
                    results: dict[str, list[Load]] = {"before": [], "after": []}
                    # A warm-up load of each: the servers' first requests import and compile.
                    for app in apps.values():
                        load_gallery(browser, app.url + "/", cpu_slowdown=1)
                    for i in range(args.loads):
                        for name, app in apps.items():
                            load = load_gallery(browser, app.url + "/", cpu_slowdown=cpu)
                            results[name].append(load)
                            print(f"load {i + 1} {name}: {load}", file=sys.stderr)
                    browser.close()
    report(results, revisions, chromium, cpu, args.loads, load_before, os.getloadavg()[0])


def report(
    results: dict[str, list[Load]],
    revisions: dict[str, str],
    chromium: str,
    cpu: int,
    loads: int,
    load_before: float,
    load_after: float,
) -> None:
    before, after = results["before"], results["after"]
    throttle = f"CPU {cpu}x slower" if cpu > 1 else "CPU throttling unavailable"
    print(
        f"\nGallery of {IMAGES} images at 1280x800, cold cache, Fast 3G (1.6 Mbit/s down, "
        f"150 ms RTT), {throttle}; median of {loads} loads each.\n"
        f"before: {revisions['before']}; after: {revisions['after']}\n"
        f"Chromium {chromium}; {cpu_model()}, {os.cpu_count()} logical cores; Python "
        f"{platform.python_version()}; 1-minute load average {load_before:.2f} before, "
        f"{load_after:.2f} after\n"
    )
    rows = [
        ("largest contentful paint, ms", "lcp_ms", 1.0, "{:.0f}"),
        ("load event, ms", "load_ms", 1.0, "{:.0f}"),
        ("transferred, KiB", "transferred", 1 / 1024, "{:.0f}"),
        ("requests", "requests", 1.0, "{:.0f}"),
    ]
    print("| measure | before | after | after / before |\n|---|---:|---:|---:|")
    for title, field, scale, fmt in rows:
        b, a = median(before, field), median(after, field)
        ratio = f"{a / b:.2f}x" if b else "-"
        print(f"| {title} | {fmt.format(b * scale)} | {fmt.format(a * scale)} | {ratio} |")
    print(
        f"| LCP element (most loads) | {most_common([x.lcp_element for x in before])} "
        f"| {most_common([x.lcp_element for x in after])} | |"
    )


if __name__ == "__main__":
    main()
