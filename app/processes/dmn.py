"""Escalation decision tables (DMN 1.3): the table of each process type, its checks and its settings rules.

Each process type has one decision `<process type>_escalation` with one decision table.
Its outputs are `escalate` (boolean) and `escalation_reason` (text), and its hit policy is
COLLECT: every matching rule adds its reason, and any rule with `escalate` true sends the
request to the group approver (app.processes.engine.EscalationRuleTask joins the list).

Cells are expressions of app.processes.sandbox, evaluated the way SpiffWorkflow 3.2.0's
DMNEngine evaluates them: an input entry that is a whole expression is compared with
`==`, an entry that starts with an operator (`> 200`, `<= 10`) is appended to
the input expression, and `?` stands for the input value (`0 < ? <= 10`). `-` or an
empty cell matches anything. An entry that starts with a keyword needs the `?`
(`? not in ("a", "b")`), because the engine appends entries without a space.

The rules that /processes/settings edits are "settings rules" with fixed ids (see
SETTINGS_RULES). A company's table starts as the group template in bpmn/. Its settings
rules are rebuilt from the company's EscalationRule row, and any other rule is kept as
written.
"""

import ast
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from flask_babel import gettext as _
from lxml import etree

from app.i18n import N_, join_items
from app.network.models import USER_TYPES
from app.processes.escalation import RULE_FIELDS
from app.processes.messages import sandbox_error_text
from app.processes.models import PROCESS_TYPES
from app.processes.sandbox import FUNCTIONS, SandboxError, evaluate_expression, validate_expression

DMN_NAMESPACE = "https://www.omg.org/spec/DMN/20191111/MODEL/"
NS = {"dmn": DMN_NAMESPACE}
XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'
TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "bpmn"
OUTPUT_NAMES = ("escalate", "escalation_reason")
HIT_POLICIES = ("COLLECT", "UNIQUE")
# Upper bound of a stored table's text; the templates have 1,200 to 4,200 characters.
MAX_DMN_CHARS = 200_000
# The name SpiffWorkflow's DMNEngine puts in place of `?` in an input entry.
INPUT_PLACEHOLDER = "dmninputexpr"
# `?` outside quotes, as DMNEngine.evaluate finds it.
_QUESTION_MARK = re.compile(r"(\?)(?=(?:[^'\"]|['\"][^'\"]*['\"])*$)")
# Id of the input column that reads user_type in every template.
USER_TYPE_INPUT = "input_user_type"
_GREATER_THAN = re.compile(r"^\s*>\s*(\d+(?:\.\d+)?)\s*$")

# Task data every table may read: facts of the account, put into the start data.
ACCOUNT_VARIABLES = {
    "user_type": N_("用户类型（residential 居民 / low_income 低保 / non_residential 非居民）"),
    "building_area": N_("申请时建筑面积（㎡）"),
}
# Process type -> task data its table may read besides ACCOUNT_VARIABLES: the start data
# and the outputs of the steps before the decision.
DECISION_VARIABLES = {
    "suspension": {},
    "waiver": {
        "waiver_amount": N_("减免金额（元）"), "receivable_at_start": N_("申请时减免对象应收（元；减免滞纳金时为该季滞纳金）"),
        "waiver_target": N_("减免对象代码（charge 热费 / late_fee 滞纳金）"),
        "waiver_category": N_("减免类别代码"), "waiver_category_label": N_("减免类别名称"),
    },
    "forced_shutoff": {"arrears": N_("申请时欠费（元）"), "arrears_now": N_("送达通知后欠费（元）")},
    "area_adjustment": {"old_area": N_("原建筑面积（㎡）"), "new_area": N_("新建筑面积（㎡）")},
    "reheating": {},
    "connection": {"applied_area": N_("申请入网面积（㎡）"), "surveyed_area": N_("实测建筑面积（㎡）")},
    "back_charge": {"back_charge_amount": N_("追补金额（元）"), "back_charge_days": N_("追补天数")},
}


