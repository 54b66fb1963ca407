"""The permission catalogue and the functions (modules) the group grants to companies.

A user may act only when one of their roles carries the permission and the group has
granted the permission's function to the company the action concerns.
"""

# function code -> Chinese label
FUNCTIONS = {
    "accounts": "用户档案",
    "ledger": "台账导入",
    "billing": "计费",
    "payments": "收费",
    "processes": "业务审批",
    "fieldwork": "移动作业",
    "hq": "集团监管",
    "admin": "系统管理",
}

# permission code -> (function code, Chinese label)
PERMISSIONS = {
    "account.read": ("accounts", "查看用户档案"),
    "account.edit": ("accounts", "修改用户档案"),
    "ledger.import": ("ledger", "导入台账"),
    "billing.run": ("billing", "生成应收"),
    "billing.read": ("billing", "查看应收"),
    "tariff.edit": ("billing", "维护收费标准"),
    "arrears.manage": ("billing", "清欠管理（筛选、分派、导出）"),
    "billing.write_off": ("billing", "核销欠费"),
    "billing.rerate_approve": ("billing", "审批追溯调整"),
    "payment.collect": ("payments", "柜台收费"),
    "payment.refund": ("payments", "申请退费"),
    "payment.refund_approve": ("payments", "审批退费"),
    "payment.online_order": ("payments", "生成线上支付订单"),
    "invoice.issue": ("payments", "登记、作废和重开发票"),
    "invoice.configure": ("payments", "设置开票方式、票面与税率"),
    "reconcile.resolve": ("payments", "渠道对账与差异处理"),
    "process.start": ("processes", "发起业务申请"),
    "process.approve": ("processes", "分公司审批"),
    "process.group_approve": ("processes", "集团审批"),
    "process.finance": ("processes", "财务复核"),
    "process.configure": ("processes", "设置集团审批规则"),
    "process.admin": ("processes", "管理流程实例（挂起、恢复、终止、重试）"),
    "process.design": ("processes", "设计并部署本公司流程"),
    "process.template": ("hq", "发布集团流程模板"),
    "fieldwork.do": ("fieldwork", "现场作业"),
    "fieldwork.assign": ("fieldwork", "派发稽查任务"),
    "hq.view": ("hq", "集团汇总查看"),
    "voucher.read": ("billing", "查看和下载财务凭证"),
    "metering.review": ("billing", "核对并更正计量读数"),
    "role.manage": ("admin", "管理本公司角色"),
    "company.manage": ("admin", "管理分公司与功能授权"),
}

# Permissions that only read; a headquarters role holding nothing else is read-only.
READ_ONLY_PERMISSIONS = {"account.read", "billing.read", "hq.view", "voucher.read"}

# Roles every company receives: code -> (Chinese name, permissions).
DEFAULT_COMPANY_ROLES = {
    "company_admin": ("分公司管理员", [
        "account.read", "account.edit", "role.manage", "billing.read", "tariff.edit", "process.configure", "process.admin",
        "process.design", "fieldwork.assign", "invoice.configure", "arrears.manage",
    ]),
    "clerk": ("营业员", [
        "account.read", "process.start", "billing.read", "ledger.import", "billing.run", "arrears.manage", "metering.review",
    ]),
    "company_approver": ("分公司审批人", ["account.read", "billing.read", "process.approve", "billing.rerate_approve"]),
    "cashier": ("收费员", ["account.read", "billing.read", "payment.collect", "payment.refund", "payment.online_order", "invoice.issue"]),
    "field_staff": ("外勤人员", ["account.read", "fieldwork.do"]),
    "finance": ("财务", [
        "account.read", "billing.read", "process.finance", "payment.refund_approve", "invoice.issue", "reconcile.resolve", "voucher.read",
        "billing.write_off",
    ]),
}

# Roles of the group headquarters.
DEFAULT_HQ_ROLES = {
    "group_admin": ("集团管理员", ["company.manage", "role.manage", "hq.view", "account.read", "billing.read", "process.template"]),
    "group_approver": ("集团审批人", ["process.group_approve", "account.read", "billing.read", "hq.view"]),
    "hq_auditor": ("集团稽核", ["hq.view", "account.read", "billing.read", "voucher.read"]),
}
