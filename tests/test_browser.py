"""In a real Chromium: the form embedded on another site with third-party cookies blocked,
its errors, keyboard use, accessibility (axe-core), small screens, and who may frame it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import pytest
from flask import make_response

from service import create_app
from service.intake.validation import CAPTCHA_FAILED, INVALID_EMAIL, INVALID_NUMBER
from tests.browser import (
    AXE_TAGS,
    CHROMIUM_ARGS,
    SCREENSHOTS,
    HostSite,
    LiveServer,
    article,
    axe_source,
    chromium_path,
)
from tests.conftest import VALID
from tests.smtp_server import SMTPTestServer

pytestmark = pytest.mark.slow


@pytest.fixture
def host() -> Iterator[HostSite]:
    """The clinic's website, on http://localhost:PORT."""
    with HostSite() as site:
        yield site


@pytest.fixture
def service_settings() -> dict[str, Any]:
    """Settings a test changes for its service."""
    return {}


@pytest.fixture
def service(
    host: HostSite,
    smtp_server: SMTPTestServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    service_settings: dict[str, Any],
) -> Iterator[LiveServer]:
    """The service on http://127.0.0.1:PORT, allowing the host site, delivering by itself."""
    monkeypatch.setenv("SERVICE_ENV", "testing")
    app = create_app(
        {
            "SECRET_KEY": "browser-test-secret",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'enquiries.sqlite3'}",
            "AUTO_MIGRATE": True,
            "MAIL_SERVER": smtp_server.host,
            "MAIL_PORT": smtp_server.port,
            "ALLOWED_ORIGINS": host.origin,
            "DELIVERY_WORKER": "embedded",
            "OUTBOX_POLL_SECONDS": 0.2,
            # A test fills the form faster, and sends it more often, than a person would.
            "FORM_MIN_FILL_SECONDS": 0.0,
            "RATELIMIT_ENABLED": False,
            **service_settings,
        }
    )

    @app.get("/test/set-cookie")
    def set_cookie() -> Any:
        # Only for the test that proves the browser blocks third-party cookies.
        response = make_response("cookie set")
        response.set_cookie("probe", "1", samesite="None", secure=True)
        return response

    with LiveServer(app) as server:
        yield server
    app.extensions["delivery"].embedded.stop(5)
    app.extensions["store"].engine.dispose()


def snippet(service: LiveServer) -> str:
    """The script-loader snippet from the README, pointed at the test's service."""
    return (
        f'<div data-contact-form><a href="{service.url("/contact")}">Send us a message</a></div>\n'
        f'<script src="{service.url("/embed.js")}" async></script>'
    )


def open_embedded_form(page: Any, host: HostSite, service: LiveServer) -> Any:
    """Load an article with the loader snippet and return the form's frame once it has loaded."""
    page.goto(host.page("/article", article(snippet(service))))
    page.wait_for_selector("[data-contact-form] iframe")
    frame = page.frame_locator("[data-contact-form] iframe")
    frame.locator("h1").wait_for()
    return next(f for f in page.frames if f.url.startswith(service.url("/contact")))


def fill(frame: Any, **values: str) -> None:
    """Type the visitor's details into the form."""
    for name, value in values.items():
        frame.fill(f"[name={name}]", value)


def solve_captcha(frame: Any) -> None:
    """Let the ALTCHA widget solve its challenge (it starts by itself when the form gets focus)."""
    if frame.get_attribute("altcha-widget .altcha", "data-state") == "unverified":
        frame.locator("altcha-widget input[type=checkbox]").click(force=True)
    frame.wait_for_selector("altcha-widget .altcha[data-state=verified]")


def run_axe(frame: Any) -> list[dict[str, Any]]:
    """axe-core's violations of WCAG 2.2 A/AA and its best practices in this frame."""
    # evaluate() runs through DevTools, so the page's CSP (no inline script) does not stop it.
    frame.evaluate(axe_source() + "\n;undefined")
    results = frame.evaluate(
        "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", AXE_TAGS
    )
    return [
        {"id": v["id"], "help": v["help"], "nodes": [n["target"] for n in v["nodes"]]}
        for v in results["violations"]
    ]


