"""Tools a chat model may call: two safe built-ins, user definitions, and checks on what the model asks for.

A tool call is text a small model wrote, so it is untrusted input: arguments are checked against the
tool's JSON Schema before anything runs, the calculator parses arithmetic with `ast` against a whitelist
(never eval/exec or a shell), and user-defined tools from `--tools FILE.json` are only shown to the model,
never executed. Running tools at all is off until the user turns it on.

The built-ins run in the chat's own thread, holding the GIL, so the calculator bounds the cost of every
operation before doing it (integer sizes, exponents, rounding digits, factorials) instead of relying on a
time limit it could not enforce without a subprocess; whatever still goes wrong becomes an error result.
"""

from __future__ import annotations

import ast
import json
import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cognimamba.chat.format import ToolCall, normalize_tool
from cognimamba.errors import CogniError

# ---------------------------------------------------------------------------------------------- JSON Schema

_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda value: isinstance(value, dict),
    "array": lambda value: isinstance(value, list),
    "string": lambda value: isinstance(value, str),
    "boolean": lambda value: isinstance(value, bool),
    "null": lambda value: value is None,
    # JSON has no bool/int confusion; Python does (True == 1), so booleans are not numbers here.
    "integer": lambda value: (isinstance(value, int) and not isinstance(value, bool))
    or (isinstance(value, float) and value.is_integer()),
    "number": lambda value: isinstance(value, int | float) and not isinstance(value, bool),
}


def validate_json(value: Any, schema: Any, where: str = "arguments") -> list[str]:
    """Problems with `value` under a JSON Schema (the keywords tool definitions use); [] when valid.

    Covers type, enum, const, properties, required, additionalProperties, items, min/max (and exclusive),
    minLength/maxLength, pattern, minItems/maxItems, anyOf, oneOf, allOf. Unknown keywords are ignored,
    as the JSON Schema spec asks.
    """
    if schema is True or schema is None or schema == {}:
        return []
    if schema is False:
        return [f"{where}: not allowed"]
    if not isinstance(schema, dict):
        return [f"{where}: the tool's schema is not an object"]
    problems: list[str] = []
    expected = schema.get("type")
    if expected is not None:
        types = expected if isinstance(expected, list) else [expected]
        if not any(_JSON_TYPES.get(name, lambda _: False)(value) for name in types):
            return [f"{where}: expected {' or '.join(map(str, types))}, got {_json_type(value)}"]
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        problems.append(f"{where}: must be {schema['const']!r}")
    if isinstance(value, dict):
        problems += _validate_object(value, schema, where)
    if isinstance(value, list):
        problems += _validate_array(value, schema, where)
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            problems.append(f"{where}: shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            problems.append(f"{where}: longer than {schema['maxLength']} characters")
        if isinstance(schema.get("pattern"), str) and re.search(schema["pattern"], value) is None:
            problems.append(f"{where}: does not match {schema['pattern']!r}")
    if _JSON_TYPES["number"](value):
        problems += _validate_number(value, schema, where)
    for keyword in ("anyOf", "oneOf"):
        options = schema.get(keyword)
        if isinstance(options, list) and options:
            matches = sum(not validate_json(value, option, where) for option in options)
            if matches == 0 or (keyword == "oneOf" and matches > 1):
                problems.append(f"{where}: matches {matches} of the {len(options)} {keyword} alternatives")
    for option in schema.get("allOf", []) if isinstance(schema.get("allOf"), list) else []:
        problems += validate_json(value, option, where)
    return problems


def _json_type(value: Any) -> str:
    for name in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _JSON_TYPES[name](value):
            return name
    return type(value).__name__


def _validate_object(value: dict[str, Any], schema: dict[str, Any], where: str) -> list[str]:
    problems = []
    properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    for name in schema.get("required", []) if isinstance(schema.get("required"), list) else []:
        if name not in value:
            problems.append(f"{where}: missing required {name!r}")
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        if name in properties:
            problems += validate_json(item, properties[name], f"{where}.{name}")
        elif extra is False:
            problems.append(f"{where}: unexpected {name!r} (allowed: {', '.join(properties) or 'none'})")
        elif isinstance(extra, dict):
            problems += validate_json(item, extra, f"{where}.{name}")
    return problems


def _validate_array(value: list[Any], schema: dict[str, Any], where: str) -> list[str]:
    problems = []
    if "minItems" in schema and len(value) < schema["minItems"]:
        problems.append(f"{where}: fewer than {schema['minItems']} items")
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        problems.append(f"{where}: more than {schema['maxItems']} items")
    if isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            problems += validate_json(item, schema["items"], f"{where}[{index}]")
    return problems


def _validate_number(value: float, schema: dict[str, Any], where: str) -> list[str]:
    problems = []
    checks = (("minimum", operator.lt, "below"), ("maximum", operator.gt, "above"),
              ("exclusiveMinimum", operator.le, "not above"), ("exclusiveMaximum", operator.ge, "not below"))
    for keyword, fails, words in checks:
        bound = schema.get(keyword)
        if _JSON_TYPES["number"](bound) and fails(value, bound):
            problems.append(f"{where}: {value} is {words} {bound}")
    return problems


# ---------------------------------------------------------------------------------------------- calculator

MAX_EXPRESSION_CHARS = 500
MAX_EXPRESSION_NODES = 200
MAX_INTEGER_BITS = 13_000  # about 3,900 digits: below the 4,300 Python agrees to turn into text
MAX_ROUND_DIGITS = 4_000  # an int rounded to -n digits costs 10**n; beyond the largest int every answer is 0
MAX_FACTORIAL = 1000

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
CALCULATOR_FUNCTIONS: dict[str, Callable[..., float]] = {
    "abs": abs, "round": round, "min": min, "max": max, "sqrt": math.sqrt, "floor": math.floor, "ceil": math.ceil,
    "exp": math.exp, "log": math.log, "log10": math.log10, "log2": math.log2, "sin": math.sin, "cos": math.cos,
    "tan": math.tan, "asin": math.asin, "acos": math.acos, "atan": math.atan, "factorial": math.factorial,
}
CALCULATOR_CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}


