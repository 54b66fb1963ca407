"""Web wiring: blueprints, login, the per-request tenant scope, errors and security headers."""

import logging

from flask import abort, current_app, g, render_template, request, send_from_directory
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.routing import IntegerConverter

from app.extensions import db, login_manager
from app.org.models import User
from app.tenancy import SYSTEM_SCOPE, TenantScope, scoped, set_scope

logger = logging.getLogger(__name__)
ERROR_TITLES = {
    400: _l("请求无效"), 401: _l("未登录"), 403: _l("无权访问"), 404: _l("未找到"), 405: _l("不支持的操作"), 413: _l("文件过大"),
}
# Shown in place of Werkzeug's English default description when a view aborts without its own message.
ERROR_MESSAGES = {
    400: _l("请求无效，请返回上一页检查填写的内容后重试。"),
    401: _l("请先登录后再访问此页面。"),
    403: _l("您没有访问此页面的权限；如需开通，请联系本公司管理员。"),
    404: _l("未找到您要访问的页面或记录；请检查地址是否正确，或从菜单重新进入。"),
    405: _l("此页面不支持该操作；请从页面上的按钮提交，不要直接输入地址。"),
}
# Seconds a client is asked to wait after the database connection broke in the middle of a request.
DATABASE_RETRY_AFTER_S = 5
NO_COMPANIES = TenantScope(visible=frozenset(), writable=frozenset(), label="anonymous")
# No inline scripts, styles or eval. A view that must allow more sets its own header, which
# _security_headers then leaves alone.
CONTENT_SECURITY_POLICY = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"


@login_manager.user_loader
def load_user(user_id):
    with scoped(SYSTEM_SCOPE):
        return db.session.get(User, int(user_id))


class BoundedIntConverter(IntegerConverter):
    """`<int:...>` limited to the range of an integer primary key, so huge ids give a 404."""

    def __init__(self, url_map, fixed_digits=0, min=None, max=2**31 - 1, signed=False):
        super().__init__(url_map, fixed_digits=fixed_digits, min=min, max=max, signed=signed)


def _reject_nul_bytes():
    """Reject a NUL character in the path, query or form with 400, because PostgreSQL text cannot store one."""
    if request.mimetype == "application/x-www-form-urlencoded":
        # Keep the raw body readable after the form is parsed: signed form posts (Alipay
        # notifications) are verified over it. Werkzeug parses the form from this cache.
        request.get_data(cache=True, parse_form_data=False)
    if "\x00" in request.path:
        abort(400, _("请求地址中含有无效字符（NUL），请检查地址后重试。"))
    for source, values in ((_l("查询参数"), request.args), (_l("表单字段"), request.form)):
        for name, value in values.items(multi=True):
            if "\x00" in name or "\x00" in value:
                shown = name.replace("\x00", "\\0")[:64]
                abort(400, _("%(source)s「%(name)s」中含有无效字符（NUL）；请删除该字符后重试。", source=source, name=shown))


def _favicon():
    return send_from_directory(current_app.static_folder, "favicon.svg", mimetype="image/svg+xml", max_age=86400)


def _set_request_scope():
    from app.org.services import scope_for

    if current_user.is_authenticated:
        set_scope(scope_for(current_user))
    else:
        set_scope(NO_COMPANIES)


SECURITY_HEADERS = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
    # No page uses the camera, microphone, location, payment or USB browser features.
    ("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=(), usb=()"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
)


def security_headers(config):
    """Return the (name, value) security headers of every response under `config`."""
    hsts = config.get("STRICT_TRANSPORT_SECURITY")
    return SECURITY_HEADERS + ((("Strict-Transport-Security", hsts),) if hsts else ())


def _security_headers(response):
    for name, value in security_headers(current_app.config):
        response.headers.setdefault(name, value)
    return response


