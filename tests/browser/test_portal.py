"""The integrator portal in a real headless Chromium, against a running MonCréneau."""

from __future__ import annotations

from typing import Any

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.conftest import portal_link
from tests.e2e.conftest import call
from tests.receiver import Receiver, answer

WAIT = 30


def _until(browser: WebDriver, condition: Any, what: str) -> Any:
    # A live list replaces its elements while they are read: read them again.
    waiting = WebDriverWait(
        browser, WAIT, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
    )
    return waiting.until(condition, what)


def _click(browser: WebDriver, text: str) -> None:
    """Press the button or follow the link that reads `text`."""
    target = _until(
        browser,
        lambda b: next(
            (
                e
                for e in b.find_elements(By.CSS_SELECTOR, "button, a")
                if e.text.strip() == text and e.is_displayed()
            ),
            None,
        ),
        f"a button or link reading {text!r}",
    )
    target.click()


def _text(browser: WebDriver) -> str:
    body: WebElement = browser.find_element(By.TAG_NAME, "body")
    return body.text


def _attempts(browser: WebDriver) -> list[str]:
    return [e.text for e in browser.find_elements(By.CSS_SELECTOR, "li.attempt")]


def test_an_integrator_subscribes_tests_sees_a_failure_and_retries(
    browser: WebDriver, server: tuple[str, str], receiver: Receiver, screenshot: Any
) -> None:
    base, key = server
    hook_url = receiver.on("/hook", answer(200, b'{"received": true}'))

    browser.get(portal_link(base, key))
    _until(browser, lambda b: b.current_url.endswith("/portal/"), "the link opening the portal")
    assert "No endpoint yet" in _text(browser)
    screenshot("empty")

    _click(browser, "Add your first endpoint")
    browser.find_element(By.ID, "url").send_keys(hook_url)
    browser.find_element(By.ID, "description").send_keys("Clinic CRM sync")
    _click(browser, "Add endpoint")
    secret = browser.find_element(By.ID, "secret").text
    assert secret.startswith("whsec_")
    _click(browser, "Copy")
    _until(browser, lambda b: "Copied" in _text(b), "the copy button confirming")
    screenshot("secret")
    _click(browser, "I have stored it — continue")

    _click(browser, "Send test event")
    _until(
        browser,
        lambda b: "succeeded" in b.find_element(By.ID, "live").text,
        "the test delivery shown as succeeded, in place",
    )
    (received,) = receiver.at("/hook")
    assert received.json["type"] == "webhook.test"

    receiver.on("/hook", answer(500, b'{"error": "database is locked"}'))
    browser.find_element(By.CSS_SELECTOR, "tr[data-delivery] a").click()
    assert [a.split("\n")[0] for a in _attempts(browser)] == ["#1"]
    _click(browser, "Retry now")
    _until(browser, lambda b: len(_attempts(b)) == 2, "the second attempt shown, in place")
    second = _attempts(browser)[1]
    assert "HTTP 500" in second
    browser.find_element(By.CSS_SELECTOR, "li.attempt[data-attempt='2'] summary").click()
    assert "database is locked" in _text(browser)
    assert len(receiver.at("/hook")) == 2
    screenshot("delivery")

    _click(browser, "Endpoints")
    _until(browser, lambda b: "Failing" in _text(b), "the endpoint's status in the list")
    screenshot("endpoints")
    browser.find_element(By.CSS_SELECTOR, "#endpoints a.title").click()
    health = browser.find_element(By.ID, "health").text
    assert "50.0 %" in health and "HTTP 500" in health
    screenshot("endpoint")
    _click(browser, "Event types")
    assert "appointment.updated" in _text(browser)
    screenshot("event-types")
    browser.set_window_size(390, 844)
    browser.back()
    screenshot("endpoint-phone")


def test_a_read_only_link_shows_no_button_that_changes_anything(
    browser: WebDriver, server: tuple[str, str], receiver: Receiver
) -> None:
    base, key = server
    hook = call(base, key, "POST", "/webhooks", {"url": receiver.url("/hook"), "events": ["*"]})
    sent = call(base, key, "POST", f"/webhooks/{hook['id']}/test")
    browser.get(portal_link(base, key, read_only=True))
    _until(browser, lambda b: b.current_url.endswith("/portal/"), "the link opening the portal")
    assert "Read-only" in _text(browser)
    pages = [
        "/portal/",
        f"/portal/webhooks/{hook['id']}",
        f"/portal/webhooks/{hook['id']}/deliveries",
        f"/portal/webhooks/{hook['id']}/deliveries/{sent['deliveryId']}",
        "/portal/event-types",
    ]
    for path in pages:
        browser.get(base + path)
        assert browser.find_elements(By.CSS_SELECTOR, "form[method=post]") == [], path
        # what remains are filters (GET forms) and disclosure toggles
        for button in browser.find_elements(By.TAG_NAME, "button"):
            form = button.find_element(By.XPATH, "ancestor::form")
            assert form.get_attribute("method") == "get", (path, button.text)
        links = [a.get_attribute("href") or "" for a in browser.find_elements(By.TAG_NAME, "a")]
        assert not [h for h in links if h.endswith(("/new", "/edit"))], path


def test_markup_that_tenants_and_endpoints_wrote_shows_as_text(
    browser: WebDriver, server: tuple[str, str], receiver: Receiver
) -> None:
    base, key = server
    excerpt = (
        b"<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script>"
    )
    url = receiver.on("/hook?'\"><script>document.title='pwned'</script>", answer(500, excerpt))
    description = "<b>bold</b> <script>document.title='pwned'</script> \"quoted\" 'single'"
    hook = call(
        base, key, "POST", "/webhooks", {"url": url, "events": ["*"], "description": description}
    )
    sent = call(base, key, "POST", f"/webhooks/{hook['id']}/test")
    browser.get(portal_link(base, key))
    _until(browser, lambda b: b.current_url.endswith("/portal/"), "the link opening the portal")
    assert description in _text(browser)
    browser.get(f"{base}/portal/webhooks/{hook['id']}/deliveries/{sent['deliveryId']}")
    _until(browser, lambda b: len(_attempts(b)) == 1, "the failed attempt")
    browser.find_element(By.CSS_SELECTOR, "li.attempt summary").click()
    assert excerpt.decode() in _text(browser)
    for path in ("/portal/", f"/portal/webhooks/{hook['id']}"):
        browser.get(base + path)
        assert hook["url"] in _text(browser)
        assert browser.title != "pwned"
        scripts = browser.find_elements(By.TAG_NAME, "script")
        assert [s.get_attribute("src") for s in scripts] == [f"{base}/portal/static/portal.js"]
        assert browser.find_elements(By.CSS_SELECTOR, "main b, main img") == []