class ToolError(ValueError):
    """A call a built-in tool refuses or cannot complete; the message goes back to the model."""


class CalculatorError(ToolError):
    """An expression the calculator refuses or cannot compute."""


def calculate(expression: str) -> int | float:
    """Evaluate arithmetic (+ - * / // % **, parentheses, a few math functions) without eval."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as error:
        raise CalculatorError(f"not an arithmetic expression ({error.msg})") from None
    except (ValueError, RecursionError, MemoryError) as error:  # null bytes, nesting the parser refuses
        raise CalculatorError(f"not an arithmetic expression ({type(error).__name__})") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_EXPRESSION_NODES:
        raise CalculatorError(f"expression has more than {MAX_EXPRESSION_NODES} parts")
    try:
        result = _evaluate(tree.body)
    except (ZeroDivisionError, OverflowError, ValueError, TypeError) as error:
        if isinstance(error, CalculatorError):
            raise
        raise CalculatorError(f"{type(error).__name__}: {error}") from None
    if isinstance(result, float) and not math.isfinite(result):
        raise CalculatorError("the result is not a finite number")
    return result


def _evaluate(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.Name) and node.id in CALCULATOR_CONSTANTS:
        return CALCULATOR_CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        result = _BINARY[type(node.op)](left, right)
        if isinstance(result, complex):
            raise CalculatorError("the result is a complex number")
        _check_size(result)
        return result
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in CALCULATOR_FUNCTIONS
            and not node.keywords):
        arguments = [_evaluate(argument) for argument in node.args]
        _check_call(node.func.id, arguments)
        result = CALCULATOR_FUNCTIONS[node.func.id](*arguments)
        _check_size(result)
        return result
    allowed = "numbers, + - * / // % **, parentheses, pi, e, " + ", ".join(CALCULATOR_FUNCTIONS)
    raise CalculatorError(f"{ast.unparse(node)!r} is not allowed (allowed: {allowed})")


def _check_power(base: int | float, exponent: int | float) -> None:
    """Refuse before computing: base**exponent has at least (bits of base - 1) * exponent + 1 bits."""
    whole = isinstance(base, int) and isinstance(exponent, int) and exponent > 0
    if whole and (base.bit_length() - 1) * exponent >= MAX_INTEGER_BITS:
        raise CalculatorError(f"result would have more than {MAX_INTEGER_BITS} bits")


def _check_call(name: str, arguments: list[int | float]) -> None:
    """Refuse the calls whose cost grows with an argument's value rather than its size."""
    if name == "factorial" and (len(arguments) != 1 or not 0 <= arguments[0] <= MAX_FACTORIAL):
        raise CalculatorError(f"factorial takes one whole number from 0 to {MAX_FACTORIAL}")
    if name == "round" and len(arguments) == 2 and isinstance(arguments[1], int) \
            and abs(arguments[1]) > MAX_ROUND_DIGITS:
        raise CalculatorError(f"round takes at most {MAX_ROUND_DIGITS} digits either side of the point")


