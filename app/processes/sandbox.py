"""A small expression language for gateway conditions, service parameters and scripts.

BPMN expressions are parsed with `ast` and interpreted node by node; nothing is passed to
`eval` or `exec`. Allowed: names from task data, constants, comparisons, `and`/`or`/`not`,
arithmetic on numbers, `x if c else y`, subscripts by a constant, tuples of values for
`in`, and calls of the functions in FUNCTIONS. The number formatters among them (`text`,
`round_text`, `percent`) build the reason texts of DMN decision tables. Rejected:
attribute access, names that start with an underscore, lambdas, comprehensions,
list/dict/set literals, keyword arguments, starred arguments and every other node type.
Scripts are lines of `name = expression`.

Numeric literals with a fraction or exponent become Decimal, and `/` divides in Decimal,
so money never passes through float.
"""

import ast
from decimal import Decimal, DivisionByZero, InvalidOperation

# Limits that keep one evaluation small; no BPMN condition of ours comes near them.
MAX_SOURCE_CHARS = 2000
MAX_NODES = 300
MAX_MAGNITUDE = Decimal(10) ** 30
MAX_EXPONENT = 64
MAX_STRING_CHARS = 10_000


class SandboxError(ValueError):
    """An expression or script that is not allowed, or that failed while it was evaluated.

    str() is the English technical text, kept for logs and as the detail shown to users.
    `code` names the translated template in app.processes.messages.SANDBOX_TEXTS, and
    `params` contains its values as text or numbers, so events can store them as JSON.
    """

    def __init__(self, message, code="", **params):
        super().__init__(message)
        self.code = code
        self.params = params


def _decimal(value):
    if isinstance(value, bool) or not isinstance(value, (int, str, Decimal)):
        raise SandboxError(f"Decimal() takes an int, a str or a Decimal, not {type(value).__name__}.", "decimal_type", type=type(value).__name__)
    try:
        return Decimal(value)
    except InvalidOperation as error:
        raise SandboxError(f"Decimal({value!r}) is not a number.", "decimal_value", value=repr(value)) from error


def _length(value):
    if not isinstance(value, (str, list, tuple, dict)):
        raise SandboxError(f"len() takes a str, list or dict, not {type(value).__name__}.", "len_type", type=type(value).__name__)
    return len(value)


def _deadline_unbound(key):
    raise SandboxError(f"deadline({key!r}) is only available while an instance runs, in a timer expression.", "deadline_unbound", key=repr(key))


def _require_decimal(value, function):
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise SandboxError(f"{function}() takes a number, not {type(value).__name__}.", "number_argument", function=function, type=type(value).__name__)
    return Decimal(value)


def _text(value):
    """Format a number as plain text without trailing zeros (200.0000 -> "200"); text is returned as it is."""
    if isinstance(value, str):
        return value
    number = _require_decimal(value, "text")
    return f"{number.normalize():f}" if number else "0"


def _round_text(value, places):
    """Format a number with exactly `places` decimals (1000 -> "1000.00" for 2 places)."""
    if isinstance(places, bool) or not isinstance(places, int) or not 0 <= places <= 6:
        raise SandboxError("round_text() takes a whole number of decimal places from 0 to 6.", "round_text_places")
    return f"{_require_decimal(value, 'round_text').quantize(Decimal(1).scaleb(-places))}"


def _percent(part, whole):
    """Compute part × 100 / whole in Decimal, or 0 when whole is 0."""
    whole = _require_decimal(whole, "percent")
    if not whole:
        return Decimal(0)
    return _require_decimal(part, "percent") * 100 / whole


# The only callables an expression can reach, by name. The script engine binds `deadline`
# (the due time of a company timer key, see app.processes.timers) to the running instance.
FUNCTIONS = {
    "abs": abs,
    "min": min,
    "max": max,
    "len": _length,
    "Decimal": _decimal,
    "deadline": _deadline_unbound,
    "text": _text,
    "round_text": _round_text,
    "percent": _percent,
}

_COMPARISONS = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: lambda a, b: a is b,
    ast.IsNot: lambda a, b: a is not b,
}
_ARITHMETIC = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow)
_ALLOWED_NODES = (
    ast.Expression, ast.Module, ast.Assign, ast.Expr, ast.BoolOp, ast.And, ast.Or,
    ast.UnaryOp, ast.Not, ast.USub, ast.UAdd, ast.BinOp, ast.Compare, ast.IfExp,
    ast.Name, ast.Load, ast.Store, ast.Constant, ast.Subscript, ast.Tuple, ast.Call,
    *_ARITHMETIC, *_COMPARISONS,
)


def _parse(source, mode):
    if not isinstance(source, str):
        raise SandboxError(f"An expression must be text, not {type(source).__name__}.", "not_text", type=type(source).__name__)
    if len(source) > MAX_SOURCE_CHARS:
        raise SandboxError(
            f"The expression has {len(source)} characters; the limit is {MAX_SOURCE_CHARS}.", "too_long", length=len(source), limit=MAX_SOURCE_CHARS
        )
    try:
        return ast.parse(source.strip(), mode=mode)
    except SyntaxError as error:
        raise SandboxError(f"Invalid syntax in {_quote(source)}: {error.msg}.", "syntax", source=_quote(source), reason=error.msg) from error
    except (RecursionError, MemoryError) as error:
        raise SandboxError(f"The expression {_quote(source)} is nested too deeply.", "too_deep", source=_quote(source)) from error