def register_web(app):
    """Register blueprints, hooks and error pages."""
    from app.billing.routes import bp as billing_bp
    from app.hq.routes import bp as hq_bp
    from app.ledger.routes import bp as ledger_bp
    from app.network.routes import bp as network_bp
    from app.org.admin_routes import bp as admin_bp
    from app.org.routes import bp as org_bp
    from app.tariffs.routes import bp as tariffs_bp

    app.url_map.converters["int"] = BoundedIntConverter
    login_manager.login_view = "org.login"
    # "strong": a session used from another address or browser is emptied, not just marked stale.
    login_manager.session_protection = "strong"
    login_manager.login_message = _l("请先登录。")
    # The flashed message is stored in the session cookie, which takes plain strings only.
    login_manager.localize_callback = str

    for blueprint in (org_bp, admin_bp, network_bp, ledger_bp, tariffs_bp, billing_bp, hq_bp):
        app.register_blueprint(blueprint)
    for blueprint in _optional_blueprints():
        app.register_blueprint(blueprint)

    @app.context_processor
    def _navigation():
        from app.org.services import has_permission

        def can(permission):
            return current_user.is_authenticated and has_permission(current_user, permission)

        return {"nav_endpoints": set(app.view_functions), "can": can}

    from app.clock import format_local
    from app.ledger.parser import translated_reason
    from app.money import format_money, format_quantity, plain_decimal
    from app.org.permissions import shown_role_name
    from app.processes.step_names import shown_step_name

    app.add_template_filter(format_local, "local")
    app.add_template_filter(plain_decimal, "plain")
    app.add_template_filter(format_quantity, "area")
    app.add_template_filter(format_money, "money")
    app.add_template_filter(translated_reason, "error_reason")
    app.add_template_filter(shown_step_name, "step_name")
    app.add_template_filter(lambda role: shown_role_name(role.code, role.name), "role_name")
    # Browsers ask for /favicon.ico on pages without an icon link (a PDF or an error from a proxy).
    app.add_url_rule("/favicon.ico", "favicon", _favicon)

    from app.payments.notify_endpoint import install_notification_endpoint

    install_notification_endpoint(app)
    app.before_request(_reject_nul_bytes)
    app.before_request(_set_request_scope)
    app.after_request(_security_headers)

    @app.teardown_request
    def _reset_scope(exc):
        set_scope(SYSTEM_SCOPE)

    @app.errorhandler(CSRFError)
    def csrf_error(error):
        return render_template("error.html", title=_("表单已过期"), message=_("表单校验失败（CSRF），请刷新页面后重试。")), 400

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(error):
        limit = current_app.config.get("MAX_CONTENT_LENGTH") or 0
        error.description = _(
            "上传的内容超过 %(limit)s MB 上限；请把文件拆分成几个较小的文件后分别上传。", limit=limit // 1024 // 1024
        )
        return http_error(error)

    @app.errorhandler(HTTPException)
    def http_error(error):
        if request.path.startswith("/api/"):
            return {"error_code": error.name.lower().replace(" ", "_"), "message": error.description, "status": error.code}, error.code
        title = f"{error.code} {ERROR_TITLES.get(error.code, error.name)}"
        message = error.description
        if message == type(error).description and error.code in ERROR_MESSAGES:
            message = ERROR_MESSAGES[error.code]
        return render_template("error.html", title=title, message=message), error.code

    @app.errorhandler(OperationalError)
    def database_unavailable(error):
        # The server ended the connection, restarted or cannot be reached, so it rolled the
        # transaction back. The pool drops the broken connection and the next request gets a
        # checked one (pool_pre_ping), so the client may retry.
        db.session.rollback()
        logger.error("Database connection failed on %s %s: %s", request.method, request.path, error)
        message = _("数据库连接中断，本次操作未保存。请稍后重试。")
        headers = {"Retry-After": str(DATABASE_RETRY_AFTER_S)}
        if request.path.startswith("/api/"):
            return {"error_code": "database_unavailable", "message": message, "status": 503}, 503, headers
        # The page is drawn as for a visitor, because the navigation would load the user's
        # permissions and company from the database that just failed.
        g._login_user = login_manager.anonymous_user()
        return render_template("error.html", title=_("503 服务暂不可用"), message=message), 503, headers

    @app.errorhandler(Exception)
    def unexpected_error(error):
        db.session.rollback()
        logger.exception("Unhandled error on %s %s", request.method, request.path)
        message = _("服务器处理请求时出错，操作未保存。请稍后重试，或联系管理员并告知时间。")
        if request.path.startswith("/api/"):
            return {"error_code": "internal_error", "message": message, "status": 500}, 500
        return render_template("error.html", title=_("出错了"), message=message), 500


def _optional_blueprints():
    """Blueprints of features that register themselves in app.routes_registry."""
    from app.routes_registry import BLUEPRINTS

    return BLUEPRINTS
