"""The chat page at `/`, in a real browser: Debian's headless Chromium driven by Playwright for Python.

The page talks to a real server (uvicorn in a thread) whose model is scripted, so each test chooses what the
"model" says; one test talks to the tiny trained model. Every state the tests reach is kept as a screenshot in
`tests/artifacts/web/` (gitignored), to look at after a run. Playwright drives the system's Chromium (no
`playwright install` download): without one, or without Playwright, the whole file skips with one line. CI's
`.ci/run` installs Debian's `chromium` where apt is available; COGNI_CHROMIUM names another Chromium binary.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from cognimamba.serve.engine import ServedModel
from cognimamba.serve.state import ServerSettings
from tests.serve.scripted import scripted_model
from tests.serve.server_thread import running_server, wait_until

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")


def find_chromium() -> str | None:
    names = [os.environ.get("COGNI_CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome-stable"]
    return next((found for name in names if name and (found := shutil.which(name))), None)


CHROMIUM = find_chromium()
if CHROMIUM is None:
    pytest.skip("no Chromium browser found (Debian: apt-get install chromium)", allow_module_level=True)

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "web"
CALL = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "6 * 7"}}\n</tool_call>'
MARKDOWN_REPLY = ("Here is **bold** text and some code:\n\n```python\ndef answer():\n    return 42\n```\n\n"
                  '<img src="x" onerror="window.pwned = 1"><script>window.pwned = 2</script>[link](javascript:'
                  "window.pwned=3) done.")
expect = sync_api.expect
expect.set_options(timeout=20_000)  # two shared CPU cores: the first paint of a cold browser can be slow


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


@pytest.fixture
def open_page(browser: sync_api.Browser) -> Iterator:
    """Opens the page at a server's URL in a fresh browser profile; fails the test on any script error."""
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    errors: list[str] = []

    def open_at(url: str, refusals: tuple[str, ...] = ()) -> sync_api.Page:
        """`refusals`: console errors a test expects (the starts of their texts), such as the CSP's refusal of a
        hostile reply's inline handler."""
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        ignored = ("Failed to load resource", *refusals)
        page.on("console", lambda message: errors.append(message.text) if message.type == "error"
                and not message.text.startswith(ignored) else None)  # CSP refusals among them
        page.on("request", lambda request: None if request.url.startswith((url, "data:"))
                else errors.append(f"fetched from elsewhere: {request.url}"))
        # Every file the page loads must be there (MARKDOWN_REPLY's <img src="x"> aside); API calls that fail
        # (fetch) are the page's to show, and the tests check it does.
        page.on("response", lambda response: errors.append(f"{response.status} {response.url}")
                if response.status >= 400 and response.request.resource_type != "fetch"
                and response.url != f"{url}/x" else None)
        page.goto(url)
        return page

    yield open_at
    context.close()
    assert not errors, errors


