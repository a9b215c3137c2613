#!/usr/bin/env python3
"""Live pages in a real browser: headless Chromium (Debian's binary) driven by PyPI
playwright, events published with PyPI nats-py. Prints one `ok`/`FAIL` line per check,
saves a screenshot of every state in --shots, exits 1 if any check failed.

  browser_live.py --base http://127.0.0.1:PORT --nats nats://127.0.0.1:PORT --shots DIR
                  [--chromium /usr/bin/chromium] [--within 2]

On `/`: a create, an update and a delete each show within --within seconds without a
reload. On `/tasks/:id`: an update and a delete the same. With JavaScript off, `/` lists
tasks as before and shows no live indicator. No page logs a console error (a CSP
violation included).
"""
import argparse
import asyncio
import json
import os
import sys
import time

import nats
from playwright.async_api import async_playwright

failures = 0


def check(name, ok, detail=""):
    global failures
    print(f"  {'ok  ' if ok else 'FAIL'} {name}" + (f" ({detail})" if detail and not ok else ""))
    if not ok:
        failures += 1


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--nats", required=True)
    ap.add_argument("--shots", required=True)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--within", type=float, default=2.0)
    args = ap.parse_args()
    os.makedirs(args.shots, exist_ok=True)
    nc = await nats.connect(args.nats)
    js = nc.jetstream(timeout=10)
    within_ms = args.within * 1000

    async def publish(subject, body):
        await js.publish(subject, json.dumps(body).encode())
        return time.monotonic()

    async def shown(page, name, locator, started, state="visible"):
        """Waits for `locator` to reach `state` and checks it came within the bound.
        (Locators, not page.wait_for_function: the page's CSP forbids eval, as it should.)"""
        try:
            await locator.wait_for(state=state, timeout=within_ms + 3000)
            took = time.monotonic() - started
            check(f"{name} within {args.within:g} s (took {took:.2f} s)", took <= args.within, f"{took:.2f} s")
        except Exception as e:  # noqa: BLE001 - reported as a failed check
            check(f"{name} within {args.within:g} s", False, str(e).splitlines()[0])
        await page.screenshot(path=os.path.join(args.shots, f"{name.replace(' ', '-')}.png"), full_page=True)

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        errors = []
        page = await browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))

        # --- the list page -------------------------------------------------------------
        await page.goto(args.base + "/")
        await page.wait_for_selector('#live[data-state="live"]', timeout=10000)
        check("the live indicator says live", await page.locator("#live").inner_text() == "live")
        await page.screenshot(path=os.path.join(args.shots, "list-connected.png"), full_page=True)
        tid = "live-0001"
        t0 = await publish("tasks.created", {"id": tid, "title": "Arrives live"})
        await shown(page, "list shows a created task",
                    page.locator(f"#task-{tid}", has_text="Arrives live"), t0)
        t0 = await publish("tasks.updated", {"id": tid, "title": "Changed live", "status": "in_progress"})
        await shown(page, "list shows an update",
                    page.locator(f'#task-{tid}[data-status="in_progress"]', has_text="Changed live"), t0)
        rows = await page.locator("#tasks > li").evaluate_all("els => els.map(e => e.dataset.id)")
        check("rows stay in id order", rows == sorted(rows), str(rows))
        t0 = await publish("tasks.deleted", {"id": tid})
        await shown(page, "list drops a deleted task", page.locator(f"#task-{tid}"), t0, "detached")

        # --- a task's page -------------------------------------------------------------
        did = "live-detail"
        await publish("tasks.created", {"id": did, "title": "Detail before"})
        await page.locator(f"#task-{did}").wait_for(timeout=10000)
        await page.goto(f"{args.base}/tasks/{did}")
        await page.wait_for_selector('#live[data-state="live"]', timeout=10000)
        t0 = await publish("tasks.updated", {"id": did, "title": "Detail after", "status": "completed"})
        await shown(page, "task page shows an update",
                    page.locator('#task-card:has(h1:text-is("Detail after")) .badge', has_text="Completed"), t0)
        t0 = await publish("tasks.deleted", {"id": did})
        await shown(page, "task page says the task was deleted",
                    page.locator("#task-card.gone .gone-note"), t0)
        check("no console errors (CSP included)", not errors, "; ".join(errors[:3]))

        # --- without JavaScript ----------------------------------------------------------
        await publish("tasks.created", {"id": "live-nojs", "title": "Static"})
        await asyncio.sleep(1)
        ctx = await browser.new_context(java_script_enabled=False)
        static = await ctx.new_page()
        await static.goto(args.base + "/")
        check("without JavaScript the list still lists tasks",
              await static.locator("#task-live-nojs").count() == 1)
        check("without JavaScript no live indicator shows", not await static.locator("#live").is_visible())
        await static.screenshot(path=os.path.join(args.shots, "list-without-javascript.png"), full_page=True)

        # --- a phone's width -------------------------------------------------------------
        phone = await (await browser.new_context(viewport={"width": 400, "height": 800})).new_page()
        for path in ("/", f"/tasks/{did}"):
            await phone.goto(args.base + path)
            lines = await phone.evaluate("""() => {
                const one = el => {
                    const r = el.getBoundingClientRect();
                    const lh = parseFloat(getComputedStyle(el).lineHeight) || 1.5 * parseFloat(getComputedStyle(el).fontSize);
                    return r.height <= lh * 1.5 + 2;
                };
                const words = [...document.querySelectorAll('.brand, .topbar nav a')];
                return {
                    whole: words.filter(el => !one(el)).map(el => el.textContent),
                    overflow: document.documentElement.scrollWidth - window.innerWidth,
                };
            }""")
            check(f"at 400 px ({path}) the brand and each header link stay on one line",
                  not lines["whole"], f"broken: {lines['whole']}")
            check(f"at 400 px ({path}) nothing overflows sideways", lines["overflow"] <= 0,
                  f"{lines['overflow']} px too wide")
        await phone.screenshot(path=os.path.join(args.shots, "task-at-400px.png"), full_page=True)
        await browser.close()
    await nc.close()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
