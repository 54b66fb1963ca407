"""Process models and decision tables per company, escalation rules, running instances, inbox tasks and their audit trail."""

from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.orm import query_expression

from app.extensions import db
from flask_babel import gettext

from app.i18n import NC_, N_, stored_message, translate_label
from app.money import Area, Money, Rate
from app.processes.step_names import shown_step_name
from app.tenancy import CompanyOwned

# 报停 is also a billing status and 待办 also the inbox page, so these two carry a message context.
PROCESS_TYPES = {
    "suspension": NC_("process type", "报停"),
    "waiver": N_("减免"),
    "forced_shutoff": N_("强停"),
    "area_adjustment": N_("调整面积"),
    "reheating": N_("复热"),
    "connection": N_("入网"),
    "back_charge": N_("稽查追补"),
}
MODEL_STATUSES = {"published": N_("已发布"), "retired": N_("已停用")}
INSTANCE_STATUSES = {
    "running": N_("办理中"),
    "suspended": N_("已挂起"),
    "completed": N_("已完成"),
    "rejected": N_("已驳回"),
    "cancelled": N_("已取消"),
    "terminated": N_("已终止"),
    "error": N_("出错"),
}
# Statuses of an instance that is not finished, so the account cannot start another request of its type.
ACTIVE_STATUSES = ("running", "suspended")
TASK_STATUSES = {"open": NC_("task status", "待办"), "completed": N_("已办"), "cancelled": N_("已取消")}
# Actor name stored on audit events that no user caused (timers, engine steps).
SYSTEM_ACTOR = N_("系统")
EVENT_TYPES = {
    "started": N_("发起申请"),
    "task_ready": N_("生成待办"),
    "claimed": N_("签收"),
    "released": N_("退回待办池"),
    "completed": N_("办结"),
    "escalated": N_("升级集团审批"),
    "rebilled": N_("重算应收"),
    "red_invoice": N_("红冲发票"),
    "valve_closed": N_("登记关栓"),
    "valve_opened": N_("登记开栓"),
    "status_changed": N_("变更供热状态"),
    "area_changed": N_("变更面积"),
    "cancelled": N_("自动取消"),
    "finished": N_("流程结束"),
    "error": N_("运行出错"),
    "suspended": N_("管理员挂起"),
    "resumed": N_("管理员恢复"),
    "terminated": N_("管理员终止"),
    "retried": N_("管理员重试"),
    "reminded": N_("超时催办"),
    "timer_fired": N_("定时到期"),
    "delegated": N_("转办"),
    "migrated": N_("迁移版本"),
}
DECISIONS = {"approve": N_("同意"), "reject": N_("驳回"), "send_back": N_("退回重审")}
TIMER_STATUSES = {"waiting": N_("等待中"), "fired": N_("已触发"), "cancelled": N_("已取消")}
CALENDAR_KINDS = {"holiday": N_("休息（节假日）"), "workday": N_("上班（调休）")}
# prev_hash of an instance's first audit event.
GENESIS_HASH = "0" * 64


def utcnow():
    return datetime.now(timezone.utc)


class ProcessModel(CompanyOwned, db.Model):
    """One deployed, immutable version of a company's BPMN diagram for a process type."""

    __table_args__ = (sa.UniqueConstraint("company_id", "process_type", "version"),)

    id = sa.Column(sa.Integer, primary_key=True)
    process_type = sa.Column(sa.String(32), nullable=False)
    version = sa.Column(sa.Integer, nullable=False)
    bpmn_xml = sa.Column(sa.Text, nullable=False)
    # sha256 of bpmn_xml as UTF-8, so a re-deploy of the same file is recognised.
    sha256 = sa.Column(sa.String(64), nullable=False)
    # Group template version the diagram was designed from: 0 is the bundled bpmn/<type>.bpmn,
    # NULL means unknown (deployed without the designer). HQ compares it with the newest template.
    template_version = sa.Column(sa.Integer)
    status = sa.Column(sa.String(16), nullable=False, default="published")
    created_by_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"))
    created_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)