# Task data of the trial evaluation that check_table runs over every cell: each user type,
# these texts, and a non-zero number for every other variable (back_charge_days is an int).
TRIAL_TEXTS = {"waiver_target": "charge", "waiver_category": "hardship", "waiver_category_label": "困难救助"}
TRIAL_INTEGERS = {"back_charge_days": 30}
TRIAL_NUMBER = Decimal("120.50")


def decision_id_for(process_type):
    """Return the decision id of a process type's escalation table."""
    return f"{process_type}_escalation"


DECISION_IDS = {decision_id_for(process_type): process_type for process_type in PROCESS_TYPES}


def variables_for(process_type):
    """Return the task data names a process type's table may read, with their Chinese descriptions marked with N_."""
    return {**ACCOUNT_VARIABLES, **DECISION_VARIABLES[process_type]}


def template_xml(process_type):
    """Read the group template of a process type's table from bpmn/."""
    return (TEMPLATE_DIR / f"{decision_id_for(process_type)}.dmn").read_text(encoding="utf-8")


@dataclass(frozen=True)
class Problem:
    """One reason a table cannot be saved, tied to a DMN element id (rule, input, output or decision)."""

    element_id: str
    message: str

    def as_dict(self):
        return {"element_id": self.element_id, "message": self.message}