def _describe(node):
    return type(node).__name__


def _quote(source):
    """Quote an expression for an error message, shortened to 80 characters."""
    text = source.strip()
    return repr(text if len(text) <= 80 else text[:77] + "...")


def check_tree(tree, source):
    """Raise SandboxError unless every node of `tree` is on the whitelist."""
    count = 0
    for node in ast.walk(tree):
        count += 1
        if count > MAX_NODES:
            raise SandboxError(
                f"The expression {_quote(source)} has more than {MAX_NODES} parts; split it up.", "too_many_parts", source=_quote(source), limit=MAX_NODES
            )
        if isinstance(node, ast.Attribute):
            raise SandboxError(f"Attribute access (.{node.attr}) is not allowed in {_quote(source)}.", "attribute", attribute=node.attr, source=_quote(source))
        if not isinstance(node, _ALLOWED_NODES):
            raise SandboxError(
                f"{_describe(node)} is not allowed in {_quote(source)}; use only names, constants, comparisons and arithmetic.",
                "node_not_allowed", node=_describe(node), source=_quote(source),
            )
        if isinstance(node, ast.Name) and node.id.startswith("_"):
            raise SandboxError(
                f"The name {node.id!r} is not allowed in {_quote(source)}: names may not start with an underscore.",
                "underscore_name", name=repr(node.id), source=_quote(source),
            )
        if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float, str, bool, type(None))):
            raise SandboxError(f"The constant {node.value!r} is not allowed in {_quote(source)}.", "constant", constant=repr(node.value), source=_quote(source))
        if isinstance(node, ast.Subscript) and not isinstance(node.slice, ast.Constant):
            raise SandboxError(f"Subscripts must be a constant key or index in {_quote(source)}.", "subscript_not_constant", source=_quote(source))
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Attribute):
                raise SandboxError(
                    f"Method calls (.{node.func.attr}()) are not allowed in {_quote(source)}.", "method_call", method=node.func.attr, source=_quote(source)
                )
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                name = node.func.id if isinstance(node.func, ast.Name) else _describe(node.func)
                raise SandboxError(
                    f"The function {name!r} is not allowed in {_quote(source)}; allowed: {', '.join(FUNCTIONS)}.",
                    "function_not_allowed", function=repr(name), source=_quote(source), allowed=", ".join(FUNCTIONS),
                )
            if node.keywords or any(isinstance(arg, ast.Starred) for arg in node.args):
                raise SandboxError(f"Calls take plain positional arguments only in {_quote(source)}.", "call_arguments", source=_quote(source))
        if isinstance(node, ast.Assign):
            if len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name):
                raise SandboxError(f"A script line must assign one plain name, in {_quote(source)}.", "assign_target", source=_quote(source))
            if node.targets[0].id in FUNCTIONS:
                raise SandboxError(
                    f"The name {node.targets[0].id!r} is a function and cannot be assigned, in {_quote(source)}.",
                    "assign_function", name=repr(node.targets[0].id), source=_quote(source),
                )


def validate_expression(source):
    """Parse and check an expression without evaluating it; return the checked tree."""
    tree = _parse(source, "eval")
    check_tree(tree, source)
    return tree


def validate_script(source):
    """Parse and check a script (lines of `name = expression`); return the checked tree."""
    tree = _parse(source, "exec")
    for statement in tree.body:
        if not isinstance(statement, ast.Assign):
            raise SandboxError(
                f"Line {statement.lineno} of the script is a {_describe(statement)}; only `name = expression` lines are allowed.",
                "script_line", line=statement.lineno, node=_describe(statement),
            )
    check_tree(tree, source)
    return tree


def evaluate_expression(source, data, bound=None):
    """Evaluate a checked expression against `data` (task data) and return its value.

    `bound` replaces entries of FUNCTIONS by name for this evaluation.
    """
    tree = validate_expression(source)
    return _Interpreter(source, data, bound).run(tree.body)


def execute_script(source, data):
    """Run a checked script, assigning each result into `data`."""
    tree = validate_script(source)
    interpreter = _Interpreter(source, data)
    for statement in tree.body:
        data[statement.targets[0].id] = interpreter.run(statement.value)


