"""Step and sequence-flow names of the default diagrams in bpmn/, and the step names of history events that code records.

These names are catalogue msgids in the "process step" and "process flow" contexts, which
keep them apart from the same words used elsewhere. The step 关栓 is "Close the valve" and
the valve state 关栓 is "Closed". The flow 同意 is "Approved" and the form's choice 同意 is
"Approve". Pages and the read-only diagram show them in the reader's language. A company
that renames a step or flow in its own diagram gets its name shown as written, because it is
data. tests/processes/test_english_memos_and_steps.py checks both sets against bpmn/.
"""

from flask_babel import pgettext

from app.i18n import NC_

STEP_CONTEXT = "process step"
FLOW_CONTEXT = "process flow"

# Names of the flow nodes (tasks, events, gateways) of the diagrams in bpmn/.
DIAGRAM_STEP_NAMES = frozenset({
    NC_("process step", "分公司审批超时催办"), NC_("process step", "财务复核超时催办"), NC_("process step", "超时转集团审批"),
    NC_("process step", "超过期限未审结"), NC_("process step", "集团审批超时催办"), NC_("process step", "判断是否需集团审批"),
    NC_("process step", "供暖季开始前未审结，自动取消"), NC_("process step", "入网完成"), NC_("process step", "减免完成"),
    NC_("process step", "分公司驳回"), NC_("process step", "复热完成"), NC_("process step", "已催办"),
    NC_("process step", "已结清，取消强停"), NC_("process step", "强停完成"), NC_("process step", "报停完成"),
    NC_("process step", "调整完成"), NC_("process step", "财务驳回"), NC_("process step", "追补完成"),
    NC_("process step", "集团驳回"), NC_("process step", "分公司意见"), NC_("process step", "审批通过"),
    NC_("process step", "待分公司审批"), NC_("process step", "是否已结清"), NC_("process step", "财务意见"),
    NC_("process step", "集团意见"), NC_("process step", "催缴等待期"), NC_("process step", "再次核对欠费"),
    NC_("process step", "减免入账"), NC_("process step", "变更面积并重算应收"), NC_("process step", "恢复正常并补计热费"),
    NC_("process step", "按报停比例重算应收"), NC_("process step", "核对欠费"), NC_("process step", "登记入网并计收热费"),
    NC_("process step", "登记强停"), NC_("process step", "登记阀门已关"), NC_("process step", "追补热费并恢复供热"),
    NC_("process step", "提出强停"), NC_("process step", "稽查发现违规"), NC_("process step", "营业员受理入网"),
    NC_("process step", "营业员受理减免"), NC_("process step", "营业员受理复热"), NC_("process step", "营业员受理报停"),
    NC_("process step", "营业员受理调整面积"), NC_("process step", "关栓"), NC_("process step", "关栓施封"),
    NC_("process step", "分公司审批"), NC_("process step", "开栓"), NC_("process step", "接网开栓"), NC_("process step", "现场勘察"),
    NC_("process step", "补充材料"), NC_("process step", "财务复核"), NC_("process step", "送达催缴通知"),
    NC_("process step", "集团审批"),
})

# Labels of the sequence flows of the diagrams in bpmn/: the decision or condition that leads along each flow.
DIAGRAM_FLOW_NAMES = frozenset({
    NC_("process flow", "同意"), NC_("process flow", "驳回"), NC_("process flow", "同意，需集团审批"),
    NC_("process flow", "超时未办"), NC_("process flow", "退回补充材料"), NC_("process flow", "退回分公司重审"),
    NC_("process flow", "仍欠费"), NC_("process flow", "已结清"),
})

# Step names that service operators write into the history beside the diagram's own names
# (app/processes/operators.py).
RECORDED_STEP_NAMES = frozenset({
    NC_("process step", "变更建筑面积"), NC_("process step", "登记复热"), NC_("process step", "恢复正常供热"),
    NC_("process step", "登记入网"), NC_("process step", "按新面积重算应收"), NC_("process step", "按天补计复热热费"),
    NC_("process step", "稽查追补热费"), NC_("process step", "按天补计其余热费"), NC_("process step", "按天计收入网当季热费"),
})


def step_name_value(name):
    """Return a step name as a Message value: one of ours is translated when shown, a company's own stays as written."""
    if name in DIAGRAM_STEP_NAMES or name in RECORDED_STEP_NAMES:
        return NC_(STEP_CONTEXT, name)
    return name


def shown_step_name(name):
    """Return a step name in the reader's language when it is one of ours, else as written."""
    if name in DIAGRAM_STEP_NAMES or name in RECORDED_STEP_NAMES:
        return pgettext(STEP_CONTEXT, name)
    return name


def shown_flow_name(name):
    """Return a sequence-flow label in the reader's language when it is one of ours, else as written."""
    if name in DIAGRAM_FLOW_NAMES:
        return pgettext(FLOW_CONTEXT, name)
    return name
