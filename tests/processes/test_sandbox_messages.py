"""Sandbox errors in the reader's language: Chinese with the English original as the detail, or English alone.

Covers the texts of app.processes.messages.SANDBOX_TEXTS, the deploy findings that quote
them, and a run failure stored with an instance's error event and shown in its history.
"""

import ast
import html
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask_babel import force_locale

from app.extensions import db
from app.org.models import User
from app.processes.deployment import BPMN_DIR, deploy_model
from app.processes.engine import ModelValidationError, validate_model
from app.processes.messages import SANDBOX_TEXTS, sandbox_error_text
from app.processes.models import ProcessEvent, ProcessInstance
from app.processes.sandbox import SandboxError, evaluate_expression, execute_script, validate_expression
from tests.processes.conftest import open_task, start_request, submit_task

SANDBOX_SOURCES = [Path(__file__).resolve().parents[2] / "app" / "processes" / name for name in ("sandbox.py", "engine.py")]
SUSPENSION_XML = (BPMN_DIR / "suspension.bpmn").read_text(encoding="utf-8")

# (call, argument, data, code) for one error of each kind an expression or script can raise.
ERRORS = [
    (validate_expression, "x.y", None, "attribute"),
    (validate_expression, "x +", None, "syntax"),
    (validate_expression, "lambda: 1", None, "node_not_allowed"),
    (validate_expression, "_secret", None, "underscore_name"),
    (validate_expression, "x[y]", None, "subscript_not_constant"),
    (validate_expression, "x.strip()", None, "method_call"),
    (validate_expression, "open('f')", None, "function_not_allowed"),
    (validate_expression, "len(x=1)", None, "call_arguments"),
    (validate_expression, "max(*x)", None, "call_arguments"),
    (validate_expression, "x" * 2001, None, "too_long"),
    (validate_expression, "+".join(["1"] * 200), None, "too_many_parts"),
    (execute_script, "x = 1\nx", {}, "script_line"),
    (execute_script, "len = 1", {}, "assign_function"),
    (evaluate_expression, "missing + 1", {}, "unknown_name"),
    (evaluate_expression, "len", {}, "function_not_called"),
    (evaluate_expression, "amount['a']", {"amount": 1}, "not_subscriptable"),
    (evaluate_expression, "d['b']", {"d": {"a": 1}}, "missing_key"),
    (evaluate_expression, "'a' - 1", {}, "operator_type"),
    (evaluate_expression, "2 ** 100", {}, "exponent"),
    (evaluate_expression, "10 ** 31", {}, "magnitude"),
    (evaluate_expression, "1 // 0", {}, "evaluation_failed"),
    (evaluate_expression, "Decimal(True)", {}, "decimal_type"),
    (evaluate_expression, "Decimal('abc')", {}, "decimal_value"),
    (evaluate_expression, "len(5)", {}, "len_type"),
    (evaluate_expression, "text(True)", {}, "number_argument"),
    (evaluate_expression, "round_text(1, 7)", {}, "round_text_places"),
    (evaluate_expression, "deadline('x')", {}, "deadline_unbound"),
]


def _raise(call, argument, data):
    with pytest.raises(SandboxError) as caught:
        if data is None:
            call(argument)
        else:
            call(argument, data)
    return caught.value


def test_every_error_code_has_a_text():
    codes = set()
    for path in SANDBOX_SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "SandboxError":
                assert len(node.args) >= 2, f"SandboxError without a code at {path.name}:{node.lineno}"
                codes.add(node.args[1].value)
    assert sorted(codes - set(SANDBOX_TEXTS)) == []
    assert sorted(set(SANDBOX_TEXTS) - codes) == []


@pytest.mark.parametrize("call, argument, data, code", ERRORS, ids=[row[3] + ":" + row[1][:20] for row in ERRORS])
def test_error_text_per_language(app_ctx, call, argument, data, code):
    error = _raise(call, argument, data)
    assert error.code == code
    with app_ctx.test_request_context():
        with force_locale("zh_CN"):
            chinese = sandbox_error_text(error)
        with force_locale("en"):
            english = sandbox_error_text(error)
    assert chinese.endswith(f"（原文：{error}）")
    assert chinese != f"（原文：{error}）"
    # The English catalog entry reproduces the sandbox's own text, so English readers see it once.
    assert english == str(error)


def test_deploy_finding_quotes_error_in_chinese(app_ctx):
    xml = SUSPENSION_XML.replace("group_decision == 'approve'", "group_decision.lower() == 'approve'")
    with app_ctx.test_request_context():
        with pytest.raises(ModelValidationError) as caught:
            validate_model(xml, "suspension")
    reasons = [f.reason for f in caught.value.findings if "group_decision.lower()" in f.reason]
    assert len(reasons) == 1
    assert "中不允许调用方法（.lower()）" in reasons[0]
    assert "（原文：Method calls (.lower()) are not allowed in" in reasons[0]


@pytest.fixture
def misspelled_condition(demo, make_account):
    """Deploy TJ's suspension diagram with a misspelled variable in a company-approval condition; return an account."""
    xml = SUSPENSION_XML.replace("company_decision == 'reject'", "company_decison == 'reject'")
    assert xml != SUSPENSION_XML
    deploy_model(demo["TJ"].id, "suspension", xml)
    db.session.commit()
    return make_account("TJ", "87.35")


def test_run_failure_shown_per_language(misspelled_condition, login):
    start_request(login("tj_clerk"), misspelled_condition.id)
    instance = db.session.scalar(sa.select(ProcessInstance).where(ProcessInstance.account_id == misspelled_condition.id))
    task = open_task(instance.id, "company_approval")
    response = submit_task(login("tj_approver"), task.id, {"decision": "approve", "comment": "同意"})
    assert response.status_code == 409
    flashed = html.unescape(response.get_data(as_text=True))
    assert "的表达式运行失败：名称 'company_decison' 不在任务数据中" in flashed
    assert "原文：expression of element" in flashed

    db.session.expire_all()
    event = db.session.scalar(
        sa.select(ProcessEvent).where(ProcessEvent.instance_id == instance.id, ProcessEvent.event_type == "error")
    )
    assert event.data["run_failure"]["code"] == "unknown_name"
    assert event.data["run_failure"]["subject"] == "expression"
    assert event.comment.startswith("expression of element ")

    chinese = html.unescape(login("tj_admin").get(f"/processes/instances/{instance.id}").get_data(as_text=True))
    assert """的表达式运行失败：名称 'company_decison' 不在任务数据中；请检查 "company_decison == 'reject'" 中的拼写。""" in chinese
    assert f"（原文：{event.comment}）" in chinese

    db.session.execute(sa.update(User).where(User.username == "tj_admin").values(locale="en"))
    db.session.commit()
    english = html.unescape(login("tj_admin").get(f"/processes/instances/{instance.id}").get_data(as_text=True))
    assert event.comment in english
    assert "(original:" not in english
    assert "运行失败" not in english