def screenshot(
    page: Any, service: LiveServer, name: str, width: int, form: dict | None = None
) -> None:
    """Save the form page at `width` px (empty, or after posting `form`) for a person to look at."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(service.url("/contact"))
    if form is not None:
        fill(page, **form)
        page.click("button[type=submit]")
        page.wait_for_selector("#error-summary")
    page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True)


def csp_problems(page: Any) -> list[str]:
    """Content-Security-Policy violations the browser reported."""
    return [text for text in page.problems if "Content Security Policy" in text]


def test_the_browser_blocks_third_party_cookies(
    page: Any, host: HostSite, service: LiveServer
) -> None:
    # The premise of the next test: a cookie set inside a frame from another site is refused.
    page.goto(
        host.page("/probe", article(f'<iframe src="{service.url("/test/set-cookie")}"></iframe>'))
    )
    page.frame_locator("iframe").locator("text=cookie set").wait_for()
    stored = [c for c in page.context.cookies() if not c.get("partitionKey")]
    assert stored == []
    page.goto(service.url("/test/set-cookie"))  # the same cookie, first-party, is kept
    assert [c["name"] for c in page.context.cookies(service.origin)] == ["probe"]


def test_embedded_form_sends_an_enquiry_with_third_party_cookies_blocked(
    page: Any, host: HostSite, service: LiveServer, smtp_server: SMTPTestServer
) -> None:
    frame = open_embedded_form(page, host, service)
    assert page.locator("[data-contact-form] a").count() == 0  # the fallback link made way
    iframe = page.locator("[data-contact-form] iframe")
    assert iframe.get_attribute("title") == "Contact form"
    page.wait_for_function(
        "() => document.querySelector('[data-contact-form] iframe').style.height !== '720px'"
    )
    content = frame.evaluate("document.documentElement.getBoundingClientRect().height")
    assert abs(iframe.bounding_box()["height"] - content) <= 2  # resized to the form, no scrollbar

    fill(frame, **VALID)
    solve_captcha(frame)
    frame.click("button[type=submit]")
    frame.wait_for_selector("text=Thank you")

    message = smtp_server.wait_for(1)[0]
    assert parseaddr(message.header("Reply-To"))[1] == VALID["email"]
    assert message.rcpt_tos == ["front-desk@clinic.example"]
    assert host.origin + "/article" in message.text
    assert page.context.cookies(service.origin) == []  # the service needed no cookie at all
    assert csp_problems(page) == []


def test_every_error_shows_its_exact_text_next_to_its_field_and_in_the_summary(
    page: Any, host: HostSite, service: LiveServer, smtp_server: SMTPTestServer
) -> None:
    frame = open_embedded_form(page, host, service)
    fill(frame, name="", email="jane@", phone="12345", message="")
    solve_captcha(frame)
    # A solution the server cannot verify, as a robot would send.
    frame.evaluate("document.querySelector('input[name=altcha]').value = 'forged'")
    frame.click("button[type=submit]")
    frame.wait_for_selector("#error-summary")

    expected = {
        "name": "Please enter your name.",
        "email": INVALID_EMAIL,
        "phone": INVALID_NUMBER,
        "message": "Please enter a message.",
        "altcha": CAPTCHA_FAILED,
    }
    for field, text in expected.items():
        assert frame.inner_text(f"#{field}-error") == text
        assert frame.inner_text(f'#error-summary a[href="#{field}"]') == text
    for field in ("name", "email", "phone", "message"):
        assert frame.get_attribute(f"#{field}", "aria-invalid") == "true"
        assert f"{field}-error" in frame.get_attribute(f"#{field}", "aria-describedby")
    assert frame.evaluate("document.activeElement.id") == "error-summary"
    assert frame.title().startswith("Error: ")

    # A summary link takes the visitor to the field; the captcha's goes to its checkbox.
    frame.click('#error-summary a[href="#email"]')
    assert frame.evaluate("document.activeElement.id") == "email"
    frame.click('#error-summary a[href="#altcha"]')
    assert frame.evaluate("document.activeElement.type") == "checkbox"

    fill(frame, **VALID)
    solve_captcha(frame)
    frame.click("button[type=submit]")
    frame.wait_for_selector("text=Thank you")
    assert len(smtp_server.wait_for(1)) == 1


def test_axe_finds_no_violations_on_the_empty_form_the_errors_and_the_thanks(
    page: Any, host: HostSite, service: LiveServer
) -> None:
    frame = open_embedded_form(page, host, service)
    assert run_axe(frame) == []
    frame.click("button[type=submit]")
    frame.wait_for_selector("#error-summary")
    assert run_axe(frame) == []
    fill(frame, **VALID)
    solve_captcha(frame)
    frame.click("button[type=submit]")
    frame.wait_for_selector("text=Thank you")
    assert run_axe(frame) == []
    assert run_axe(page.main_frame) == []  # the host page with its frame (title, landmarks)


def test_keyboard_alone_fills_solves_and_sends(
    page: Any, host: HostSite, service: LiveServer, smtp_server: SMTPTestServer
) -> None:
    open_embedded_form(page, host, service)
    frame = page.frame_locator("[data-contact-form] iframe")
    typed = {"name": VALID["name"], "email": VALID["email"], "phone": VALID["phone"]}
    page.keyboard.press("Tab")
    for field, value in typed.items():
        assert frame.locator(":focus").get_attribute("name") == field
        page.keyboard.type(value)
        page.keyboard.press("Tab")
    assert frame.locator(":focus").get_attribute("name") == "message"
    page.keyboard.type("Sore back since Tuesday. Can I book for Friday?")
    page.keyboard.press("Tab")
    assert frame.locator(":focus").get_attribute("type") == "checkbox"  # the captcha
    # The widget starts solving when the form gets focus; Space starts it if it has not yet.
    widget = frame.locator("altcha-widget .altcha:not([data-state=verifying])")
    if widget.get_attribute("data-state") == "unverified":
        page.keyboard.press("Space")
    frame.locator("altcha-widget .altcha[data-state=verified]").wait_for()
    page.keyboard.press("Tab")
    assert frame.locator(":focus").inner_text() == "Send message"
    page.keyboard.press("Enter")
    frame.locator("text=Thank you").wait_for()
    assert parseaddr(smtp_server.wait_for(1)[0].header("Reply-To"))[1] == VALID["email"]


def widget_state(page: Any) -> str:
    """The ALTCHA widget's state as it draws it."""
    return page.get_attribute("altcha-widget .altcha", "data-state")


