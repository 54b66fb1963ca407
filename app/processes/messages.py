"""Texts of the findings that the model checks show to users: deploy validation, `flask heat bpmn-check` and the designer import.

Every text is a template in FINDING_TEXTS under a stable code, marked for extraction and
translated when a finding is made: in the reader's language on pages, in English for CLI
commands (app.cli). A template states what is wrong and how to fix it. The element id and type are
not part of the template, because each report prints them in its own line format.
"""

from flask_babel import gettext as _

from app.i18n import M_, N_, NC_, join_items, translate_label

FINDING_TEXTS = {
    # Whole file (bpmn_check and the engine's parser).
    "file_too_large": N_("文件超过 {limit_mb} MB；请拆分流程或删除多余的图形信息后再上传。"),
    "file_doctype": N_("文件含有 DOCTYPE 或实体声明（<!DOCTYPE …>），BPMN 文件不需要它们；请删除后重新上传。"),
    "file_not_xml": N_("文件不是格式正确的 XML：{detail}；请检查标签是否成对闭合。"),
    "file_not_bpmn": N_("根元素不是 BPMN 2.0 的 <definitions>；请上传 BPMN 2.0 格式的流程文件。"),
    "process_not_found": N_("文件中没有 id 为「{process_id}」的可执行流程（现有：{found}）；请把流程 id 改为「{process_id}」，并设为可执行。"),
    "engine_rejected": N_("流程引擎无法解析该元素：{detail}；请按提示修改该元素后重试。"),
    "engine_failed": N_("流程引擎解析失败（{detail}）；请检查该元素的属性和连线是否完整。"),
    # Elements the engine cannot run.
    "complex_gateway": N_("引擎不支持复杂网关；请改用排他、包容或并行网关。"),
    "compensation": N_("引擎不支持补偿；请把撤销步骤画成一个普通任务。"),
    "data_store": N_("系统没有登记数据存储；请通过服务任务读写数据。"),
    "choreography": N_("协同图（choreography）不能执行；请画成普通流程。"),
    "conversation": N_("会话图（conversation）不能执行；请画成普通流程。"),
    "implicit_split": N_("活动有多条流出连线，相当于隐式分支；请在活动后加一个网关。"),
    "subprocess_without_start": N_("子流程没有开始事件；请在子流程中加一个开始事件。"),
    "multi_instance_without_input": N_("多实例活动须设置实例数（loopCardinality）或输入集合；请补上其中之一。"),
    "loop_without_end": N_("循环须设置最大次数或循环条件，否则可能不会结束；请补上其中之一。"),
    "data_reference_missing": N_("{association} 引用的 {target} 不在本流程中；请改为本流程中的数据对象，或删除该关联。"),
    "flow_without_condition": N_("从网关 {gateway} 流出的连线既没有条件也不是默认连线；请填写条件，或把它设为网关的默认连线。"),
    "feel_condition": N_("不支持 FEEL 条件；请改写为 Python 表达式。"),
    "timer_empty": N_("定时器没有设置值；请填写时长（如 \"P3D\"）或日期表达式。"),
    "timer_unquoted": N_("定时器的值 {source} 须加引号，写成 \"{source}\"，因为定时器的值是表达式。"),
    "expression_rejected": N_("{what}「{source}」未通过表达式检查：{detail}；请改写为允许的表达式。"),
    # Services, decisions, lanes and forms.
    "service_without_operator": N_("服务任务没有指定系统服务（spiffworkflow:serviceTaskOperator）；请选择一个服务：{choices}。"),
    "service_unknown": N_("服务「{name}」未注册；请改用以下服务之一：{choices}。"),
    "service_missing_parameters": N_("服务「{name}」缺少参数：{names}；请在服务任务中补上。"),
    "service_unknown_parameters": N_("服务「{name}」不接受参数：{names}；请删除这些参数。"),
    "decision_unknown": N_("业务规则任务调用的决策表「{decision_id}」不存在；请把 spiffworkflow:calledDecisionId 设为以下之一：{choices}。"),
    "decision_not_escalation": N_("决策表「{decision_id}」不是报集团审批规则表；请改用以下之一：{choices}。"),
    "lane_unknown": N_("泳道「{lane}」不是流程角色；请改用以下角色之一：{choices}。"),
    "form_missing": N_("用户任务没有设置表单（属性 form）；请把它设为以下之一：{choices}。"),
    "form_unknown": N_("用户任务的表单「{form}」未知；请把属性 form 设为以下之一：{choices}。"),
    "user_task_outside_lane": N_("用户任务不在任何泳道中；请把它放进办理该任务的角色泳道。"),
}

# Names of the expression kinds that `expression_rejected` reports.
EXPRESSION_KINDS = {
    "condition": N_("条件"),
    "script": N_("脚本"),
    "prescript": N_("前置脚本"),
    "postscript": N_("后置脚本"),
    "parameter": N_("服务参数"),
    "timer": N_("定时器表达式"),
}


def finding_text(code, **values):
    """Fill the translated template of a finding code with its values."""
    return translate_label(FINDING_TEXTS[code]).format(**values)


def choices(names):
    """Join the names a fix may choose from, in the form the templates expect."""
    return join_items(names) or _("（无）")

