"""bpmn-check on the OMG interchange models and on hostile input: a verdict, never a crash."""

from pathlib import Path

import pytest

from app.processes.bpmn_check import check_bpmn
from tests.conftest import FIXTURES

MIWG = sorted((FIXTURES / "bpmn-miwg").glob("*.bpmn"))
BPMN_DIR = Path(__file__).resolve().parents[2] / "bpmn"


def test_miwg_set_is_complete():
    assert len(MIWG) == 21


@pytest.mark.parametrize("path", MIWG, ids=lambda p: p.name)
def test_miwg_model_gets_a_verdict(app_ctx, path):
    report = check_bpmn(path.read_bytes())

    assert report.file_error == ""
    assert report.executable_processes or report.documentation_processes
    if not report.accepted:
        assert all(f.element_id and f.tag and f.reason for f in report.findings)


@pytest.mark.parametrize(
    "name, element_id, fragment",
    [
        ("C.9.1.bpmn", "BoundaryEvent_2", "须加引号"),
        ("C.8.1.bpmn", "_1a818a94-ba6f-413b-a7e8-6f8fd2a11e32", "calledDecisionId"),
        ("C.9.2.bpmn", "CallActivity_RequestDocument", "实例数"),
        ("C.3.0.bpmn", "_b99800c3-c340-460c-a43e-098014a365d0", "既没有条件也不是默认连线"),
        ("C.5.0.bpmn", "_776bd6ca-5f18-432f-a748-f1930bfdf16e", "数据存储"),
    ],
)
def test_miwg_findings_name_the_element(app_ctx, name, element_id, fragment):
    report = check_bpmn((FIXTURES / "bpmn-miwg" / name).read_bytes())

    matching = [f for f in report.findings if f.element_id == element_id]
    assert matching, [f.line() for f in report.findings]
    assert fragment in matching[0].reason


def test_documentation_only_model_accepted(app_ctx):
    report = check_bpmn((FIXTURES / "bpmn-miwg" / "A.1.0.bpmn").read_bytes())

    assert report.accepted
    assert report.executable_processes == []


def test_own_templates_accepted(app_ctx):
    for path in sorted(BPMN_DIR.glob("*.bpmn")):
        report = check_bpmn(path.read_bytes())
        assert report.accepted, (path.name, [f.line() for f in report.findings])


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not xml at all",
        b"<?xml version='1.0'?><!DOCTYPE d [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><d>&e;</d>",
        b"<definitions xmlns='http://example.com/not-bpmn'/>",
        b"<?xml version='1.0'?><!DOCTYPE l [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;'>"
        b"<!ENTITY c '&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;'>]><l>&c;</l>",
    ],
)
def test_hostile_input_rejected_cleanly(app_ctx, content):
    report = check_bpmn(content)

    assert not report.accepted
    assert report.file_error


def test_cli_exit_codes(app_ctx):
    runner = app_ctx.test_cli_runner()

    accepted = runner.invoke(args=["heat", "bpmn-check", str(FIXTURES / "bpmn-miwg" / "A.1.0.bpmn")])
    rejected = runner.invoke(args=["heat", "bpmn-check", str(FIXTURES / "bpmn-miwg" / "C.9.1.bpmn")])

    assert accepted.exit_code == 0
    assert "can be imported as documentation only" in accepted.output
    assert rejected.exit_code == 1
    assert "BoundaryEvent_1" in rejected.stderr
    assert "cannot be imported" in rejected.stderr
    assert "must be quoted" in rejected.stderr
    assert "Traceback" not in rejected.output + rejected.stderr


def test_cli_one_line_per_element(app_ctx):
    rejected = app_ctx.test_cli_runner().invoke(args=["heat", "bpmn-check", str(FIXTURES / "bpmn-miwg" / "C.1.0.bpmn")])

    assert rejected.exit_code == 1
    lines = rejected.stderr.splitlines()
    assert lines[0].endswith("cannot be imported, 5 elements are not supported:")
    # The service task's name has a line break in the file; the report keeps it on its element's line.
    assert len(lines) == 6
    assert any(line.startswith("  archiveInvoice <serviceTask> 「Archive Invoice」") for line in lines)
