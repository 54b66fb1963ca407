"""The permission catalogue and the functions (modules) the group grants to companies.

A user may act only when one of their roles carries the permission and the group has
granted the permission's function to the company the action concerns.
"""

from app.i18n import N_, translate_label

# function code -> Chinese label (translated where shown)
FUNCTIONS = {
    "accounts": N_("用户档案"),
    "ledger": N_("台账导入"),
    "billing": N_("计费"),
    "payments": N_("收费"),
    "processes": N_("业务审批"),
    "fieldwork": N_("移动作业"),
    "hq": N_("集团监管"),
    "admin": N_("系统管理"),
}

# permission code -> (function code, Chinese label translated where shown)
PERMISSIONS = {
    "account.read": ("accounts", N_("查看用户档案")),
    "account.edit": ("accounts", N_("修改用户档案")),
    "ledger.import": ("ledger", N_("导入台账")),
    "billing.run": ("billing", N_("生成应收")),
    "billing.read": ("billing", N_("查看应收")),
    "tariff.edit": ("billing", N_("维护收费标准")),
    "arrears.manage": ("billing", N_("清欠管理（筛选、分派、导出）")),
    "billing.write_off": ("billing", N_("核销欠费")),
    "billing.rerate_approve": ("billing", N_("审批追溯调整")),
    "payment.collect": ("payments", N_("柜台收费")),
    "payment.refund": ("payments", N_("申请退费")),
    "payment.refund_approve": ("payments", N_("审批退费")),
    "payment.online_order": ("payments", N_("生成线上支付订单")),
    "invoice.issue": ("payments", N_("登记、作废和重开发票")),
    "invoice.configure": ("payments", N_("设置开票方式、票面与税率")),
    "reconcile.resolve": ("payments", N_("渠道对账与差异处理")),
    "process.start": ("processes", N_("发起业务申请")),
    "process.approve": ("processes", N_("分公司审批")),
    "process.group_approve": ("processes", N_("集团审批")),
    "process.finance": ("processes", N_("财务复核")),
    "process.configure": ("processes", N_("设置集团审批规则")),
    "process.admin": ("processes", N_("管理流程实例（挂起、恢复、终止、重试）")),
    "process.design": ("processes", N_("设计并部署本公司流程")),
    "process.template": ("hq", N_("发布集团流程模板")),
    "fieldwork.do": ("fieldwork", N_("现场作业")),
    "fieldwork.assign": ("fieldwork", N_("派发稽查任务")),
    "hq.view": ("hq", N_("集团汇总查看")),
    "voucher.read": ("billing", N_("查看和下载财务凭证")),
    "metering.review": ("billing", N_("核对并更正计量读数")),
    "role.manage": ("admin", N_("管理本公司角色")),
    "company.manage": ("admin", N_("管理分公司与功能授权")),
}

# Permissions that only read; a headquarters role holding nothing else is read-only.
READ_ONLY_PERMISSIONS = {"account.read", "billing.read", "hq.view", "voucher.read"}

# Roles every company receives: code -> (Chinese name, permissions).
DEFAULT_COMPANY_ROLES = {
    "company_admin": (N_("分公司管理员"), [
        "account.read", "account.edit", "role.manage", "billing.read", "tariff.edit", "process.configure", "process.admin",
        "process.design", "fieldwork.assign", "invoice.configure", "arrears.manage",
    ]),
    "clerk": (N_("营业员"), [
        "account.read", "process.start", "billing.read", "ledger.import", "billing.run", "arrears.manage", "metering.review",
    ]),
    "company_approver": (N_("分公司审批人"), ["account.read", "billing.read", "process.approve", "billing.rerate_approve"]),
    "cashier": (N_("收费员"), ["account.read", "billing.read", "payment.collect", "payment.refund", "payment.online_order", "invoice.issue"]),
    "field_staff": (N_("外勤人员"), ["account.read", "fieldwork.do"]),
    "finance": (N_("财务"), [
        "account.read", "billing.read", "process.finance", "payment.refund_approve", "invoice.issue", "reconcile.resolve", "voucher.read",
        "billing.write_off",
    ]),
}

# Roles of the group headquarters.
DEFAULT_HQ_ROLES = {
    "group_admin": (N_("集团管理员"), ["company.manage", "role.manage", "hq.view", "account.read", "billing.read", "process.template"]),
    "group_approver": (N_("集团审批人"), ["process.group_approve", "account.read", "billing.read", "hq.view"]),
    "hq_auditor": (N_("集团稽核"), ["hq.view", "account.read", "billing.read", "voucher.read"]),
}

# role code -> the Chinese name a company receives with the role
DEFAULT_ROLE_NAMES = {code: name for code, (name, _) in {**DEFAULT_COMPANY_ROLES, **DEFAULT_HQ_ROLES}.items()}


def shown_role_name(code, name):
    """Return a role's name for the reader: translated while it is the default name of its code, else as the company wrote it."""
    if name and name == DEFAULT_ROLE_NAMES.get(code):
        return translate_label(name)
    return name
