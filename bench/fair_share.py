"""A session's share of the training (UE_SESSION_TRAININGS): how long another session waits for its oracles
while one session has clicked Forget on one random draw after another.

    .venv/bin/python bench/fair_share.py                         # share 0 (no limit), then 6, on digits
    .venv/bin/python bench/fair_share.py --shares 0,6,16 --pushes 10

For each share, on a fresh server (UE_HOME with the SPM original trained by the CLI first): session A forgets a
random 10 % with seeds 1..--pushes, one click after another (each draw needs 3 SPM oracles, trained on Ray);
then session B forgets a random 10 % with seed 1000 and waits until its page reads "spm oracles ready, 3 of 3".

    b_wait_s        B's click -> its three oracles ready (what the rest of a room waits)
    a_held          whether A's last draw's oracles were held back ("oracles waiting" on A's page)

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import classroom as C

READY_JS = "() => document.body.innerText.includes('spm oracles ready, 3 of 3')"


async def forget_random(page, seed: int, timeout_s: float) -> None:
    await C.pick(page, {"kind": "random fraction", "seed": seed}, timeout_s)
    await page.locator(".st-key-forget-go button").click()
    await page.get_by_text(f"Now forgetting: random 10% (seed {seed})").wait_for(timeout=timeout_s * 1000)


async def one_share(share: int, pushes: int, dataset: str, timeout_s: float) -> dict:
    from playwright.async_api import async_playwright

    home = Path(tempfile.mkdtemp(prefix="ue-share-"))
    env = {**C.app_env(home, dataset), "UE_SESSION_TRAININGS": str(share)}
    subprocess.run([sys.executable, "-m", "core", "train", "--dataset", dataset, "--model", "spm"], env=env,
                   cwd=C.ROOT, check=True, capture_output=True)
    server = C.Server(env, home / "server.log")
    server.start(120)
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=C.chromium_path(), args=C.CHROMIUM_ARGS)
            a = await (await browser.new_context(viewport=C.VIEWPORT)).new_page()
            b = await (await browser.new_context(viewport=C.VIEWPORT)).new_page()
            await C.open_forget(a, server.url, timeout_s)
            await C.open_forget(b, server.url, timeout_s)
            for seed in range(1, pushes + 1):
                await forget_random(a, seed, timeout_s)
            a_text = await a.inner_text("body")
            start = time.perf_counter()
            await forget_random(b, 1000, timeout_s)
            await b.wait_for_function(READY_JS, timeout=timeout_s * 1000, polling=250)
            wait = time.perf_counter() - start
            await browser.close()
    finally:
        server.stop()
    return {"share": share, "b_wait_s": round(wait, 1), "a_held": "oracles waiting" in a_text}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shares", default="0,6", help="UE_SESSION_TRAININGS values, each on a fresh server")
    parser.add_argument("--pushes", type=int, default=8, help="random draws session A forgets one after another")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    rows = []
    for share in (int(s) for s in args.shares.split(",")):
        row = await one_share(share, args.pushes, args.dataset, args.timeout)
        rows.append(row)
        print(f"share {share or 'none'}: session B's 3 oracles ready {row['b_wait_s']} s after its click, with "
              f"session A having forgotten {args.pushes} random draws just before"
              + (" (A's last draw's oracles held back)" if row["a_held"] else ""), flush=True)
    print(json.dumps({"dataset": args.dataset, "pushes": args.pushes, "rows": rows}))


if __name__ == "__main__":
    asyncio.run(main())