# Sandbox errors (app.processes.sandbox.SandboxError.code) as the reader sees them. The
# English text of the error itself stays available as the detail. {source} is the quoted
# expression, {type}/{node}/{operator} are Python type and syntax node names.
SANDBOX_TEXTS = {
    "decimal_type": N_("Decimal() 只接受整数、文本或 Decimal，不接受 {type}。"),
    "decimal_value": N_("Decimal({value}) 不是数字。"),
    "len_type": N_("len() 只接受文本、列表或字典，不接受 {type}。"),
    "deadline_unbound": N_("deadline({key}) 只能在运行中的流程的定时器表达式里使用。"),
    "deadline_key": N_("deadline({key}) 不是已登记的定时器键；可用的键：{keys}。"),
    "deadline_missing": N_("无法计算定时器 {key} 的截止时间：本公司尚未建立供暖季；请先在收费标准中添加供暖季。"),
    "number_argument": N_("{function}() 只接受数字，不接受 {type}。"),
    "round_text_places": N_("round_text() 的小数位数须为 0 到 6 的整数。"),
    "not_text": N_("表达式须为文本，不能是 {type}。"),
    "too_long": N_("表达式有 {length} 个字符，超过上限 {limit}。"),
    "syntax": N_("{source} 有语法错误：{reason}。"),
    "too_deep": N_("表达式 {source} 嵌套层数过多。"),
    "too_many_parts": N_("表达式 {source} 超过 {limit} 个组成部分；请拆分。"),
    "attribute": N_("{source} 中不允许访问属性（.{attribute}）。"),
    "node_not_allowed": N_("{source} 中不允许使用 {node}；只能用变量名、常量、比较和算术运算。"),
    "underscore_name": N_("{source} 中不允许使用名称 {name}：名称不能以下划线开头。"),
    "constant": N_("{source} 中不允许使用常量 {constant}。"),
    "subscript_not_constant": N_("{source} 中的下标须为常量键或序号。"),
    "method_call": N_("{source} 中不允许调用方法（.{method}()）。"),
    "function_not_allowed": N_("{source} 中不允许调用函数 {function}；可用的函数：{allowed}。"),
    "call_arguments": N_("{source} 中的函数调用只能按位置传普通参数。"),
    "assign_target": N_("脚本的每一行须给一个普通变量名赋值：{source}。"),
    "assign_function": N_("{name} 是函数名，不能被赋值：{source}。"),
    "script_line": N_("脚本第 {line} 行是 {node}；只允许“名称 = 表达式”形式的行。"),
    "evaluation_failed": N_("计算 {source} 失败：{error}。"),
    "function_not_called": N_("函数 {function} 只能被调用，不能作为值使用：{source}。"),
    "unknown_name": N_("名称 {name} 不在任务数据中；请检查 {source} 中的拼写。"),
    "not_subscriptable": N_("{type} 类型的值不能取下标：{source}。"),
    "missing_key": N_("键 {key} 不存在：{source}。"),
    "text_too_long": N_("{source} 拼出的文本将超过 {limit} 个字符。"),
    "exponent": N_("指数须为不超过 {limit} 的整数：{source}。"),
    "magnitude": N_("{source} 中有数值超过上限 10**30。"),
    "operator_type": N_("运算符 {operator} 只能用于数字，不能用于 {type}：{source}。"),
}

# Names of the parts that fail at run time (ProcessRunError.failure["subject"]), for `run_failure_text`.
RUN_SUBJECTS = {
    "expression": NC_("run failure", "表达式"),
    "script": NC_("run failure", "脚本"),
}
# The subject of a failed service call, with the operator name as `name`.
SERVICE_SUBJECT = NC_("run failure", "服务 %(name)s")
RUN_FAILED = N_("元素 %(element)s 的%(subject)s运行失败：%(reason)s")


def engine_failure(error):
    """Return the Message of a workflow engine failure, with the library's English text as the reason."""
    return M_("流程引擎运行失败：%(error)s", error=str(error))


def sandbox_text(code, params, original):
    """Return a sandbox error in the reader's language, followed by its English text as the detail.

    `original` is the error's own text. It is returned alone when the code is unknown (an
    event stored before codes existed) or when the translation is that same text.
    """
    template = SANDBOX_TEXTS.get(code)
    if template is None:
        return original
    try:
        text = translate_label(template).format(**params)
    except (KeyError, IndexError, ValueError):
        return original
    if text == original:
        return text
    return _("%(text)s（原文：%(detail)s）", text=text, detail=original)


def sandbox_error_text(error):
    """Return a SandboxError (or any exception) as the reader sees it, see `sandbox_text`."""
    return sandbox_text(getattr(error, "code", ""), getattr(error, "params", {}), str(error))


def run_failure_text(failure, original):
    """Return a stored run failure ({"subject", "element", "code", "params"}) in the reader's language.

    `original` is the English text stored with the event, shown as the detail.
    """
    subject = RUN_SUBJECTS.get(failure.get("subject"))
    template = SANDBOX_TEXTS.get(failure.get("code"))
    if subject is None or template is None:
        return original
    try:
        reason = translate_label(template).format(**failure.get("params", {}))
    except (KeyError, IndexError, ValueError):
        return original
    text = _("元素 %(element)s 的%(subject)s运行失败：%(reason)s", element=failure.get("element", ""), subject=translate_label(subject), reason=reason)
    if text == original:
        return text
    return _("%(text)s（原文：%(detail)s）", text=text, detail=original)


def run_error_text(error):
    """Return a ProcessRunError in the reader's language: its run failure when it has one, else str()."""
    failure = getattr(error, "failure", None)
    return run_failure_text(failure, str(error)) if failure else str(error)
