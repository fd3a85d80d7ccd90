"""Built-in tools and schema checks: model-written calls are untrusted input."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cognimamba.chat.format import ToolCall
from cognimamba.chat.tools import (
    CALCULATOR,
    CALCULATOR_CONSTANTS,
    CALCULATOR_FUNCTIONS,
    CURRENT_TIME,
    CalculatorError,
    Tool,
    ToolBox,
    calculate,
    load_tool_definitions,
    run_tool,
    validate_json,
)
from cognimamba.errors import CogniError


@pytest.mark.parametrize(("expression", "value"), [
    ("1 + 2 * 3", 7), ("(1 + 2) * 3", 9), ("2 ** 10", 1024), ("7 // 2", 3), ("7 % 4", 3), ("-3 + +4", 1),
    ("10 / 4", 2.5), ("sqrt(16) + abs(-2)", 6.0), ("round(pi, 3)", 3.142), ("max(1, 5, 3) - min(4, 2)", 3),
    ("2 ** -1", 0.5), ("factorial(10)", 3628800), ("1e3 + 0.5", 1000.5),
])
def test_calculator_computes(expression, value):
    assert calculate(expression) == pytest.approx(value)


@pytest.mark.parametrize(("expression", "problem"), [
    ("__import__('os').system('touch pwned')", "not allowed"),
    ("open('/etc/passwd').read()", "not allowed"),
    ("(1).__class__.__bases__", "not allowed"),
    ("[x for x in range(10)]", "not allowed"),
    ("lambda: 1", "not allowed"),
    ("'a' * 3", "not allowed"),
    ("True + 1", "not allowed"),
    ("x = 1", "not an arithmetic expression"),
    ("9 ** 9 ** 9 ** 9", "more than"),
    ("factorial(100000)", "factorial takes"),
    ("1 / 0", "ZeroDivisionError"),
    ("(-8) ** 0.5", "complex"),
    ("1 + " * 300 + "1", "longer than"),
    ("sqrt(-1)", "ValueError"),
    ("2.0 ** 5000", "OverflowError"),
])
def test_calculator_refuses(expression, problem, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CalculatorError, match=problem):
        calculate(expression)
    assert not (tmp_path / "pwned").exists()


def test_validate_json_reports_each_problem():
    schema = {"type": "object", "properties": {"city": {"type": "string", "minLength": 2},
                                               "days": {"type": "integer", "minimum": 1, "maximum": 7},
                                               "unit": {"enum": ["C", "F"]}},
              "required": ["city"], "additionalProperties": False}
    assert validate_json({"city": "Oslo", "days": 3, "unit": "C"}, schema) == []
    problems = validate_json({"days": 9, "unit": "K", "extra": True}, schema)
    assert any("missing required 'city'" in p for p in problems)
    assert any("9 is above 7" in p for p in problems)
    assert any("'K' is not one of" in p for p in problems)
    assert any("unexpected 'extra'" in p for p in problems)
    assert validate_json({"city": 5}, schema) == ["arguments.city: expected string, got integer"]
    assert validate_json({"city": "Rome", "days": True}, schema) == ["arguments.days: expected integer, got boolean"]
    assert validate_json([1, "a"], {"type": "array", "items": {"type": "number"}}) == [
        "arguments[1]: expected number, got string"]


def test_run_tool_validates_arguments_before_running():
    assert json.loads(run_tool(CALCULATOR, ToolCall("calculator", {"expression": "6*7"})).content) == {"result": 42}
    for arguments in ({}, {"expression": 42}, {"expression": "1", "shell": "rm -rf /"}):
        result = run_tool(CALCULATOR, ToolCall("calculator", arguments))
        assert not result.ok and json.loads(result.content)["error"].startswith("invalid arguments")
    failed = run_tool(CALCULATOR, ToolCall("calculator", {"expression": "1/0"}))
    assert not failed.ok and "ZeroDivisionError" in json.loads(failed.content)["error"]


def test_toolbox_runs_builtins_only_when_enabled():
    user_tool = {"name": "send_email", "description": "Send an email",
                 "parameters": {"type": "object", "properties": {"to": {"type": "string"}}}}
    tools = ToolBox([user_tool])
    calculator_call = ToolCall("calculator", {"expression": "2+2"})
    assert [t["function"]["name"] for t in tools.definitions()] == ["send_email"]
    assert "tool execution is off" in tools.why_not_run(calculator_call)
    assert not tools.run(calculator_call).ok
    tools.enabled = True
    assert {t["function"]["name"] for t in tools.definitions()} == {"send_email", "calculator", "current_time"}
    assert json.loads(tools.run(calculator_call).content) == {"result": 4}
    email = ToolCall("send_email", {"to": "a@b.c"})
    assert "never executed" in tools.why_not_run(email) and not tools.run(email).ok
    assert "unknown tool" in tools.why_not_run(ToolCall("rm", {}))
    clock = json.loads(tools.run(ToolCall("current_time", {"timezone": "UTC"})).content)
    assert clock["timezone"] == "UTC" and clock["time"].endswith("+00:00")
    assert not tools.run(ToolCall("current_time", {"timezone": "Mars/Olympus"})).ok


def test_user_tools_cannot_shadow_builtins():
    with pytest.raises(CogniError, match="built-in"):
        ToolBox([{"name": "calculator"}])


def test_load_tool_definitions(tmp_path: Path):
    good = tmp_path / "tools.json"
    good.write_text(json.dumps([{"name": "lookup", "parameters": {"type": "object", "properties": {}}},
                                {"type": "function", "function": {"name": "ping"}}]))
    assert [t["function"]["name"] for t in load_tool_definitions(good)] == ["lookup", "ping"]
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"tools": [{"name": "x"}]}))
    assert load_tool_definitions(wrapped)[0]["type"] == "function"
    for content, message in [("{oops", "not valid JSON"), ("[]", "expected a JSON list"),
                             ('[{"description": "no name"}]', "needs a \"name\""),
                             ('[{"name": "f", "parameters": {"type": "string"}}]', "must be a JSON Schema object")]:
        bad = tmp_path / "bad.json"
        bad.write_text(content)
        with pytest.raises(CogniError, match=message):
            load_tool_definitions(bad)
    with pytest.raises(CogniError, match="not found"):
        load_tool_definitions(tmp_path / "missing.json")


def test_calculator_results_are_finite_numbers():
    assert math.isfinite(calculate("exp(10) / 3"))


@pytest.mark.parametrize(("tool", "arguments"), [
    (CALCULATOR, {"expression": "2**20000"}),  # more digits than Python agrees to turn into text
    (CALCULATOR, {"expression": "10**4300"}),
    (CALCULATOR, {"expression": "factorial(1000)*factorial(1000)"}),
    (CURRENT_TIME, {"timezone": "Europe"}),  # a directory of the zone database
    (CURRENT_TIME, {"timezone": "America"}),
    (CURRENT_TIME, {"timezone": "x" * 5000}),  # a file name too long for the OS
    (Tool(CALCULATOR.definition, lambda arguments: 1 / 0), {"expression": "1"}),
    (Tool(CALCULATOR.definition, lambda arguments: {"result": {1, 2}}), {"expression": "1"}),  # not JSON
], ids=["2**20000", "10**4300", "factorial-squared", "Europe", "America", "long-zone", "raises", "not-json"])
def test_every_tool_failure_becomes_an_error_result(tool: Tool, arguments: dict):
    """A tool call must never end the chat: whatever goes wrong is told to the model as an error."""
    result = run_tool(tool, ToolCall(tool.name, arguments))
    assert not result.ok and json.loads(result.content)["error"]


def test_tool_errors_say_briefly_what_was_refused():
    with pytest.raises(CalculatorError, match="more than"):
        calculate("2**20000")
    assert "unknown time zone 'Europe'" in run_tool(CURRENT_TIME, ToolCall("current_time",
                                                                           {"timezone": "Europe"})).content
    too_long = run_tool(CURRENT_TIME, ToolCall("current_time", {"timezone": "x" * 5000}))
    assert len(too_long.content) < 200  # the error does not repeat the model's whole argument back to it


# The calculator's grammar: numbers and constants, unary and binary operators, calls of the allowed functions.
numbers = (st.integers(0, 10**30).map(str) | st.sampled_from(["10**8", "-10**8", "2**13000", "1e308", "0.5"])
           | st.floats(0, 1e300, allow_nan=False, allow_infinity=False).map(repr)
           | st.sampled_from(sorted(CALCULATOR_CONSTANTS)))
binary_operators = st.sampled_from(["+", "-", "*", "/", "//", "%", "**"])


def _expressions(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return (st.builds(lambda left, op, right: f"({left}) {op} ({right})", inner, binary_operators, inner)
            | st.builds(lambda sign, operand: f"{sign}({operand})", st.sampled_from("+-"), inner)
            | st.builds(lambda name, args: f"{name}({', '.join(args)})", st.sampled_from(sorted(CALCULATOR_FUNCTIONS)),
                        st.lists(inner, min_size=1, max_size=3)))


expressions = st.recursive(numbers, _expressions, max_leaves=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expression=expressions)
@example(expression="round(1, -10**7)")  # for an int, round(x, -n) computes 10**n
@example(expression="round(1, -10**8)")
@example(expression="round(2**13000, -4000) + round(1.5, 10**8)")
@example(expression="factorial(1000) * factorial(1000) * factorial(1000)")
@example(expression="(2**13000) ** 2 // 3 % (2**12999)")
@example(expression="9 ** 9 ** 9 ** 9")
def test_any_expression_returns_or_fails_cleanly_within_half_a_second(expression: str):
    """The calculator runs in the chat's own thread, holding the GIL: every operation's cost must be bounded."""
    started = time.process_time()  # CPU time: the machine may be busy, but this is what the calculator spends
    try:
        value = calculate(expression)
    except CalculatorError:
        value = None
    assert time.process_time() - started < 0.5, expression
    if value is not None:
        assert type(value) in (int, float) and json.loads(json.dumps(value)) == value