def test_clicking_the_verified_captcha_box_as_the_label_says_keeps_it_verified(
    page: Any, service: LiveServer, smtp_server: SMTPTestServer
) -> None:
    page.goto(service.url("/contact"))
    fill(page, **VALID)  # the widget verifies itself once a field has focus
    page.wait_for_selector("altcha-widget .altcha[data-state=verified]")
    box = page.locator("altcha-widget input[type=checkbox]")
    assert box.is_checked()
    page.locator("altcha-widget label").first.click()  # "I'm not a robot", as a person would
    box.click(force=True)  # and the box itself
    page.wait_for_timeout(300)
    assert (widget_state(page), box.is_checked()) == ("verified", True)
    page.click("button[type=submit]")
    page.wait_for_selector("text=Thank you")
    [mail] = smtp_server.wait_for(1)
    assert parseaddr(mail.header("Reply-To"))[1] == VALID["email"]


def test_a_page_restored_after_its_verification_expired_verifies_again(
    page: Any, service: LiveServer, smtp_server: SMTPTestServer
) -> None:
    # In the back-forward cache a page's timers stand still while the wall clock runs on, so the
    # widget's own expiry never fires (altcha-org/altcha #122). Chromium 156 does not keep this
    # no-store page there; Safari does, and the restore is this event.
    page.clock.install()
    page.goto(service.url("/contact"))
    fill(page, **VALID)
    page.wait_for_selector("altcha-widget .altcha[data-state=verified]")
    page.clock.set_system_time(time.time() + 3600)  # an hour later, no timer run
    page.evaluate("() => dispatchEvent(new PageTransitionEvent('pageshow', {persisted: true}))")
    page.wait_for_selector("altcha-widget .altcha:not([data-state=verified])")
    page.clock.set_system_time(time.time())
    solve_captcha(page)
    page.click("button[type=submit]")
    page.wait_for_selector("text=Thank you")
    assert len(smtp_server.wait_for(1)) == 1


def test_a_site_not_allowed_cannot_frame_the_form(page: Any, service: LiveServer) -> None:
    with HostSite() as stranger:
        page.goto(
            stranger.page("/copy", article(f'<iframe src="{service.url("/contact")}"></iframe>'))
        )
        page.wait_for_timeout(1000)
        blocked = [text for text in page.problems if "frame-ancestors" in text]
        assert blocked, page.problems
        frame = page.frames[1]
        assert frame.evaluate("document.querySelector('form') === null")