class DecisionError(ValueError):
    """A decision table that cannot be saved; `problems` lists every finding."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("；".join(f"{p.element_id}：{p.message}" for p in self.problems))


# -- reading a table


@dataclass(frozen=True)
class Column:
    """An input or output column of a table."""

    element_id: str
    label: str
    expression: str


@dataclass(frozen=True)
class Row:
    """One rule of a table: its cells in column order, inputs first."""

    element_id: str
    number: int
    inputs: tuple
    outputs: tuple
    description: str


@dataclass(frozen=True)
class Table:
    """A parsed decision table as the read-only view shows it."""

    decision_id: str
    name: str
    hit_policy: str
    inputs: tuple
    outputs: tuple
    rows: tuple


def _text_of(element):
    node = element.find("dmn:text", NS)
    text = node.text if node is not None and node.text is not None else ""
    return text.strip()


def _cell_text(entry):
    text = _text_of(entry)
    return "" if text == "-" else text


DOCTYPE_MESSAGE = N_("决策表不能包含 DOCTYPE 或实体声明；请删除 <!DOCTYPE ...> 后再保存。")


def parse_xml(xml):
    """Parse DMN text into an lxml root, or raise DecisionError naming the line of a syntax error.

    A document type declaration is rejected, because SpiffWorkflow parses the stored text
    again with lxml's default parser, which expands the entities it declares.
    """
    if len(xml) > MAX_DMN_CHARS:
        raise DecisionError([Problem("definitions", _("决策表共 %(size)s 个字符，超过 %(limit)s 字符上限；请精简规则。", size=len(xml), limit=MAX_DMN_CHARS))])
    # Checked before parsing too: lxml stops entity expansion (billion laughs) with a syntax error that names no cause.
    if "<!DOCTYPE" in xml or "<!ENTITY" in xml:
        raise DecisionError([Problem("definitions", _(DOCTYPE_MESSAGE))])
    try:
        root = etree.fromstring(xml.encode("utf-8"), parser=etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError as error:
        raise DecisionError([Problem("definitions", _("不是格式正确的 XML（第 %(line)s 行）：%(error)s。请检查标签是否成对闭合。", line=error.lineno, error=error.msg))]) from error
    if root.getroottree().docinfo.doctype:
        raise DecisionError([Problem("definitions", _(DOCTYPE_MESSAGE))])
    return root


def read_table(xml):
    """Read the decision and its single table for display; raises DecisionError when the structure is missing."""
    root = parse_xml(xml)
    decisions = root.findall("dmn:decision", NS)
    if len(decisions) != 1:
        raise DecisionError([Problem(root.get("id") or "definitions", _("文件须恰好包含一个 decision，当前有 %(count)s 个。", count=len(decisions)))])
    decision = decisions[0]
    tables = decision.findall("dmn:decisionTable", NS)
    if len(tables) != 1:
        raise DecisionError([Problem(decision.get("id") or "decision", _("decision 须恰好包含一个 decisionTable，当前有 %(count)s 个。", count=len(tables)))])
    table = tables[0]
    inputs = tuple(
        Column(element.get("id", ""), element.get("label", ""), _expression_of(element)) for element in table.findall("dmn:input", NS)
    )
    outputs = tuple(
        Column(element.get("id", ""), element.get("label", ""), element.get("name", "")) for element in table.findall("dmn:output", NS)
    )
    rows = []
    for number, rule in enumerate(table.findall("dmn:rule", NS), start=1):
        description = rule.find("dmn:description", NS)
        rows.append(Row(
            rule.get("id", ""), number,
            tuple(_cell_text(entry) for entry in rule.findall("dmn:inputEntry", NS)),
            tuple(_text_of(entry) for entry in rule.findall("dmn:outputEntry", NS)),
            (description.text or "").strip() if description is not None else "",
        ))
    return Table(
        decision.get("id", ""), decision.get("name", ""), (table.get("hitPolicy") or "UNIQUE").upper(), inputs, outputs, tuple(rows)
    )


def _expression_of(input_element):
    expression = input_element.find("dmn:inputExpression", NS)
    return _text_of(expression) if expression is not None else ""


# -- checking a table


def _is_expression(source):
    try:
        ast.parse(source, mode="eval")
    except SyntaxError:
        return False
    return True


def entry_expression(input_expression, entry):
    """Build the expression DMNEngine evaluates for an input entry, with `?` as INPUT_PLACEHOLDER.

    Like the engine, an entry that is not a whole expression is appended to the input
    expression without a space, so `> 200` works but `not in (...)` needs `? not in (...)`.
    """
    if _QUESTION_MARK.search(entry):
        return _QUESTION_MARK.sub(INPUT_PLACEHOLDER, entry)
    if _is_expression(entry):
        return f"({input_expression}) == ({entry})"
    return f"{input_expression}{entry}"


def _names(tree):
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}


def _check_expression(element_id, where, source, allowed):
    """Compile one cell in the sandbox and check that it reads only allowed task data."""
    try:
        tree = validate_expression(source)
    except SandboxError as error:
        return [Problem(element_id, _("%(where)s「%(source)s」不能通过表达式检查：%(error)s", where=where, source=source[:80], error=sandbox_error_text(error)))]
    unknown = sorted(_names(tree) - set(allowed) - set(FUNCTIONS) - {INPUT_PLACEHOLDER, "True", "False", "None"})
    if unknown:
        if {"true", "false"} & set(unknown):
            message = _("%(where)s用到未知变量「%(names)s」；可用变量：%(allowed)s；布尔值请写 True 或 False。",
                        where=where, names=join_items(unknown), allowed=join_items(allowed))
        else:
            message = _("%(where)s用到未知变量「%(names)s」；可用变量：%(allowed)s。", where=where, names=join_items(unknown), allowed=join_items(allowed))
        return [Problem(element_id, message)]
    return []


def check_table(process_type, xml):
    """Check a table of a process type before it is stored; returns the Problems found, empty when it may be saved.

    Checks the structure, the decision id, the hit policy, the outputs, and compiles every
    input expression, input entry and output entry in the sandbox, naming the rule or
    column id of each finding. SpiffWorkflow's own parser then reads the table, so
    what it rejects (schema errors included) is reported too.
    """
    try:
        table = read_table(xml)
    except DecisionError as error:
        return error.problems
    expected = decision_id_for(process_type)
    problems = []
    if table.decision_id != expected:
        problems.append(Problem(table.decision_id or "decision", _("decision 的 id 须为「%(expected)s」，当前为「%(found)s」。", expected=expected, found=table.decision_id)))
    if table.hit_policy not in HIT_POLICIES:
        problems.append(Problem(
            table.decision_id, _("命中策略「%(policy)s」不受支持；请用 COLLECT（汇总所有命中规则）或 UNIQUE（取第一条命中规则）。", policy=table.hit_policy)
        ))
    output_names = [column.expression for column in table.outputs]
    if tuple(output_names) != OUTPUT_NAMES:
        problems.append(Problem(
            table.decision_id, _("输出列须依次为 escalate（是否报集团）和 escalation_reason（原因），当前为「%(found)s」。", found=join_items(output_names) or _("无"))
        ))
    allowed = variables_for(process_type)
    for column in table.inputs:
        if not column.expression:
            problems.append(Problem(column.element_id, _("输入列「%(column)s」缺少输入表达式。", column=column.label)))
            continue
        problems.extend(_check_expression(column.element_id, _("输入列「%(column)s」的表达式", column=column.label), column.expression, allowed))
    for row in table.rows:
        problems.extend(_check_row(table, row, allowed))
    if not problems:
        problems.extend(_trial_problems(process_type, table))
    if not problems:
        problems.extend(_spiff_problems(xml, table.decision_id))
    return problems


def _trial_facts(process_type):
    """Yield one set of sample task data per user type for the trial evaluation."""
    for user_type in USER_TYPES:
        facts = {}
        for name in variables_for(process_type):
            facts[name] = TRIAL_TEXTS.get(name, TRIAL_INTEGERS.get(name, TRIAL_NUMBER))
        facts["user_type"] = user_type
        yield facts


def _trial_problems(process_type, table):
    """Evaluate every cell of a checked table with sample data; returns a Problem per cell that fails.

    A cell can compile and still fail on every evaluation (`> 1/0`, a number compared
    with text), and then every new request of the process type would fail at its
    escalation step. Output entries are evaluated whether or not their rule matches.
    """
    problems, failed = [], set()

    def trial(row, kind, column, source, facts):
        if (row.element_id, kind, column.element_id) in failed:
            return
        try:
            evaluate_expression(source, facts)
        except SandboxError as error:
            failed.add((row.element_id, kind, column.element_id))
            if kind == "input":
                where = _("第 %(rule)s 条规则「%(column)s」列的条件", rule=row.number, column=column.label)
            else:
                where = _("第 %(rule)s 条规则「%(column)s」列的输出", rule=row.number, column=column.label)
            problems.append(Problem(row.element_id, _(
                "%(where)s用示例数据（用户类型 %(user_type)s，数值 %(number)s）试算时出错：%(error)s 请检查除数不为 0，比较的两边同为数字或同为文字。",
                where=where, user_type=facts["user_type"], number=TRIAL_NUMBER, error=sandbox_error_text(error),
            )))

    for facts in _trial_facts(process_type):
        inputs = {}
        for column in table.inputs:
            try:
                inputs[column.element_id] = evaluate_expression(column.expression, facts)
            except SandboxError as error:
                problems.append(Problem(column.element_id, _(
                    "输入列「%(column)s」的表达式用示例数据试算时出错：%(error)s", column=column.label, error=sandbox_error_text(error),
                )))
                return problems
        for row in table.rows:
            for column, cell in zip(table.inputs, row.inputs):
                if cell:
                    trial(row, "input", column, entry_expression(column.expression, cell), {**facts, INPUT_PLACEHOLDER: inputs[column.element_id]})
            for column, cell in zip(table.outputs, row.outputs):
                trial(row, "output", column, cell, facts)
    return problems


def _check_row(table, row, allowed):
    if len(row.inputs) != len(table.inputs) or len(row.outputs) != len(table.outputs):
        return [Problem(row.element_id, _(
            "第 %(rule)s 条规则的单元格数与列数不符（输入 %(inputs)s/%(input_columns)s，输出 %(outputs)s/%(output_columns)s）。",
            rule=row.number, inputs=len(row.inputs), input_columns=len(table.inputs), outputs=len(row.outputs), output_columns=len(table.outputs),
        ))]
    problems = []
    for column, cell in zip(table.inputs, row.inputs):
        if cell and column.expression:
            if not _QUESTION_MARK.search(cell) and not _is_expression(cell) and cell[:1].isalpha():
                problems.append(Problem(
                    row.element_id, _(
                        "第 %(rule)s 条规则「%(column)s」列的条件「%(cell)s」以关键字开头，请在前面加上 ?，如「? %(example)s」。",
                        rule=row.number, column=column.label, cell=cell[:80], example=cell[:60],
                    )
                ))
                continue
            source = entry_expression(column.expression, cell)
            problems.extend(_check_expression(row.element_id, _("第 %(rule)s 条规则「%(column)s」列的条件", rule=row.number, column=column.label), source, allowed))
    for column, cell in zip(table.outputs, row.outputs):
        if not cell:
            problems.append(Problem(row.element_id, _("第 %(rule)s 条规则「%(column)s」列为空；请填写表达式，如 True 或 \"原因\"。", rule=row.number, column=column.label)))
            continue
        problems.extend(_check_expression(row.element_id, _("第 %(rule)s 条规则「%(column)s」列的输出", rule=row.number, column=column.label), cell, allowed))
    return problems


def _spiff_problems(xml, decision_id):
    """Run SpiffWorkflow's DMN parser (with the DMN 1.3 schema) over the table."""
    # Imported here because app.processes.engine imports this module.
    from SpiffWorkflow.bpmn.parser.ValidationException import ValidationException
    from SpiffWorkflow.spiff.parser import VALIDATOR, SpiffBpmnParser

    parser = SpiffBpmnParser(validator=VALIDATOR)
    try:
        parser.add_dmn_str(xml.encode("utf-8"), filename=f"{decision_id}.dmn")
        parser.dmn_parsers[decision_id].parse()
    except ValidationException as error:
        element = getattr(error, "id", None) or decision_id
        line = getattr(error, "line_number", None)
        detail = error.args[0] if error.args else error
        if line:
            return [Problem(element, _("DMN 结构不符合规范（第 %(line)s 行）：%(error)s", line=line, error=detail))]
        return [Problem(element, _("DMN 结构不符合规范：%(error)s", error=detail))]
    except (KeyError, IndexError, TypeError, AttributeError) as error:
        detail = f"{type(error).__name__}: {error}"
        return [Problem(decision_id, _("DMN 解析失败：%(error)s。请检查每个元素都有 id。", error=detail))]
    return []


