"""The page's routes over HTTP (the browser tests are tests/serve/test_web_page.py): the page and its files
load without a key and from the package alone, while the API, and the built-in tools it runs, keep theirs."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator

import httpx
import pytest

from cognimamba.serve.state import ServerSettings
from cognimamba.serve.web.page import STATIC
from tests.serve.scripted import scripted_model
from tests.serve.server_thread import running_server

PACKAGE = STATIC.parents[2]  # cognimamba/
KEY = {"Authorization": "Bearer sesame"}


@pytest.fixture(scope="module")
def keyed_server() -> Iterator[str]:
    with running_server(scripted_model(["hi"]), ServerSettings(api_key="sesame")) as url:
        yield url


def run_tool(url: str, body: dict, headers: dict[str, str] = KEY) -> httpx.Response:
    return httpx.post(f"{url}/web/tools/run", json=body, headers=headers, timeout=30)


def test_the_page_loads_without_a_key_but_the_api_still_needs_one(keyed_server):
    page = httpx.get(f"{keyed_server}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]  # no inline or foreign script runs
    script = httpx.get(f"{keyed_server}/web/app.js")
    assert script.headers["content-type"].split(";")[0] in ("text/javascript", "application/javascript")
    assert script.headers["cache-control"] == "no-cache"  # an upgrade never mixes a new page with old scripts
    assert httpx.get(f"{keyed_server}/v1/models").status_code == 401
    assert httpx.get(f"{keyed_server}/web/tools").status_code == 401
    assert run_tool(keyed_server, {"name": "calculator", "arguments": "{}"}, headers={}).status_code == 401


def test_everything_the_page_loads_is_a_packaged_file(keyed_server):
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    scripts = (STATIC / "app.js").read_text(encoding="utf-8")
    loaded = re.findall(r'(?:src|href)="(web/[^"]+)"', html) + [
        f"web/{name}" for name in re.findall(r'from "\./([^"]+)"', scripts)]
    assert len(loaded) >= 8
    for path in loaded:
        assert (STATIC / path.removeprefix("web/")).is_file(), path
        assert httpx.get(f"{keyed_server}/{path}").status_code == 200, path
    assert "http" not in re.sub(r"<!--.*?-->", "", html)  # nothing from a CDN


def test_missing_files_are_404s_in_the_api_s_shape(keyed_server):
    for path in ["/web/nope.js", "/web/..%2Fpage.py", "/web/%2e%2e/page.py"]:
        response = httpx.get(f"{keyed_server}{path}")
        assert response.status_code == 404 and "error" in response.json(), path


def test_pyproject_packages_every_static_file():
    patterns = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    packaged = {path for pattern in patterns["cognimamba"] for path in PACKAGE.glob(pattern) if path.is_file()}
    missing = sorted(str(path.relative_to(PACKAGE)) for path in STATIC.rglob("*") if path.is_file()
                     and path not in packaged)
    assert not missing, missing


def test_lists_the_built_in_tools(keyed_server):
    tools = httpx.get(f"{keyed_server}/web/tools", headers=KEY).json()["tools"]
    assert [tool["function"]["name"] for tool in tools] == ["calculator", "current_time"]


def test_runs_a_call_as_cogni_chat_would(keyed_server):
    result = run_tool(keyed_server, {"name": "calculator", "arguments": '{"expression": "6 * 7"}'}).json()
    assert result == {"name": "calculator", "ok": True, "content": '{"result": 42}'}


@pytest.mark.parametrize(("call", "error"), [
    ({"name": "calculator", "arguments": '{"expression": 7}'}, "invalid arguments"),
    ({"name": "calculator", "arguments": '{"expression": "10 ** 10 ** 10"}'}, "more than"),
    ({"name": "rm_rf", "arguments": "{}"}, "unknown tool"),
])
def test_a_failing_call_is_a_result_the_model_reads(keyed_server, call: dict, error: str):
    result = run_tool(keyed_server, call).json()
    assert result["ok"] is False and error in result["content"]


@pytest.mark.parametrize("body", [{"arguments": "{}"}, {"name": "calculator", "arguments": "{oops"},
                                  {"name": "calculator", "arguments": "[1]"}])
def test_a_request_that_is_not_a_call_is_a_400(keyed_server, body: dict):
    response = run_tool(keyed_server, body)
    assert response.status_code == 400 and response.json()["error"]["message"]