class DecisionVersion(CompanyOwned, db.Model):
    """One stored, immutable version of a company's DMN decision table (see app.processes.dmn)."""

    __table_args__ = (sa.UniqueConstraint("company_id", "decision_id", "version"),)

    id = sa.Column(sa.Integer, primary_key=True)
    # The DMN decision id, `<process type>_escalation`; business rule tasks call it by this id.
    decision_id = sa.Column(sa.String(64), nullable=False)
    process_type = sa.Column(sa.String(32), nullable=False)
    version = sa.Column(sa.Integer, nullable=False)
    dmn_xml = sa.Column(sa.Text, nullable=False)
    # sha256 of dmn_xml as UTF-8; together with the diagram's hash it keys the parsed-spec cache.
    sha256 = sa.Column(sa.String(64), nullable=False)
    status = sa.Column(sa.String(16), nullable=False, default="published")
    created_by_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"))
    created_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)

    @property
    def type_label(self):
        return PROCESS_TYPES.get(self.process_type, self.process_type)


class EscalationRule(CompanyOwned, db.Model):
    """When a company's requests of one process type also need group approval.

    Each process type reads only the columns that concern it (see
    app.processes.escalation.RULE_FIELDS); a NULL threshold never escalates.
    """

    __table_args__ = (sa.UniqueConstraint("company_id", "process_type"),)

    id = sa.Column(sa.Integer, primary_key=True)
    process_type = sa.Column(sa.String(32), nullable=False)
    escalate_non_residential = sa.Column(sa.Boolean, nullable=False, default=True)
    # Escalate when the building area is strictly above this; NULL never escalates by area.
    area_threshold = sa.Column(Area())
    escalate_low_income = sa.Column(sa.Boolean, nullable=False, default=False)
    # Escalate when the amount (waiver amount, or the arrears of a forced shutoff) is strictly above this, in yuan.
    amount_threshold = sa.Column(Money())
    # Escalate when a waiver is strictly above this share of the season receivable, in percent (30 = 30 %).
    percent_threshold = sa.Column(Rate())
    # Escalate an area adjustment that lowers the building area by strictly more than this many m².
    area_decrease_threshold = sa.Column(Area())
    # Escalate an area adjustment that lowers the building area by strictly more than this percentage.
    area_decrease_percent = sa.Column(Rate())
    # Comma-separated waiver reason codes inside the company's policy; a waiver of any other reason escalates.
    policy_categories = sa.Column(sa.String(255), nullable=False, default="")
    updated_by_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"))
    updated_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow, onupdate=utcnow)

    @property
    def type_label(self):
        return PROCESS_TYPES.get(self.process_type, self.process_type)


class ProcessInstance(CompanyOwned, db.Model):
    """One business request running on a pinned model version, with its serialized workflow state."""

    __table_args__ = (
        sa.Index("ix_process_instance_company_account", "company_id", "account_id", "status"),
        # The HQ audit explorer lists instances of all companies, newest first.
        sa.Index("ix_process_instance_created", "created_at", "id"),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    model_id = sa.Column(sa.Integer, sa.ForeignKey("process_model.id"), nullable=False)
    process_type = sa.Column(sa.String(32), nullable=False)
    account_id = sa.Column(sa.Integer, sa.ForeignKey("account.id"), nullable=False)
    status = sa.Column(sa.String(16), nullable=False, default="running")
    # JSON from BpmnWorkflowSerializer without the diagram, which it references by
    # `spec_digest` in process_spec; states saved before that change still embed it. Empty
    # only between the insert and the first save.
    state = sa.Column(sa.Text, nullable=False, default="")
    started_by_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"), nullable=False)
    # Decision id -> version number of each decision table the instance was started with. The
    # tables themselves are part of the serialized spec the state references, so later
    # versions never apply.
    decision_versions = sa.Column(sa.JSON, nullable=False, default=dict)
    # Head of the audit chain: seq and hash of the newest event. Appending reads them from the
    # locked instance row instead of querying the last event, and verifying compares the
    # chain's end with them, so deleting the newest events is detected too.
    audit_seq = sa.Column(sa.Integer, nullable=False, default=0)
    audit_hash = sa.Column(sa.String(64), nullable=False, default=GENESIS_HASH)
    created_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)
    updated_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow, onupdate=utcnow)

    model = db.relationship(ProcessModel)
    # The instance's waiting timers. Read only when a query loads them with joinedload, as the
    # step's row lock does; a lazy access raises instead of sending a query.
    waiting_timers = db.relationship(
        "ProcessTimer", primaryjoin="and_(ProcessTimer.instance_id == ProcessInstance.id, ProcessTimer.status == 'waiting')",
        viewonly=True, lazy="raise",
    )
    # The company's timing_stamp, tariff_stamp and rights_stamp, loaded only by a query that
    # requests them with with_expression.
    timing_stamp = query_expression()
    tariff_stamp = query_expression()
    rights_stamp = query_expression()

    @property
    def status_label(self):
        return INSTANCE_STATUSES.get(self.status, self.status)

    @property
    def type_label(self):
        return PROCESS_TYPES.get(self.process_type, self.process_type)