# -- settings rules


@dataclass(frozen=True)
class SettingsRule:
    """A rule that /processes/settings switches on and off or sets a threshold of.

    `input_id` is the id of the input column whose cell the setting fills. `cell` and
    `reason` build that cell and the reason expression from the setting's value.
    """

    column: str
    rule_id: str
    input_id: str
    cell: object
    reason: object


def _number(value):
    return f"{Decimal(value).normalize():f}"


def _money(value):
    return f"{Decimal(value):.2f}"


def _category_cell(codes):
    """`not in (...)` over the codes inside policy; a one-code tuple keeps its comma."""
    quoted = [f'"{code}"' for code in codes]
    return f"? not in ({quoted[0]},)" if len(quoted) == 1 else f"? not in ({', '.join(quoted)})"


def _flag_rule(column, rule_id, user_type, reason_text):
    return SettingsRule(column, rule_id, USER_TYPE_INPUT, lambda value: f'"{user_type}"', lambda value: f'"{reason_text}"')


def _settings_rules(process_type):
    label = PROCESS_TYPES[process_type]
    rules = {
        "escalate_non_residential": _flag_rule(
            "escalate_non_residential", "rule_non_residential", "non_residential", f"非居民用户{label}需集团审批"
        ),
        "escalate_low_income": _flag_rule("escalate_low_income", "rule_low_income", "low_income", f"低保户{label}需集团审批"),
    }
    area = {"suspension": ("building_area", "建筑面积"), "connection": ("surveyed_area", "入网面积")}.get(process_type)
    if area:
        variable, subject = area
        rules["area_threshold"] = SettingsRule(
            "area_threshold", "rule_area", "input_area", lambda value: f"> {_number(value)}",
            lambda value: f'"{subject} " + text({variable}) + " ㎡ 超过 {_number(value)} ㎡，需集团审批"',
        )
    amount = {
        "waiver": ("waiver_amount", "减免金额"), "forced_shutoff": ("arrears_now", "欠费"),
        "back_charge": ("back_charge_amount", "追补金额"),
    }.get(process_type)
    if amount:
        variable, subject = amount
        rules["amount_threshold"] = SettingsRule(
            "amount_threshold", "rule_amount", "input_amount", lambda value: f"> {_number(value)}",
            lambda value: f'"{subject} " + round_text({variable}, 2) + " 元超过 {_money(value)} 元，需集团审批"',
        )
    if process_type == "waiver":
        rules["percent_threshold"] = SettingsRule(
            "percent_threshold", "rule_percent", "input_percent", lambda value: f"> {_number(value)}",
            lambda value: (
                '"减免金额占应收 " + round_text(percent(waiver_amount, receivable_at_start), 2)'
                f' + "%，超过 {_number(value)}%，需集团审批"'
            ),
        )
        rules["policy_categories"] = SettingsRule(
            "policy_categories", "rule_policy_category", "input_category",
            _category_cell,
            lambda codes: '"减免类别「" + waiver_category_label + "」不在本公司减免政策内，需集团审批"',
        )
    if process_type == "area_adjustment":
        rules["area_decrease_threshold"] = SettingsRule(
            "area_decrease_threshold", "rule_area_decrease", "input_area_decrease", lambda value: f"> {_number(value)}",
            lambda value: f'"面积减少 " + text(old_area - new_area) + " ㎡，超过 {_number(value)} ㎡，需集团审批"',
        )
        rules["area_decrease_percent"] = SettingsRule(
            "area_decrease_percent", "rule_area_decrease_percent", "input_area_decrease_percent",
            lambda value: f"> {_number(value)}",
            lambda value: (
                '"面积减少 " + round_text(percent(old_area - new_area, old_area), 2)'
                f' + "%，超过 {_number(value)}%，需集团审批"'
            ),
        )
    return {column: rules[column] for column in RULE_FIELDS[process_type]}


