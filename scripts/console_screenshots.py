"""Screenshots of the console for docs/console.md: the overview, a causation trace, time travel.

    .venv/bin/python scripts/console_screenshots.py [--out docs/console]

Starts `esmongo serve` on a fresh embedded database in a temp dir, drives some traffic
through the API, and photographs the pages with Debian's Chromium through Playwright.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

from console_serve import CHROMIUM_ARGS, ServeFailed, chromium_path, serve


def traffic(url: str, key: str) -> str:
    """Accounts, movements and transfers; returns the debit event id of a transfer."""
    h = {"Authorization": f"Bearer {key}"}
    for account, owner in (("acc_alice", "alice"), ("acc_bob", "bob"), ("acc_carol", "carol")):
        body = {
            "accountId": account,
            "ownerId": owner,
            "ownerName": owner.title(),
            "currency": "EUR",
        }
        httpx.post(f"{url}/accounts", json=body, headers=h).raise_for_status()
        httpx.post(f"{url}/accounts/{account}/activate", headers=h).raise_for_status()
        httpx.post(
            f"{url}/accounts/{account}/credit",
            json={"amount": "500.00", "reason": "salary"},
            headers=h,
        ).raise_for_status()
    for i, amount in enumerate(("42.50", "13.00", "120.00", "7.25", "60.00")):
        httpx.post(
            f"{url}/accounts/acc_alice/{'debit' if i % 2 else 'credit'}",
            json={"amount": amount, "reason": f"movement {i + 1}"},
            headers=h,
        ).raise_for_status()
    debit = ""
    for source, target, amount in (
        ("acc_alice", "acc_bob", "75.00"),
        ("acc_bob", "acc_carol", "20.00"),
    ):
        r = httpx.post(
            f"{url}/transfers",
            json={
                "fromAccountId": source,
                "toAccountId": target,
                "amount": amount,
                "reason": "rent",
            },
            headers={**h, "X-Correlation-Id": f"corr_demo_{source}"},
        )
        r.raise_for_status()
        debit = debit or r.json()["eventIds"][0]
    return debit


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("docs/console"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    chromium = chromium_path() or sys.exit("install chromium: apt-get install chromium")
    with tempfile.TemporaryDirectory(prefix="esmongo-shots-") as home:
        env = {k: v for k, v in os.environ.items() if k != "MONGODB_URI"}
        env["ESMONGO_HOME"] = home
        try:
            with serve(env, Path(home) / "serve.log") as (url, _):
                shoot(url, (Path(home) / "dev-admin-key").read_text().strip(), chromium, args.out)
        except ServeFailed as exc:
            sys.exit(str(exc))
    print(f"screenshots in {args.out}")


def shoot(url: str, key: str, chromium: str, out: Path) -> None:
    """Traffic through the API, then the pages photographed."""
    debit = traffic(url, key)
    httpx.get(
        f"{url}/accounts/acc_carol?consistent=true",
        headers={"Authorization": f"Bearer {key}"},
    )
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(base_url=url, viewport={"width": 1200, "height": 800})
        page.goto("/")
        page.fill("#key", key)
        page.click("#login")
        page.wait_for_url(re.compile(r"/$"))
        for i in range(12):  # traffic while the overview samples it, for the sparkline
            for _ in range(i % 4 + 1):
                httpx.post(
                    f"{url}/accounts/acc_carol/credit",
                    json={"amount": "1.00"},
                    headers={"Authorization": f"Bearer {key}"},
                ).raise_for_status()
            page.wait_for_timeout(500)
        page.screenshot(path=str(out / "overview.png"), full_page=True)
        page.goto(f"/ui/trace/{debit}")
        page.screenshot(path=str(out / "trace.png"), full_page=True)
        page.goto("/ui/accounts/acc_alice/time?version=5&compare=9")
        page.screenshot(path=str(out / "time-travel.png"), full_page=True)
        browser.close()


if __name__ == "__main__":
    main()