class ProcessSpec(CompanyOwned, db.Model):
    """A serialized workflow spec (diagram with its decision tables), stored once and referenced by instance states."""

    __table_args__ = (sa.UniqueConstraint("company_id", "digest"),)

    id = sa.Column(sa.Integer, primary_key=True)
    # sha256 of `document`, the key a state's `spec_digest` names.
    digest = sa.Column(sa.String(64), nullable=False)
    # JSON: {"spec": ..., "subprocess_specs": ...} as BpmnWorkflowSerializer writes them.
    document = sa.Column(sa.Text, nullable=False)
    created_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)


class HumanTask(CompanyOwned, db.Model):
    """An inbox entry for one READY user task of an instance."""

    __table_args__ = (
        sa.UniqueConstraint("company_id", "instance_id", "spiff_task_id"),
        # The inbox pages by keyset on these, within one company, status and lane.
        sa.Index("ix_human_task_inbox_created", "company_id", "status", "lane_role", "created_at", "id"),
        sa.Index("ix_human_task_inbox_due", "company_id", "status", "lane_role", "due_at", "id"),
        # The HQ dashboard finds the tasks still open at a date: not completed, or completed after it.
        sa.Index("ix_human_task_completed", "completed_at"),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    instance_id = sa.Column(sa.Integer, sa.ForeignKey("process_instance.id"), nullable=False)
    # The engine's task UUID as text.
    spiff_task_id = sa.Column(sa.String(36), nullable=False)
    task_spec_name = sa.Column(sa.String(64), nullable=False)
    title = sa.Column(sa.String(100), nullable=False)
    # The BPMN lane name, which is a role code (clerk, company_approver, finance, group_approver, field_staff).
    lane_role = sa.Column(sa.String(32), nullable=False)
    # Which form the task takes: a key of app.processes.forms.TASK_FORMS (the user task's `form` property).
    form = sa.Column(sa.String(32), nullable=False)
    status = sa.Column(sa.String(16), nullable=False, default="open")
    claimed_by_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"))
    claimed_by_name = sa.Column(sa.String(64), nullable=False, default="")
    completed_by_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"))
    decision = sa.Column(sa.String(16))
    comment = sa.Column(sa.Text, nullable=False, default="")
    created_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)
    completed_at = sa.Column(sa.DateTime(timezone=True))
    # When the task should be done: the first interrupting timer on it, else the company's task_due setting.
    due_at = sa.Column(sa.DateTime(timezone=True))
    # Set by a reminder timer; the inbox marks the task as reminded.
    reminded_at = sa.Column(sa.DateTime(timezone=True))
    # The user the task was delegated to; only that user may claim it while it is set.
    delegated_to_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"))
    delegated_to_name = sa.Column(sa.String(64), nullable=False, default="")
    # Denormalised from the instance so that the inbox filters and pages on one table.
    process_type = sa.Column(sa.String(32), nullable=False, default="")
    account_id = sa.Column(sa.Integer, sa.ForeignKey("account.id"))

    instance = db.relationship(ProcessInstance)

    @property
    def status_label(self):
        return TASK_STATUSES.get(self.status, self.status)

    @property
    def decision_label(self):
        """The decision label as a msgid, or "" for a task whose form takes no decision."""
        return DECISIONS.get(self.decision, self.decision or "")


