"""A safe calculator: arithmetic on numbers, evaluated from the AST, never with ``eval``."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from flowengine.errors import ToolFailure
from flowengine.tools.base import Tool

MAX_EXPRESSION = 500
MAX_EXPONENT = 10_000
MAX_MAGNITUDE = 1e300

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": round,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "log": math.log,
    "exp": math.exp,
}
_CONSTANTS = {"pi": math.pi, "e": math.e}


def calculate(expression: str) -> dict[str, Any]:
    """The value of ``expression``: numbers, + - * / // % **, parentheses, a few functions."""
    text = expression.strip().rstrip("=").replace("^", "**").replace("×", "*").replace("÷", "/")  # noqa: RUF001
    if len(text) > MAX_EXPRESSION:
        raise ToolFailure(f"the expression is longer than {MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise ToolFailure(f"not an arithmetic expression: {expression!r}") from None
    value = _evaluate(tree.body)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    return {"expression": text, "value": value}


def _evaluate(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ToolFailure(f"the exponent {right} is too large")
        try:
            value = _BINARY[type(node.op)](left, right)
        except ZeroDivisionError:
            raise ToolFailure("division by zero") from None
        except OverflowError:
            raise ToolFailure("the result is too large") from None
        if isinstance(value, complex) or abs(value) > MAX_MAGNITUDE:
            raise ToolFailure("the result is not a real number of sensible size")
        return value
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
    ):
        try:
            return _FUNCTIONS[node.func.id](*(_evaluate(arg) for arg in node.args))
        except (ValueError, TypeError) as exc:
            raise ToolFailure(f"{node.func.id}: {exc}") from None
    raise ToolFailure(f"only numbers and arithmetic are allowed, not {ast.unparse(node)!r}")


TOOL = Tool(
    name="calculator",
    description="Evaluate an arithmetic expression such as (3 + 4) * 2 / 7.",
    parameters={
        "type": "object",
        "required": ["expression"],
        "additionalProperties": False,
        "properties": {"expression": {"type": "string", "minLength": 1}},
    },
    function=calculate,
    timeout=2.0,
    result={
        "type": "object",
        "required": ["expression", "value"],
        "additionalProperties": False,
        "properties": {
            "expression": {"type": "string", "description": "the expression as evaluated"},
            "value": {"type": "number", "description": "its value"},
        },
    },
)
