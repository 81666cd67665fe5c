"""The console in a real browser (issue 13): Chromium from Debian's packages, driven by
Playwright, against a live `esmongo serve` on the embedded database.

Waiting is always for an element or a URL with a timeout, never a sleep. A failing test
leaves a screenshot of each page it had open under test-results/<test>/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from conftest import PHASE_REPORTS
from console_browser import CHROMIUM_ARGS, Console, browser_or_skip, console, output_dir

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

__all__ = ["console"]  # the module-scoped `esmongo serve` fixture
APPEARS_S = 1.0


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    path = browser_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def contexts(browser: Browser, request: pytest.FixtureRequest) -> Iterator[list[BrowserContext]]:
    """Browser contexts (one per user) closed after the test; screenshots if it failed."""
    opened: list[BrowserContext] = []
    try:
        yield opened
    finally:
        reports = request.node.stash.get(PHASE_REPORTS, {})
        if any(r.failed for r in reports.values()):
            target = output_dir(request)
            target.mkdir(parents=True, exist_ok=True)
            for i, context in enumerate(opened):
                for j, page in enumerate(context.pages):
                    page.screenshot(path=str(target / f"context{i}-page{j}.png"), full_page=True)
        for context in opened:
            context.close()


def login(
    browser: Browser, contexts: list[BrowserContext], console: Console, who: str, path: str = "/"
) -> Page:
    context = browser.new_context(base_url=console.url)
    context.set_default_timeout(15_000)
    contexts.append(context)
    page = context.new_page()
    page.goto(path)
    page.wait_for_url(re.compile(r"/login\?next="))
    page.fill("#key", console.keys[who])
    page.click("#login")
    page.wait_for_url(re.compile(re.escape(path.split("?")[0]) + r"(\?|$)"))
    return page


def expect() -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect


def test_login_with_a_key_and_unauthenticated_visits_go_to_login(
    browser: Browser, contexts: list[BrowserContext], console: Console
) -> None:
    context = browser.new_context(base_url=console.url)
    contexts.append(context)
    page = context.new_page()
    response = page.goto("/ui/projections")
    assert response is not None
    assert "/login?next=/ui/projections" in page.url
    headers = response.headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    page.fill("#key", "esk_not-a-key")
    page.click("#login")
    expect()(page.locator(".error")).to_contain_text("Unknown or revoked key")
    page.fill("#key", console.keys["admin"])
    page.click("#login")
    page.wait_for_url(re.compile(r"/ui/projections$"))
    expect()(page.locator("#who")).to_contain_text("Operator One (admin)")
    assert console.keys["admin"] not in page.url
    cookie = next(c for c in context.cookies() if c["name"] == "esmongo_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert console.keys["admin"] not in console.log.read_text()  # nor in the server's log
    page.click("text=Log out")
    page.wait_for_url(re.compile(r"/login"))
    page.goto("/ui/projections")
    page.wait_for_url(re.compile(r"/login\?next="))


def test_find_an_account_open_its_stream_an_event_and_trace_a_transfer(
    browser: Browser, contexts: list[BrowserContext], console: Console
) -> None:
    console.open_account("find_a")
    console.open_account("find_b")
    r = console.api(
        "POST",
        "/transfers",
        json={"fromAccountId": "find_a", "toAccountId": "find_b", "amount": "7"},
    )
    assert r.status_code == 201, r.text
    debit_id, credit_id = r.json()["eventIds"]
    console.api("GET", "/accounts/find_b", params={"consistent": "true"})  # the search reads it
    page = login(browser, contexts, console, "admin", "/ui/streams")
    page.fill("#q", "find_")
    page.click("#search")
    page.wait_for_url(re.compile(r"q=find_"))
    page.click("#stream-list >> text=account/find_a")
    page.wait_for_url(re.compile(r"/ui/streams/account/find_a"))
    page.click("#stream-events >> text=account.debited")
    page.wait_for_url(re.compile(f"/ui/events/{debit_id}$"))
    expect()(page.locator("#event-data")).to_contain_text('"amount": "7.00"')
    expect()(page.locator("#event-raw")).to_contain_text('"eventVersion"')
    expect()(page.locator("#upcast-chain")).to_contain_text("v")
    page.click("#trace-link")
    page.wait_for_url(re.compile(f"/ui/trace/{debit_id}$"))
    credit = page.locator(f'#trace a[data-event-id="{credit_id}"]')
    expect()(credit).to_have_text("account.credited")
    expect()(page.locator("#trace")).to_contain_text("account/find_b")
    credit.click()
    page.wait_for_url(re.compile(f"/ui/events/{credit_id}$"))
    expect()(page.locator("#event-data")).to_contain_text('"counterpartyAccountId": "find_a"')
    page.go_back()
    page.wait_for_url(re.compile(f"/ui/trace/{debit_id}$"))


def test_the_time_travel_slider_shows_the_balance_the_api_gives(
    browser: Browser, contexts: list[BrowserContext], console: Console
) -> None:
    console.open_account("travel", funds="10.00")
    for amount in ("1.00", "2.50", "40.00"):
        console.credit("travel", amount)
    page = login(browser, contexts, console, "auditor", "/ui/accounts/travel/time")
    expect()(page.locator("#balance")).to_have_text(str(console.balance_at("travel", 6)))
    expect()(page.locator("#balance-chart")).to_have_attribute("points", re.compile(r"\d"))
    for version in (3, 5, 4):
        page.locator("#version-slider").fill(str(version))
        page.wait_for_url(re.compile(f"version={version}"))
        expect()(page.locator("#balance")).to_have_text(str(console.balance_at("travel", version)))
    page.fill("input[name=compare]", "6")
    page.click("text=Show")
    page.wait_for_url(re.compile(r"compare=6"))
    expect()(page.locator("#balance")).to_have_text(str(console.balance_at("travel", 4)))
    expect()(page.locator("#other-balance")).to_have_text(str(console.balance_at("travel", 6)))
    page.go_back()
    page.wait_for_url(re.compile(r"\?version=4$"))  # empty fields stay out of the URL


def test_a_new_event_appears_in_the_live_tail_within_a_second(
    browser: Browser, contexts: list[BrowserContext], console: Console
) -> None:
    console.open_account("tail")
    page = login(browser, contexts, console, "admin", "/ui/tail?aggregate=tail")
    expect()(page.locator("#tail-state")).to_have_text("live")
    appended = console.credit("tail", "3.00")
    row = page.locator(f'#tail tr[data-sequence="{appended["sequence"]}"]')
    expect()(row).to_be_visible(timeout=APPEARS_S * 1000)
    expect()(row).to_contain_text("account.credited")
    page.click("#pause")
    expect()(page.locator("#tail-state")).to_have_text("paused")
    while_paused = console.credit("tail", "4.00")
    console.open_account("tail_other")  # filtered out: another aggregate
    page.click("#pause")  # resume: what was appended meanwhile comes first
    later = page.locator(f'#tail tr[data-sequence="{while_paused["sequence"]}"]')
    expect()(later).to_be_visible(timeout=APPEARS_S * 1000)
    expect()(page.locator("#tail")).not_to_contain_text("tail_other")


def test_the_overview_updates_without_a_reload(
    browser: Browser, contexts: list[BrowserContext], console: Console
) -> None:
    page = login(browser, contexts, console, "auditor", "/")
    head = page.locator('#overview [data-field="head"]')
    before = int(head.inner_text())
    console.open_account("overview_live")  # three events
    expect()(head).not_to_have_text(str(before), timeout=5_000)  # pushed once a second
    assert int(head.inner_text()) >= before + 3
    expect()(page.locator("#sparkline")).to_have_attribute("points", re.compile(r"\d"))


def lag_of(page: Page, projection: str) -> Any:
    return page.locator(f'#projections tr[data-projection="{projection}"] td.lag')


def test_a_poison_event_is_dead_lettered_and_retried_from_the_page_after_the_fix(
    browser: Browser, contexts: list[BrowserContext], console: Console
) -> None:
    console.open_account("poisoned")
    console.bug_file.touch()  # the bug is deployed
    try:
        bad = console.credit("poisoned", "5.00", reason="poison")
        console.credit("poisoned", "1.00")  # waits behind it (accounts_read stops)
        page = login(browser, contexts, console, "admin", "/ui/dead-letters")
        letter = page.locator(f'#dead-letters tr[data-letter="accounts_read:{bad["sequence"]}"]')
        deadline_ms = 30_000
        for _ in range(300):
            if letter.count():
                break
            page.wait_for_timeout(100)  # the dead letter is recorded by the projection daemon
            page.reload()
        expect()(letter).to_contain_text("the poison bug", timeout=deadline_ms)
        page.goto("/ui/projections")
        expect()(lag_of(page, "accounts_read")).not_to_have_text("0")
    finally:
        console.bug_file.unlink(missing_ok=True)  # the fix is deployed
    page.goto("/ui/dead-letters")
    letter.locator("button.retry").click()
    page.wait_for_url(re.compile(r"notice=retried"))
    expect()(page.locator(".notice")).to_contain_text("retried")
    expect()(letter).to_have_count(0)
    page.goto("/ui/projections")
    for _ in range(300):
        if lag_of(page, "accounts_read").inner_text() == "0":
            break
        page.wait_for_timeout(100)
        page.reload()
    expect()(lag_of(page, "accounts_read")).to_have_text("0")
    view = console.api("GET", "/accounts/poisoned", params={"consistent": "true"}).json()
    assert view["balance"] == "106.00"
    page.goto("/")  # the retry is recorded with who did it
    on = f"projection=accounts_read, sequence={bad['sequence']}"
    recent = page.locator("#recent-operations tr", has_text=on)
    expect()(recent).to_contain_text("ops1 (admin)")
    expect()(recent).to_contain_text("console")
    expect()(recent).to_contain_text("DeadLetterRetried")


def test_an_auditor_sees_no_action_buttons_and_forged_posts_are_refused(
    browser: Browser, contexts: list[BrowserContext], console: Console
) -> None:
    page = login(browser, contexts, console, "auditor", "/ui/projections")
    expect()(page.locator("#projections")).to_contain_text("accounts_read")
    expect()(page.locator("text=Rebuild…")).to_have_count(0)
    page.goto("/ui/dead-letters")
    expect()(page.locator("button")).to_have_count(2)  # Filter and Log out only
    csrf = page.locator("input[name=csrf]")
    assert csrf.count() == 0
    # The auditor forges the admin's form: refused by role, whatever the token.
    refused = page.request.post("/ui/projections/accounts_read/rebuild", form={"csrf": "anything"})
    assert refused.status == 403
    # An admin's session without the form's token (what a cross-site form would send).
    admin = login(browser, contexts, console, "admin", "/ui/projections")
    forged = admin.request.post("/ui/projections/accounts_read/rebuild", form={"csrf": "forged"})
    assert forged.status == 403 and "CSRF" in forged.text()
    missing = admin.request.post("/ui/dead-letters/retry-all")
    assert missing.status == 403
    # And without any session: nothing runs, and no redirect to follow.
    anonymous = httpx.post(console.url + "/ui/projections/accounts_read/rebuild")
    assert anonymous.status_code == 401
    assert not any(p["rebuilding"] for p in console.api("GET", "/projections").json())


def test_a_customer_sees_only_their_own_accounts(
    browser: Browser, contexts: list[BrowserContext], console: Console
) -> None:
    console.open_account("mine", owner="cust1")
    console.open_account("theirs", owner="cust2")
    page = login(browser, contexts, console, "customer", "/ui/streams")
    expect()(page.locator("#stream-list")).to_contain_text("account/mine")
    expect()(page.locator("#stream-list")).not_to_contain_text("theirs")
    response = page.goto("/ui/streams/account/theirs")
    assert response is not None and response.status == 403
    response = page.goto("/ui/accounts/theirs/time")
    assert response is not None and response.status == 404
    page.goto("/")
    expect()(page.locator("nav")).to_contain_text("Streams")
    expect()(page.locator("nav")).not_to_contain_text("Dead letters")
    response = page.goto("/ui/dead-letters")
    assert response is not None and response.status == 403


def test_an_event_whose_data_holds_markup_is_shown_as_text(
    browser: Browser, contexts: list[BrowserContext], console: Console
) -> None:
    markup = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2"><b>bold</b>'
    console.open_account("markup")
    appended = console.credit("markup", "1.00", reason=markup)
    page = login(browser, contexts, console, "admin", f"/ui/events/{appended['eventIds'][0]}")
    expect()(page.locator("#event-data")).to_contain_text(markup.replace('"', '\\"'))
    assert page.locator("#event-data b").count() == 0
    page.goto("/ui/streams/account/markup")
    expect()(page.locator("#stream-events")).to_contain_text("<script>window.pwned = 1</script>")
    page.goto("/ui/tail?aggregate=markup")
    expect()(page.locator("#tail")).to_contain_text("<b>bold</b>")
    console.credit("markup", "2.00", reason=markup)  # through the live tail's own rendering
    expect()(page.locator("#tail tr.fresh")).to_contain_text("<b>bold</b>")
    assert page.evaluate("window.pwned") is None