def test_a_plain_iframe_on_an_allowed_site_shows_the_form(
    page: Any, host: HostSite, service: LiveServer
) -> None:
    iframe = (
        f'<iframe src="{service.url("/contact")}" title="Contact form"'
        ' style="width:100%;min-height:780px;border:0"></iframe>'
    )
    page.goto(host.page("/plain", article(iframe)))
    page.frame_locator("iframe").locator("text=Drop us a Line").wait_for()
    assert [text for text in page.problems if "frame-ancestors" in text] == []


def test_messages_from_other_origins_do_not_resize_the_frame(
    page: Any, host: HostSite, service: LiveServer
) -> None:
    open_embedded_form(page, host, service)
    page.wait_for_function(
        "() => document.querySelector('[data-contact-form] iframe').style.height !== '720px'"
    )
    before = page.evaluate("document.querySelector('[data-contact-form] iframe').style.height")
    page.evaluate("window.postMessage({type: 'contact-form:height', height: 123}, '*')")
    page.wait_for_timeout(200)
    assert (
        page.evaluate("document.querySelector('[data-contact-form] iframe').style.height") == before
    )


def test_a_double_submit_sends_one_request_and_disables_the_button(
    page: Any, service: LiveServer
) -> None:
    page.goto(service.url("/contact"))
    posts: list[str] = []
    page.on("request", lambda request: request.method == "POST" and posts.append(request.url))
    fill(page, **VALID)
    solve_captcha(page)
    disabled = page.evaluate(
        """() => {
            const form = document.querySelector('form[data-contact-form]');
            form.requestSubmit();
            form.requestSubmit();
            return document.querySelector('button[type=submit]').disabled;
        }"""
    )
    assert disabled is True
    page.wait_for_selector("text=Thank you")
    assert posts == [service.url("/contact")]


@pytest.mark.parametrize("width", [320, 640])
def test_the_form_fits_320_px_and_200_percent_zoom(
    page: Any, service: LiveServer, width: int
) -> None:
    # 640 CSS px is what a 1280 px window shows at 200% zoom.
    page.set_viewport_size({"width": width, "height": 800})
    page.goto(service.url("/contact"))
    page.wait_for_selector("altcha-widget .altcha")
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    for field in ("name", "email", "phone", "message"):
        box = page.locator(f"#{field}").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= width
        assert page.locator(f"label[for={field}]").is_visible()


def test_focus_is_visible_on_every_control(page: Any, service: LiveServer) -> None:
    page.goto(service.url("/contact"))
    for selector in ("#name", "#email", "#phone", "#message", "button[type=submit]"):
        page.focus(selector)
        outline = page.eval_on_selector(selector, "e => getComputedStyle(e).outlineStyle")
        assert outline not in {"none", ""}, selector


def test_without_javascript_the_server_validates_and_says_the_captcha_needs_it(
    playwright: Any, service: LiveServer
) -> None:
    browser = playwright.chromium.launch(
        executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS
    )
    try:
        tab = browser.new_context(java_script_enabled=False).new_page()
        tab.goto(service.url("/contact"))
        assert "The captcha needs JavaScript" in tab.inner_text("form")
        fill(tab, name=VALID["name"], email="jane@", phone=VALID["phone"], message=VALID["message"])
        tab.click("button[type=submit]")
        assert tab.inner_text("#email-error") == INVALID_EMAIL
        assert tab.inner_text("#altcha-error") == CAPTCHA_FAILED
        assert tab.input_value("#name") == VALID["name"]
        assert tab.input_value("#message") == VALID["message"]
    finally:
        browser.close()


def test_theme_settings_restyle_the_form(page: Any, service: LiveServer) -> None:
    service.app.config.update(THEME_ACCENT="#8a1538", THEME_RADIUS="0", THEME_FONT="Georgia, serif")
    page.goto(service.url("/contact"))
    button = page.locator("button[type=submit]")
    assert button.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(138, 21, 56)"
    assert button.evaluate("e => getComputedStyle(e).borderRadius") == "0px"
    assert "Georgia" in page.evaluate("getComputedStyle(document.body).fontFamily")


def test_screenshots_of_the_empty_and_error_states(page: Any, service: LiveServer) -> None:
    invalid = {"name": VALID["name"], "email": "jane@", "phone": "12345", "message": ""}
    for width in (375, 1280):
        screenshot(page, service, "form-empty", width)
        screenshot(page, service, "form-errors", width, invalid)
    for name in ("form-empty-375", "form-empty-1280", "form-errors-375", "form-errors-1280"):
        assert (SCREENSHOTS / f"{name}.png").stat().st_size > 5_000