class ProcessEvent(CompanyOwned, db.Model):
    """One audit entry of an instance, chained to the previous entry by sha256.

    `hash` = sha256(prev_hash + canonical JSON of this entry); see app.processes.audit.
    The actor's name is stored with the entry because the tenant scope hides users of
    other companies (a TJ clerk cannot load the HQ approver's user row).
    """

    __table_args__ = (sa.UniqueConstraint("company_id", "instance_id", "seq"),)

    id = sa.Column(sa.Integer, primary_key=True)
    instance_id = sa.Column(sa.Integer, sa.ForeignKey("process_instance.id"), nullable=False)
    # 1, 2, 3 ... within the instance.
    seq = sa.Column(sa.Integer, nullable=False)
    event_type = sa.Column(sa.String(16), nullable=False)
    user_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"))
    actor_name = sa.Column(sa.String(64), nullable=False, default="")
    at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)
    task_name = sa.Column(sa.String(100), nullable=False, default="")
    decision = sa.Column(sa.String(16))
    comment = sa.Column(sa.Text, nullable=False, default="")
    data = sa.Column(sa.JSON, nullable=False, default=dict)
    prev_hash = sa.Column(sa.String(64), nullable=False)
    hash = sa.Column(sa.String(64), nullable=False)

    @property
    def type_label(self):
        return EVENT_TYPES.get(self.event_type, self.event_type)

    @property
    def decision_label(self):
        return DECISIONS.get(self.decision, self.decision or "")

    @property
    def shown_actor_name(self):
        """The actor's name as stored, except that the system actor is shown in the reader's language."""
        if self.user_id is None and self.actor_name == SYSTEM_ACTOR:
            return translate_label(SYSTEM_ACTOR)
        return self.actor_name

    @property
    def shown_comment(self):
        """The comment in the reader's language when the event stored its Message (errors, fired timers), else as stored."""
        return stored_message((self.data or {}).get("message"), self.comment)

    @property
    def shown_task_name(self):
        """The step name in the reader's language when the platform wrote it, else as stored.

        The platform writes the start entry ("报停申请"), the outcome of a finished instance,
        the versions of a migration, the admin actions and the names of fired timers and of
        the default diagrams' steps. A step name from a company's own diagram is data.
        """
        data = self.data or {}
        if self.event_type == "started":
            return _shown_start_name(self.task_name)
        if self.event_type == "finished" and data.get("status") in INSTANCE_STATUSES:
            return translate_label(INSTANCE_STATUSES[data["status"]])
        if self.event_type == "migrated" and "from_version" in data and "to_version" in data:
            return gettext("版本 %(source)s → %(target)s", source=data["from_version"], target=data["to_version"])
        if self.event_type in ADMIN_EVENT_TYPES:
            # app/processes/admin.py writes the action's N_ label, e.g. 挂起流程.
            return translate_label(self.task_name)
        return stored_message(data.get("task_name"), shown_step_name(self.task_name))


# Events of the admin actions in app/processes/admin.py, whose task_name is the action's label.
ADMIN_EVENT_TYPES = ("suspended", "resumed", "terminated", "retried")
# The start entry's task_name is the process label followed by 申请 (app/processes/services.py).
START_SUFFIX = "申请"


def _shown_start_name(task_name):
    for label in PROCESS_TYPES.values():
        if task_name == f"{label}{START_SUFFIX}":
            return gettext("%(process)s申请", process=translate_label(label))
    return task_name


class ProcessTimer(CompanyOwned, db.Model):
    """One timer event of an instance that waits for its due time.

    A row is written when the engine arms a timer (a boundary or intermediate timer event
    becomes WAITING) and is marked fired or cancelled under the instance row lock, so a
    timer that came due while no worker ran fires on the next scan, and only once.
    """

    __table_args__ = (
        sa.UniqueConstraint("company_id", "instance_id", "spiff_task_id"),
        sa.Index("ix_process_timer_status_due", "status", "due_at"),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    instance_id = sa.Column(sa.Integer, sa.ForeignKey("process_instance.id"), nullable=False)
    # The engine's UUID of the waiting timer event task.
    spiff_task_id = sa.Column(sa.String(36), nullable=False)
    # BPMN id of the timer event, e.g. escalate_company_approval.
    element_id = sa.Column(sa.String(64), nullable=False)
    # What firing means: a key of app.processes.timers.TIMER_KINDS.
    kind = sa.Column(sa.String(16), nullable=False)
    # BPMN id of the user task the boundary event is attached to; empty for intermediate events.
    attached_to = sa.Column(sa.String(64), nullable=False, default="")
    due_at = sa.Column(sa.DateTime(timezone=True), nullable=False)
    status = sa.Column(sa.String(16), nullable=False, default="waiting")
    fired_at = sa.Column(sa.DateTime(timezone=True))
    created_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)

    @property
    def status_label(self):
        return TIMER_STATUSES.get(self.status, self.status)