# Process type -> rule column of EscalationRule -> its settings rule, in the order the reasons are listed.
SETTINGS_RULES = {process_type: _settings_rules(process_type) for process_type in PROCESS_TYPES}


def _setting_value(column, value):
    """Return the value a settings rule is built from, or None when the setting switches the rule off."""
    if column == "policy_categories":
        return tuple(code for code in (value or "").split(",") if code)
    if isinstance(value, bool):
        return True if value else None
    return value


def apply_settings(xml, process_type, rule):
    """Rebuild the settings rules of a table from an EscalationRule row; other rules stay as they are.

    The settings rules go where the first of them was (or before every other rule), in
    SETTINGS_RULES order, so the reasons keep their order. A flag that is off or an empty
    threshold drops its rule.
    """
    root = parse_xml(xml)
    table = root.find("dmn:decision/dmn:decisionTable", NS)
    input_ids = [element.get("id") for element in table.findall("dmn:input", NS)]
    output_ids = [element.get("id") for element in table.findall("dmn:output", NS)]
    known = {settings_rule.rule_id for settings_rule in SETTINGS_RULES[process_type].values()}
    rules = table.findall("dmn:rule", NS)
    first_known = next((index for index, element in enumerate(rules) if element.get("id") in known), 0)
    before = [element for element in rules[:first_known] if element.get("id") not in known]
    after = [element for element in rules[first_known:] if element.get("id") not in known]
    for element in rules:
        table.remove(element)
    for element in before:
        table.append(element)
    for column, settings_rule in SETTINGS_RULES[process_type].items():
        value = _setting_value(column, getattr(rule, column))
        if value is not None:
            _add_rule(table, settings_rule, value, input_ids, output_ids)
    for element in after:
        table.append(element)
    etree.indent(root, space="  ")
    return XML_DECLARATION + etree.tostring(root, encoding="unicode") + "\n"