def screenshot(page: sync_api.Page, state: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{state}.png")


def send(page: sync_api.Page, text: str) -> None:
    """Types and sends `text` as a user does: once the page has connected (before that, Enter does nothing)."""
    expect(page.locator("#send")).to_be_enabled()
    page.locator("#prompt").fill(text)
    page.locator("#prompt").press("Enter")


def change_settings(page: sync_api.Page, **values: str | bool) -> None:
    page.locator("#settings-button").click()
    for name, value in values.items():
        field = page.locator(f"#settings [name={name}]")
        field.set_checked(value) if isinstance(value, bool) else field.fill(value)
    page.locator("#settings-close").click()


def test_the_page_loads_from_the_package_alone(open_page):
    with running_server(scripted_model(["hi"])) as url:
        page = open_page(url)
        expect(page.locator("#model-name")).to_have_text("scripted")
        expect(page.locator("#server-status")).to_contain_text("context 4096 tokens")
        expect(page.locator("#send")).to_be_enabled()
        screenshot(page, "loaded")


def test_a_message_streams_a_reply_rendered_as_markdown(open_page):
    model = scripted_model([MARKDOWN_REPLY], chunk=3, pause_after=4)
    with running_server(model) as url:
        # Chromium 156 reports the reply's onerror= as a CSP refusal while DOMPurify parses the HTML into an inert
        # document (nothing runs there, and the handler never reaches the page): the CSP doing its job. What matters
        # is asserted below: nothing ran, and no handler, script or javascript: link is in the page.
        page = open_page(url, refusals=("Executing inline event handler violates the following Content Security",))
        expect(page.locator("#send")).to_be_enabled()
        send(page, "Show me some code")
        wait_until(model.source.paused.is_set, "the reply to be half streamed", 20)
        reply = page.locator(".message.assistant .body")
        expect(reply).to_have_text("Here is **bo")  # four chunks of three characters, as they arrived
        expect(page.locator("#stop")).to_be_visible()
        screenshot(page, "streaming")
        model.source.resume.set()
        expect(reply.locator("strong")).to_have_text("bold")
        expect(reply).to_contain_text("done.")
        expect(reply.locator("pre code.hljs .hljs-keyword").first).to_have_text("def")
        expect(page.locator(".message.assistant .meta")).to_contain_text("tokens/s")
        expect(page.locator("#send")).to_be_visible()
        screenshot(page, "reply")
        # the model's HTML is text to show, never script to run
        assert page.evaluate("window.pwned") is None
        assert reply.locator("script, img[onerror], a[href^='javascript']").count() == 0
        page.reload()  # the conversation is kept in the browser
        expect(page.locator("#conversations li.current")).to_have_text("Show me some code×")
        expect(page.locator(".message.assistant .body strong")).to_have_text("bold")


def test_the_tiny_trained_model_replies_in_the_page(open_page, tiny_server):
    page = open_page(tiny_server)
    change_settings(page, max_tokens="12", seed="1")
    send(page, "Once upon a time")
    expect(page.locator(".message.assistant .meta")).to_contain_text("tokens/s")
    screenshot(page, "tiny_model")


def test_the_system_prompt_and_sampling_settings_reach_the_model(open_page):
    model = scripted_model(["Ahoy."])
    with running_server(model) as url:
        page = open_page(url)
        change_settings(page, system="You are a pirate.", temperature="0.3", max_tokens="50")
        send(page, "Hello")
        expect(page.locator(".message.assistant .body")).to_have_text("Ahoy.")
        assert "You are a pirate." in model.source.prompts[-1]
        assert model.source.options[-1].temperature == pytest.approx(0.3)
        page.reload()  # settings are kept too
        page.locator("#settings-button").click()
        expect(page.locator("#settings [name=system]")).to_have_value("You are a pirate.")
        screenshot(page, "settings")


def test_a_tool_call_renders_as_a_block_with_its_result(open_page):
    model = scripted_model([f"Let me compute.\n{CALL}", "The answer is 42."], chunk=5)
    with running_server(model) as url:
        page = open_page(url)
        change_settings(page, tools=True)
        send(page, "What is 6 times 7?")
        block = page.locator("details.tool-call")
        expect(block.locator(".call-name")).to_have_text("calculator")
        expect(page.locator(".message.assistant .body").last).to_have_text("The answer is 42.")
        block.locator("summary").click()
        expect(block.locator(".arguments")).to_contain_text('"expression": "6 * 7"')
        expect(block.locator(".result")).to_contain_text('"result": 42')
        screenshot(page, "tool_call")
        assert '{"result": 42}' in model.source.prompts[-1]  # the server ran it and the model read its result
        page.reload()  # the call and its result are kept with the conversation
        page.locator("details.tool-call summary").click()
        expect(page.locator("details.tool-call .result")).to_contain_text('"result": 42')


def test_stop_ends_the_reply_and_its_generation(open_page):
    model = scripted_model(["one two three four five six seven eight nine ten"], chunk=4, pause_after=2)
    with running_server(model) as url:
        page = open_page(url)
        send(page, "Count")
        wait_until(model.source.paused.is_set, "the reply to start", 20)
        expect(page.locator(".message.assistant .body")).to_have_text("one two")
        page.locator("#stop").click()
        wait_until(lambda: model.source.stats.stop_reason == "cancelled", "the server to cancel the reply", 20)
        expect(page.locator(".message.assistant .meta")).to_have_text("stopped")
        expect(page.locator("#send")).to_be_visible()
        expect(page.locator("#stop")).to_be_hidden()
        screenshot(page, "stopped")


def test_a_refused_request_shows_the_server_s_reason(open_page):
    with running_server(scripted_model(["hi"], context_length=40)) as url:
        page = open_page(url)
        send(page, "a message far too long for a context of forty tokens, one per character")
        expect(page.locator(".message.assistant .error")).to_contain_text("more than the model's context of 40")
        expect(page.locator("#send")).to_be_visible()
        screenshot(page, "refused")


def keyed_server(model: ServedModel):
    return running_server(model, ServerSettings(api_key="sesame"))


def test_a_wrong_key_is_refused_and_the_right_one_asked_once(open_page):
    with keyed_server(scripted_model(["Welcome."])) as url:
        page = open_page(url)
        expect(page.locator("#key-dialog")).to_be_visible()
        page.locator("#key-input").fill("wrong")
        page.locator("#key-submit").click()
        expect(page.locator("#key-error")).to_have_text("incorrect API key")
        expect(page.locator("#key-dialog")).to_be_visible()
        screenshot(page, "key_refused")
        assert page.evaluate("localStorage.getItem('cognimamba.apiKey')") is None  # a refused key is not kept
        page.locator("#key-input").fill("sesame")
        page.locator("#key-submit").click()
        expect(page.locator("#model-name")).to_have_text("scripted")
        page.reload()
        expect(page.locator("#model-name")).to_have_text("scripted")
        expect(page.locator("#key-dialog")).to_be_hidden()
        send(page, "Hello")
        expect(page.locator(".message.assistant .body")).to_have_text("Welcome.")
        screenshot(page, "key_accepted")
