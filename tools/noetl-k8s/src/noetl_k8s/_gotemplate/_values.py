"""Values as Helm holds them and prints them: every YAML number a float64, Go's ``%v``."""

from __future__ import annotations

from decimal import Decimal
from typing import Any


class TemplateError(ValueError):
    """The template is malformed or uses something this interpreter does not support."""


class ChartFailed(TemplateError):
    """The chart called ``fail``: Helm would refuse to render with these values."""


def helm_values(value: Any) -> Any:
    """Values the way Helm holds them: every YAML number becomes a float64."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dict):
        return {str(k): helm_values(v) for k, v in value.items()}
    if isinstance(value, list):
        return [helm_values(v) for v in value]
    raise TemplateError(f"unsupported value type {type(value).__name__}")


def _go_float(value: float) -> str:
    """Go's ``%v`` of a float64: shortest digits, ``e`` form when the exponent is < -4 or >= 6.

    That is why Helm prints a value of 1000000 as ``1e+06`` unless the chart pipes it
    through ``int``.
    """
    if value == 0:
        return "0"
    _, digits_tuple, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digits_tuple))
    exp10 = len(digits) + exponent - 1
    prefix = "-" if value < 0 else ""
    if exp10 < -4 or exp10 >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{prefix}{mantissa}e{'+' if exp10 >= 0 else '-'}{abs(exp10):02d}"
    return prefix + format(Decimal(repr(abs(value))).normalize(), "f")


def go_str(value: Any) -> str:
    """How ``{{ value }}`` prints."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "<no value>"
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_str(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, list):
        return "[" + " ".join(go_str(v) for v in value) + "]"
    return str(value)


def truthy(value: Any) -> bool:
    if value is None or value is False:
        return False
    if isinstance(value, int | float | str | list | dict | tuple):
        return bool(value)
    return True