class TimerSetting(CompanyOwned, db.Model):
    """A company's duration for one timer key (see app.processes.timers.TIMER_KEYS)."""

    __table_args__ = (sa.UniqueConstraint("company_id", "timer_key"),)

    id = sa.Column(sa.Integer, primary_key=True)
    timer_key = sa.Column(sa.String(32), nullable=False)
    # How many units; for season_start_before it is days before the season's first day.
    amount = sa.Column(sa.Integer, nullable=False)
    # working_days, days or hours.
    unit = sa.Column(sa.String(16), nullable=False)
    updated_by_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"))
    updated_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow, onupdate=utcnow)


class ProcessOption(CompanyOwned, db.Model):
    """A company's choice for one calculation option of its processes (see app.processes.options.PROCESS_OPTIONS)."""

    __table_args__ = (sa.UniqueConstraint("company_id", "option_key"),)

    id = sa.Column(sa.Integer, primary_key=True)
    option_key = sa.Column(sa.String(32), nullable=False)
    value = sa.Column(sa.String(32), nullable=False)
    updated_by_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"))
    updated_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow, onupdate=utcnow)


class CalendarDay(CompanyOwned, db.Model):
    """A day of a company's working calendar that differs from the Monday-to-Friday week.

    `kind` is holiday (a public holiday, also when it falls on a weekend) or workday (a
    weekend day worked in exchange for a holiday, 调休). Days without a row follow the
    week. See app.processes.calendar.
    """

    __table_args__ = (sa.UniqueConstraint("company_id", "day"),)

    id = sa.Column(sa.Integer, primary_key=True)
    day = sa.Column(sa.Date, nullable=False)
    kind = sa.Column(sa.String(16), nullable=False)
    name = sa.Column(sa.String(32), nullable=False, default="")
    updated_by_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"))
    updated_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow, onupdate=utcnow)

    @property
    def kind_label(self):
        return CALENDAR_KINDS.get(self.kind, self.kind)


class ProcessDraft(CompanyOwned, db.Model):
    """A company's unsaved-to-production edit of one process type in the designer, at most one per type.

    Headquarters drafts are edits of the group template. Deploying (or publishing the
    template) deletes the draft.
    """

    __table_args__ = (sa.UniqueConstraint("company_id", "process_type"),)

    id = sa.Column(sa.Integer, primary_key=True)
    process_type = sa.Column(sa.String(32), nullable=False)
    bpmn_xml = sa.Column(sa.Text, nullable=False)
    # Published version (or template version for headquarters) the draft was opened from; NULL for the bundled file.
    base_version = sa.Column(sa.Integer)
    # Group template version the draft descends from (see ProcessModel.template_version).
    template_version = sa.Column(sa.Integer)
    updated_by_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"))
    updated_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow, onupdate=utcnow)


class ProcessTemplate(CompanyOwned, db.Model):
    """One published version of a group template diagram, owned by the headquarters company.

    Every company may read templates (through `latest_template`, which widens the read
    scope to every company); only headquarters users with process.template publish them.
    """

    __table_args__ = (sa.UniqueConstraint("company_id", "process_type", "version"),)

    id = sa.Column(sa.Integer, primary_key=True)
    process_type = sa.Column(sa.String(32), nullable=False)
    version = sa.Column(sa.Integer, nullable=False)
    bpmn_xml = sa.Column(sa.Text, nullable=False)
    sha256 = sa.Column(sa.String(64), nullable=False)
    published_by_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"))
    published_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)
