"""What pages cost while their jobs run: CPU seconds of the server and of chromium over 30 s, with N sessions
whose oracles are queued or training (each forgot a different random 10 % of Fashion-MNIST, whose SPM oracles
take ~15 min), first on the Forget page, then on the Models page (where only the sidebar's progress redraws).

    .venv/bin/python bench/polling.py                 # 4 sessions
    .venv/bin/python bench/polling.py --sessions 8

A page with jobs going reruns a small fragment to see whether one has ended, and the sidebar redraws their
progress; pages/widgets.refresh_seconds says how often. Run it from another checkout to measure that code.
Ray's CPU (the oracles training) is printed beside, not counted: it is the work itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path

import classroom as C


async def measure(sessions: int, window_s: float) -> dict:
    from playwright.async_api import async_playwright

    home = Path(tempfile.mkdtemp(prefix="ue-polling-"))
    server = C.Server(C.app_env(home, "fashion-mnist"), home / "server.log")
    server.start(120)
    out = {}
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=C.chromium_path(), args=C.CHROMIUM_ARGS)
            pages = []
            for i in range(sessions):
                page = await (await browser.new_context(viewport=C.VIEWPORT)).new_page()
                await C.open_forget(page, server.url, 120)
                await C.pick(page, {"kind": "random", "seed": 100 + i}, 120)
                await page.locator(".st-key-forget-go button").click()
                await C.wait_text(page, C.DELETED_JS, 120)
                pages.append(page)
            await asyncio.sleep(5)
            for where in ("Forget", "Models"):
                if where == "Models":
                    for page in pages:
                        await page.get_by_role("link", name="Models", exact=True).first.click()
                    await asyncio.sleep(10)
                before = server.cpu()
                await asyncio.sleep(window_s)
                after = server.cpu()
                out[where] = {k: round(after[k] - before[k], 2) for k in ("server", "browsers", "ray")}
                print(f"{sessions} sessions on the {where} page, oracles queued or training, over {window_s:.0f} s: "
                      f"server {out[where]['server']:.2f} CPU-s, chromium {out[where]['browsers']:.2f} CPU-s "
                      f"(Ray, the oracles' training: {out[where]['ray']:.1f})", flush=True)
            await browser.close()
    finally:
        server.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--window", type=float, default=30.0, help="seconds measured on each page")
    args = ap.parse_args()
    print(json.dumps({"sessions": args.sessions, "window_s": args.window,
                      **asyncio.run(measure(args.sessions, args.window))}))


if __name__ == "__main__":
    main()
