"""The expression sandbox: an attack corpus is rejected before anything runs, and allowed expressions are exact."""

import builtins
import contextlib
from decimal import Decimal

import pytest

from app.processes.sandbox import SandboxError, evaluate_expression, execute_script, validate_expression

ATTACKS = [
    ("__import__('os')", "'__import__' is not allowed"),
    ("().__class__.__bases__[0].__subclasses__()", "Method calls (.__subclasses__()) are not allowed"),
    ("open('/etc/passwd')", "The function 'open' is not allowed"),
    ("'{0.__class__}'.format(1)", "Method calls (.format()) are not allowed"),
    ("[1]*10**9", "List is not allowed"),
    ("lambda: 1", "Lambda is not allowed"),
    ("[x for x in range(10**12)]", "ListComp is not allowed"),
    ("sum(x for x in range(10**12))", "The function 'sum' is not allowed"),
    ("{x: 1 for x in range(10**12)}", "DictComp is not allowed"),
    ("__builtins__", "names may not start with an underscore"),
    ("account.__dict__", "Attribute access (.__dict__) is not allowed"),
    ("(x := 1)", "NamedExpr is not allowed"),
    ("min(*limits)", "plain positional arguments only"),
    ("1 if True else 2; import os", "Invalid syntax"),
]


@contextlib.contextmanager
def _builtin_spy():
    """Record every call of open() and __import__ made inside the block."""
    calls = []
    real_open, real_import = builtins.open, builtins.__import__

    def spy_open(*args, **kwargs):
        calls.append(("open", args))
        return real_open(*args, **kwargs)

    def spy_import(*args, **kwargs):
        calls.append(("import", args[:1]))
        return real_import(*args, **kwargs)

    builtins.open, builtins.__import__ = spy_open, spy_import
    try:
        yield calls
    finally:
        builtins.open, builtins.__import__ = real_open, real_import


def _error_of(function, *args):
    try:
        function(*args)
    except SandboxError as error:
        return str(error)
    return None


@pytest.mark.parametrize("source, message", ATTACKS)
def test_sandbox_rejects_attack(source, message):
    with _builtin_spy() as calls:
        checked = _error_of(validate_expression, source)
        evaluated = _error_of(evaluate_expression, source, {"x": 1, "limits": [1], "account": {}})
    # ast.walk imports collections itself; nothing else may be imported or opened.
    assert [call for call in calls if call != ("import", ("collections",))] == []
    assert checked is not None and message in checked
    assert evaluated is not None and message in evaluated


def test_sandbox_bounds_runaway_arithmetic():
    with pytest.raises(SandboxError, match="Exponents must be whole numbers up to 64"):
        evaluate_expression("9 ** 9 ** 9", {})
    with pytest.raises(SandboxError, match="exceeds the limit of 10\\*\\*30"):
        evaluate_expression("10 ** 40", {})
    with pytest.raises(SandboxError, match="applies to numbers only"):
        evaluate_expression("'a' * 1000000", {})
    with pytest.raises(SandboxError, match="more than 300 parts"):
        evaluate_expression(" + ".join(["1"] * 400), {})


def test_sandbox_reports_missing_names_and_bad_keys():
    with pytest.raises(SandboxError, match="The name 'escalate' is not in the task data"):
        evaluate_expression("company_decision == 'approve' and escalate", {"company_decision": "approve"})
    with pytest.raises(SandboxError, match="The key 'area' is not present"):
        evaluate_expression("account['area'] > 1", {"account": {}})
    with pytest.raises(SandboxError, match="ZeroDivisionError|DivisionByZero"):
        evaluate_expression("amount / 0", {"amount": Decimal("1")})


def test_sandbox_evaluates_conditions_in_decimal():
    data = {"area": Decimal("87.35"), "decision": "approve", "escalate": False, "account": {"type": "residential"}}
    assert evaluate_expression("decision == 'approve' and not escalate", data) is True
    assert evaluate_expression("area * 0.2", data) == Decimal("17.470")
    assert evaluate_expression("area / 5", data) == Decimal("17.47")
    assert evaluate_expression("account['type'] in ('residential', 'low_income')", data) is True
    assert evaluate_expression("max(area, 200) if escalate else abs(-3)", data) == 3
    assert evaluate_expression("Decimal('0.1') + Decimal('0.2') == 0.3", data) is True


def test_sandbox_script_assigns_names_only():
    data = {"area": Decimal("100")}
    execute_script("threshold = 200\nlarge = area > threshold", data)
    assert data["threshold"] == 200
    assert data["large"] is False
    with pytest.raises(SandboxError, match="only `name = expression` lines"):
        execute_script("import os", data)
    with pytest.raises(SandboxError, match="must assign one plain name"):
        execute_script("data['x'] = 1", data)


def test_number_formatters_for_reason_texts():
    data = {"area": Decimal("200.0000"), "amount": Decimal("1000"), "share": Decimal("30.005")}
    assert evaluate_expression("text(area)", data) == "200"
    assert evaluate_expression("text(area - area)", data) == "0"
    assert evaluate_expression("round_text(amount, 2)", data) == "1000.00"
    # 20 of 120 is 16.666…%, shown as 16.67.
    assert evaluate_expression("round_text(percent(20, 120), 2)", data) == "16.67"
    assert evaluate_expression("percent(5, 0)", data) == 0
    with pytest.raises(SandboxError, match="decimal places from 0 to 6"):
        evaluate_expression("round_text(amount, 7)", data)
    with pytest.raises(SandboxError, match="takes a number"):
        evaluate_expression("percent('a', 1)", data)