def _add_rule(table, settings_rule, value, input_ids, output_ids):
    if settings_rule.input_id not in input_ids:
        raise DecisionError([Problem(
            settings_rule.rule_id, _("规则表缺少 id 为「%(column)s」的输入列，无法按集团审批设置生成此规则；请从模板恢复该列。", column=settings_rule.input_id)
        )])
    rule = etree.SubElement(table, f"{{{DMN_NAMESPACE}}}rule", id=settings_rule.rule_id)
    for input_id in input_ids:
        entry = etree.SubElement(rule, f"{{{DMN_NAMESPACE}}}inputEntry", id=f"{settings_rule.rule_id}_{input_id}")
        cell = settings_rule.cell(value) if input_id == settings_rule.input_id else "-"
        etree.SubElement(entry, f"{{{DMN_NAMESPACE}}}text").text = cell
    outputs = ("True", settings_rule.reason(value))
    for output_id, text in zip(output_ids, outputs):
        entry = etree.SubElement(rule, f"{{{DMN_NAMESPACE}}}outputEntry", id=f"{settings_rule.rule_id}_{output_id}")
        etree.SubElement(entry, f"{{{DMN_NAMESPACE}}}text").text = text


def read_settings(xml, process_type):
    """Read the settings a table's settings rules express: {EscalationRule column: value}.

    A column is left out when its rule was edited into a form the settings page cannot
    show (for example `>= 200`), so the stored setting keeps its last value.
    NOTE: the settings page then shows that last value, and saving its form rewrites the
    edited rule as `> value`.
    """
    table = read_table(xml)
    by_id = {row.element_id: row for row in table.rows}
    input_index = {column.element_id: index for index, column in enumerate(table.inputs)}
    values = {}
    for column, settings_rule in SETTINGS_RULES[process_type].items():
        row = by_id.get(settings_rule.rule_id)
        if row is None:
            values[column] = {"policy_categories": "", USER_TYPE_INPUT: False}.get(
                "policy_categories" if column == "policy_categories" else settings_rule.input_id
            )
            continue
        index = input_index.get(settings_rule.input_id)
        cell = row.inputs[index] if index is not None and index < len(row.inputs) else None
        if settings_rule.input_id == USER_TYPE_INPUT:
            values[column] = True
        elif column == "policy_categories":
            codes = _category_codes(cell)
            if codes is not None:
                values[column] = ",".join(codes)
        else:
            number = _threshold_of(cell)
            if number is not None:
                values[column] = number
    return values


def _threshold_of(cell):
    match = _GREATER_THAN.match(cell or "")
    if match is None:
        return None
    try:
        return Decimal(match.group(1))
    except InvalidOperation:
        return None


def _category_codes(cell):
    text = (cell or "").strip()
    if not text.startswith("? not in"):
        return None
    try:
        codes = ast.literal_eval(text[len("? not in"):].strip())
    except (ValueError, SyntaxError):
        return None
    if isinstance(codes, str):
        codes = (codes,)
    if not isinstance(codes, tuple) or not all(isinstance(code, str) for code in codes):
        return None
    return codes


def settings_copy(process_type, rule):
    """Build a company's first table: the group template with its settings rules built from `rule`."""
    return apply_settings(template_xml(process_type), process_type, rule)


def referenced_decisions(bpmn_xml):
    """Return the decision ids the business rule tasks of a diagram call (spiffworkflow:calledDecisionId)."""
    try:
        root = etree.fromstring(bpmn_xml.encode("utf-8"), parser=etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError:
        return []
    names = root.xpath(
        "//*[local-name()='businessRuleTask']//*[local-name()='calledDecisionId']/text()"
    )
    return sorted({name.strip() for name in names if name.strip()})
