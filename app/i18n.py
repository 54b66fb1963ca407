"""Interface language: Chinese (zh_CN) by default, English on request, chosen per user.

Source strings are the Chinese texts. app/translations/<locale>/LC_MESSAGES/messages.po
contains the other languages, and bin/i18n extracts, updates, checks and compiles them. The
language of a request is the user's saved choice, else the cookie set on the login page,
else zh_CN. Receipts and invoices stay Chinese in every language, because they are legal
documents.
"""

import logging
from contextlib import contextmanager

from babel import Locale
from flask import has_request_context, request
from flask_babel import Babel, force_locale, gettext, pgettext
from flask_babel.speaklater import LazyString
from flask_login import current_user
from sqlalchemy.exc import SQLAlchemyError

DEFAULT_LOCALE = "zh_CN"
# Locale code -> the language's own name, shown in the switcher so a reader finds their language.
LANGUAGES = {"zh_CN": "中文", "en": "English"}
LOCALE_COOKIE = "heatflow_locale"
# One year, in seconds: the login page's choice outlives any session.
LOCALE_COOKIE_MAX_AGE_S = 365 * 24 * 3600

babel = Babel()
logger = logging.getLogger(__name__)


def N_(text):
    """Mark `text` for extraction without translating it.

    For Chinese labels kept as plain strings because code also matches, joins or stores
    them (status names, permission labels). Translate them where shown, with
    `translate_label` in Python or the `translate` filter in templates.
    """
    return text


class ContextLabel(str):
    """A label marked with NC_: the Chinese text, plus the message context that distinguishes it."""

    context = None


def NC_(context, text):
    """Mark `text` like N_, within a message `context`.

    For a Chinese word that means two things in English, such as 报停 as a billing status
    ("Suspended") and as a process ("Suspension"). The label stays equal to the plain text.
    """
    label = ContextLabel(text)
    label.context = context
    return label


def translate_label(text):
    """Translate a label marked with N_ or NC_ (or any catalog msgid); other text and None pass through."""
    if not text:
        return text
    context = getattr(text, "context", None)
    if context:
        return pgettext(context, str(text))
    return gettext(text)


class Message:
    """A user-facing text kept as its catalog msgid and values, translated each time it is shown.

    Raise errors with `M_(...)` where a Celery task may store the text, for example in an
    instance history or an import result. `str()` gives the text in the language active at
    that moment. `as_data()` gives the JSON form, which `stored_message` translates later in
    the reader's language. Values may be Messages or labels marked with N_/NC_,
    which are translated with the text, and lists, which are joined with `join_items`.
    """

    def __init__(self, msgid, **params):
        self.msgid = str(msgid)
        self.context = getattr(msgid, "context", None)
        self.params = params

    def __str__(self):
        values = {name: _shown_value(value) for name, value in self.params.items()}
        text = pgettext(self.context, self.msgid) if self.context else gettext(self.msgid)
        return text % values if values else text

    def __repr__(self):
        return f"Message({self.msgid!r}, **{self.params!r})"

    def __eq__(self, other):
        return isinstance(other, Message) and (self.msgid, self.context, self.params) == (other.msgid, other.context, other.params)

    def __hash__(self):
        return hash((self.msgid, self.context))

    def as_data(self):
        """Return the JSON form: {"msgid", "params"} plus "context" when set; values become text or nested dicts."""
        data = {"msgid": self.msgid, "params": {name: _stored_value(value) for name, value in self.params.items()}}
        if self.context:
            data["context"] = self.context
        return data

    @classmethod
    def from_data(cls, data):
        """Rebuild a Message from `as_data()` output."""
        msgid = data["msgid"]
        if data.get("context"):
            msgid = NC_(data["context"], msgid)
        return cls(msgid, **{name: _loaded_value(value) for name, value in (data.get("params") or {}).items()})


def M_(msgid, **params):
    """Return a Message: `msgid` (a literal, extracted like `_`) with `params`, translated when shown."""
    return Message(msgid, **params)


def _loaded_value(value):
    if isinstance(value, list):
        return [_loaded_value(item) for item in value]
    return Message.from_data(value) if _is_message_data(value) else value


def _is_message_data(value):
    return isinstance(value, dict) and "msgid" in value


def _shown_value(value):
    if isinstance(value, (list, tuple)):
        return join_items(_shown_value(item) for item in value)
    if isinstance(value, Message):
        return str(value)
    if isinstance(value, ContextLabel):
        return translate_label(value)
    return value


def _stored_value(value):
    if isinstance(value, (list, tuple)):
        return [_stored_value(item) for item in value]
    if isinstance(value, Message):
        return value.as_data()
    if isinstance(value, ContextLabel):
        return Message(value).as_data()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def message_of(error):
    """Return the Message an exception was raised with, or None when it was raised with plain text."""
    first = error.args[0] if getattr(error, "args", None) else None
    return first if isinstance(first, Message) else None


def stored_message(data, fallback=""):
    """Translate a message stored with `Message.as_data()`; without one, return `fallback` (text stored in its own language)."""
    if not _is_message_data(data):
        return fallback
    return str(Message.from_data(data))


def join_items(items):
    """Join labels into one list for a message, with 、 in Chinese and a comma in English."""
    return gettext("、").join(str(item) for item in items)


def lazy_label(text):
    """Return a lazy string that translates a label marked with N_ when shown (form choices, module level)."""
    return LazyString(translate_label, text)


def lazy_join(items):
    """Return a lazy `join_items`, for placeholders of module-level lazy_gettext messages."""
    return LazyString(join_items, list(items))


@contextmanager
def legal_document_language():
    """Render inside the block in Chinese whatever the reader's language.

    Receipts, refund receipts and invoices are legal documents and must be Chinese.
    """
    with force_locale(DEFAULT_LOCALE):
        yield


def valid_locale(value):
    """Return `value` if it names a supported language, else None."""
    return value if value in LANGUAGES else None


def select_locale():
    """Return the language of this request: the user's saved choice, the cookie, or zh_CN.

    Outside a request (Celery tasks) messages are Chinese; CLI commands force English (app.cli).
    """
    if not has_request_context():
        return DEFAULT_LOCALE
    try:
        if current_user and current_user.is_authenticated:
            saved = valid_locale(current_user.locale)
            if saved:
                return saved
    except SQLAlchemyError as error:
        # The user is loaded on first use; when the database is down, the error page still
        # needs a language, so the cookie decides.
        logger.warning("Could not load the user's language, using the cookie: %s", error)
    return valid_locale(request.cookies.get(LOCALE_COOKIE)) or DEFAULT_LOCALE


def locale_code(locale):
    """Return the LANGUAGES key of a Babel Locale (Babel spells zh_CN as zh_Hans_CN)."""
    for code in LANGUAGES:
        if Locale.parse(code) == locale:
            return code
    return DEFAULT_LOCALE


def init_i18n(app):
    """Bind Flask-Babel with the locale selector and expose the switcher's data to templates."""
    app.config.setdefault("BABEL_DEFAULT_LOCALE", DEFAULT_LOCALE)
    # Flask-Babel's date formatting shows times in the companies' local time, like app.clock.
    app.config.setdefault("BABEL_DEFAULT_TIMEZONE", "Asia/Shanghai")
    babel.init_app(app, locale_selector=select_locale)
    app.add_template_filter(translate_label, "translate")
    app.add_template_filter(join_items, "join_items")

    @app.context_processor
    def _language():
        from flask_babel import get_locale

        code = locale_code(get_locale())
        return {"languages": LANGUAGES, "current_locale": code, "html_lang": code.replace("_", "-")}