class _Interpreter:
    """Walks a checked tree; every value it produces is checked for size."""

    def __init__(self, source, data, bound=None):
        self.source = source
        self.data = data
        self.functions = {**FUNCTIONS, **(bound or {})}

    def run(self, node):
        try:
            return self._eval(node)
        except SandboxError:
            raise
        except (TypeError, ZeroDivisionError, DivisionByZero, InvalidOperation, OverflowError, ValueError) as error:
            raise SandboxError(
                f"Evaluating {_quote(self.source)} failed: {type(error).__name__}: {error}.",
                "evaluation_failed", source=_quote(self.source), error=f"{type(error).__name__}: {error}",
            ) from error

    def _eval(self, node):
        method = getattr(self, "_eval_" + type(node).__name__, None)
        if method is None:
            raise SandboxError(f"{_describe(node)} is not allowed in {_quote(self.source)}.", "node_not_allowed", node=_describe(node), source=_quote(self.source))
        return method(node)

    def _eval_Constant(self, node):
        value = node.value
        if isinstance(value, float):
            literal = ast.get_source_segment(self.source.strip(), node) or repr(value)
            return self._number(_decimal(literal.replace("_", "")))
        if isinstance(value, int) and not isinstance(value, bool):
            return self._number(value)
        return value

    def _eval_Name(self, node):
        if node.id in FUNCTIONS:
            raise SandboxError(
                f"The function {node.id!r} can only be called, in {_quote(self.source)}.", "function_not_called", function=repr(node.id), source=_quote(self.source)
            )
        if node.id not in self.data:
            raise SandboxError(
                f"The name {node.id!r} is not in the task data; check the spelling in {_quote(self.source)}.",
                "unknown_name", name=repr(node.id), source=_quote(self.source),
            )
        return self.data[node.id]

    def _eval_Tuple(self, node):
        return tuple(self._eval(item) for item in node.elts)

    def _eval_Subscript(self, node):
        container = self._eval(node.value)
        key = node.slice.value
        if not isinstance(container, (dict, list, tuple, str)):
            raise SandboxError(
                f"A {type(container).__name__} cannot be subscripted, in {_quote(self.source)}.",
                "not_subscriptable", type=type(container).__name__, source=_quote(self.source),
            )
        try:
            return container[key]
        except (KeyError, IndexError, TypeError) as error:
            raise SandboxError(f"The key {key!r} is not present, in {_quote(self.source)}.", "missing_key", key=repr(key), source=_quote(self.source)) from error

    def _eval_BoolOp(self, node):
        is_and = isinstance(node.op, ast.And)
        value = None
        for operand in node.values:
            value = self._eval(operand)
            if bool(value) != is_and:
                return value
        return value

    def _eval_UnaryOp(self, node):
        operand = self._eval(node.operand)
        if isinstance(node.op, ast.Not):
            return not operand
        self._require_number(operand, node.op)
        return self._number(-operand if isinstance(node.op, ast.USub) else +operand)

    def _eval_IfExp(self, node):
        return self._eval(node.body) if self._eval(node.test) else self._eval(node.orelse)

    def _eval_Compare(self, node):
        left = self._eval(node.left)
        for operator, right_node in zip(node.ops, node.comparators):
            right = self._eval(right_node)
            if not _COMPARISONS[type(operator)](left, right):
                return False
            left = right
        return True

    def _eval_BinOp(self, node):
        left = self._eval(node.left)
        right = self._eval(node.right)
        if isinstance(node.op, ast.Add) and isinstance(left, str) and isinstance(right, str):
            if len(left) + len(right) > MAX_STRING_CHARS:
                raise SandboxError(
                    f"The text built by {_quote(self.source)} would exceed {MAX_STRING_CHARS} characters.",
                    "text_too_long", source=_quote(self.source), limit=MAX_STRING_CHARS,
                )
            return left + right
        self._require_number(left, node.op)
        self._require_number(right, node.op)
        if isinstance(node.op, ast.Pow):
            if isinstance(right, bool) or not isinstance(right, int) or abs(right) > MAX_EXPONENT:
                raise SandboxError(
                    f"Exponents must be whole numbers up to {MAX_EXPONENT}, in {_quote(self.source)}.", "exponent", limit=MAX_EXPONENT, source=_quote(self.source)
                )
            result = Decimal(left) ** right if isinstance(left, Decimal) or right < 0 else left**right
        elif isinstance(node.op, ast.Div):
            result = Decimal(left) / Decimal(right)
        elif isinstance(node.op, ast.FloorDiv):
            result = left // right
        elif isinstance(node.op, ast.Mod):
            result = left % right
        elif isinstance(node.op, ast.Mult):
            result = left * right
        elif isinstance(node.op, ast.Sub):
            result = left - right
        else:
            result = left + right
        return self._number(result)

    def _eval_Call(self, node):
        args = [self._eval(arg) for arg in node.args]
        result = self.functions[node.func.id](*args)
        if isinstance(result, (int, Decimal)) and not isinstance(result, bool):
            return self._number(result)
        return result

    def _require_number(self, value, operator):
        if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
            raise SandboxError(
                f"The operator {type(operator).__name__} applies to numbers only, not {type(value).__name__}, in {_quote(self.source)}.",
                "operator_type", operator=type(operator).__name__, type=type(value).__name__, source=_quote(self.source),
            )

    def _number(self, value):
        if abs(value) > MAX_MAGNITUDE:
            raise SandboxError(f"A value in {_quote(self.source)} exceeds the limit of 10**30.", "magnitude", source=_quote(self.source))
        return value