def _check_size(value: int | float) -> None:
    if isinstance(value, int) and value.bit_length() > MAX_INTEGER_BITS:
        raise CalculatorError(f"result would have more than {MAX_INTEGER_BITS} bits")


# ---------------------------------------------------------------------------------------------- tools


@dataclass(frozen=True)
class Tool:
    """A tool definition (OpenAI style) and, for built-ins, the function that runs it."""

    definition: dict[str, Any]
    run: Callable[[dict[str, Any]], Any] | None = None  # None: shown to the model, never executed

    @property
    def name(self) -> str:
        return str(self.definition["function"]["name"])

    @property
    def parameters(self) -> dict[str, Any]:
        return self.definition["function"].get("parameters") or {"type": "object", "properties": {}}


@dataclass(frozen=True)
class ToolResult:
    """What running a call gave: `content` is the JSON text fed back to the model in <tool_response>."""

    name: str
    ok: bool
    content: str


def _run_calculator(arguments: dict[str, Any]) -> dict[str, Any]:
    return {"result": calculate(arguments["expression"])}


def _run_current_time(arguments: dict[str, Any]) -> dict[str, Any]:
    zone_name = arguments.get("timezone") or ""
    if zone_name:
        try:
            now = datetime.now(ZoneInfo(zone_name))
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "Europe" is a directory, names too long
            raise ToolError(f"unknown time zone {zone_name[:64]!r}; use an IANA name like Europe/Paris") from None
    else:
        now = datetime.now().astimezone()
    return {"time": now.isoformat(timespec="seconds"), "timezone": zone_name or str(now.tzname())}


CALCULATOR = Tool(
    {"type": "function", "function": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression exactly, e.g. (3 + 4) * 2 or sqrt(2) / 3.",
        "parameters": {"type": "object",
                       "properties": {"expression": {"type": "string", "description": "the arithmetic to compute",
                                                     "minLength": 1, "maxLength": MAX_EXPRESSION_CHARS}},
                       "required": ["expression"], "additionalProperties": False}}},
    _run_calculator,
)
CURRENT_TIME = Tool(
    {"type": "function", "function": {
        "name": "current_time",
        "description": "The current date and time, in the local time zone or a given IANA time zone.",
        "parameters": {"type": "object",
                       "properties": {"timezone": {"type": "string", "description": "e.g. Europe/Paris (optional)"}},
                       "additionalProperties": False}}},
    _run_current_time,
)
BUILTIN_TOOLS: tuple[Tool, ...] = (CALCULATOR, CURRENT_TIME)


def run_tool(tool: Tool, call: ToolCall) -> ToolResult:
    """Check the arguments against the tool's schema, then run it; every failure becomes an error result.

    A failure is the model's to handle (it reads the error and may try again), never the end of the chat,
    so anything a tool raises, or output JSON cannot hold, is caught here rather than by each caller.
    """
    if tool.run is None:
        return _error_result(call, f"{call.name} is defined but not executable here")
    try:
        problems = validate_json(call.arguments, tool.parameters)
        if problems:
            return _error_result(call, "invalid arguments: " + "; ".join(problems[:5]))
        return ToolResult(call.name, True, json.dumps(tool.run(call.arguments), ensure_ascii=False))
    except ToolError as error:
        return _error_result(call, str(error))
    except Exception as error:  # a bug in a tool must not end the chat either
        return _error_result(call, f"{call.name} failed ({type(error).__name__}: {str(error)[:200]})")


def _error_result(call: ToolCall, message: str) -> ToolResult:
    return ToolResult(call.name, False, json.dumps({"error": message}, ensure_ascii=False))


class ToolBox:
    """The tools of one chat: user definitions always shown, built-ins shown and run only when enabled."""

    def __init__(self, user_tools: list[dict[str, Any]] | None = None, enabled: bool = False,
                 builtins: tuple[Tool, ...] = BUILTIN_TOOLS) -> None:
        self.builtins = {tool.name: tool for tool in builtins}
        self.user_tools = [Tool(normalize_tool(definition)) for definition in user_tools or []]
        clash = [tool.name for tool in self.user_tools if tool.name in self.builtins]
        if clash:
            raise CogniError(f"--tools: {clash[0]!r} is the name of a built-in tool; rename yours")
        self.enabled = enabled

    def definitions(self) -> list[dict[str, Any]]:
        """What the model is told about (rendered into the system turn)."""
        shown = list(self.user_tools) + (list(self.builtins.values()) if self.enabled else [])
        return [tool.definition for tool in shown]

    def known_names(self) -> set[str]:
        return set(self.builtins) | {tool.name for tool in self.user_tools}

    def why_not_run(self, call: ToolCall) -> str | None:
        """None if `run` would execute this call, else the reason shown to the user."""
        if call.name in self.builtins:
            return None if self.enabled else "tool execution is off (turn it on with ctrl+t or --enable-tools)"
        if any(tool.name == call.name for tool in self.user_tools):
            return f"{call.name} comes from --tools: definitions are shown to the model but never executed"
        return f"unknown tool {call.name!r}"

    def run(self, call: ToolCall) -> ToolResult:
        reason = self.why_not_run(call)
        if reason is not None:
            return _error_result(call, reason)
        return run_tool(self.builtins[call.name], call)


def load_tool_definitions(path: Path) -> list[dict[str, Any]]:
    """`--tools FILE.json`: a list of OpenAI-style definitions (or `{"tools": [...]}`), checked for shape."""
    path = Path(path)
    if not path.is_file():
        raise CogniError(f"{path}: tools file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CogniError(f"{path}: not valid JSON ({error})") from error
    if isinstance(data, dict):
        data = data.get("tools", [data])
    if not isinstance(data, list) or not data:
        raise CogniError(f"{path}: expected a JSON list of tool definitions")
    tools = []
    for index, item in enumerate(data):
        where = f"{path}: tool {index + 1}"
        try:
            tool = normalize_tool(item) if isinstance(item, dict) else None
        except ValueError:
            tool = None
        if tool is None or not isinstance(tool["function"].get("name"), str) or not tool["function"]["name"]:
            raise CogniError(f"{where}: needs a \"name\" (as {{\"type\": \"function\", \"function\": "
                             "{\"name\": ..., \"description\": ..., \"parameters\": {...}}})")
        parameters = tool["function"].get("parameters", {})
        if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
            raise CogniError(f"{where} ({tool['function']['name']}): \"parameters\" must be a JSON Schema object")
        tools.append(tool)
    return tools
