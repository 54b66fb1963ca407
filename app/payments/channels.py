"""Channel adapters built from the app configuration, with their keys read from files.

Keys and tokens are read from the files the configuration names, each parsed once per
modification time, and never stored in the database or written to the log.
"""

import functools
import os
import threading
import time

import sqlalchemy as sa
from flask import current_app

from app.integrations import alipay, bank, wechatpay
from app.extensions import db
from app.integrations.channel import ChannelError
from app.payments.models import AlipayApp, WechatMerchant


class ChannelConfigError(ChannelError):
    """A channel setting or key file that is missing or invalid; the message names the setting."""


def config_value(name):
    value = current_app.config.get(name)
    if not value:
        raise ChannelConfigError(f"Payment channel is not configured: set {name}.")
    return value


@functools.lru_cache(maxsize=64)
def _load_key_file(loader, path, modified_ns):
    # Parsing an RSA private key runs a slow consistency check, so each file is parsed once
    # per modification time. A replaced key file is read again.
    return loader(path)


def key_from_file(loader, path):
    try:
        return _load_key_file(loader, path, os.stat(path).st_mtime_ns)
    except (OSError, ValueError) as error:
        raise ChannelConfigError(f"Key file {path} could not be read: {error}") from None


def _read_secret(path):
    with open(path, "rb") as handle:
        return handle.read().strip()


def wechat_credentials():
    """The WeChat Pay service provider's credentials from the files named in the configuration."""
    return wechatpay.MerchantCredentials(
        mchid=config_value("WECHATPAY_SP_MCHID"),
        serial_no=config_value("WECHATPAY_MERCHANT_SERIAL"),
        private_key=key_from_file(wechatpay.load_private_key, config_value("WECHATPAY_MERCHANT_KEY_FILE")),
        apiv3_key=key_from_file(wechatpay.load_apiv3_key, config_value("WECHATPAY_APIV3_KEY_FILE")),
    )


def wechat_platform_keys():
    files = config_value("WECHATPAY_PLATFORM_KEY_FILES")
    return {serial: key_from_file(wechatpay.load_public_key, path) for serial, path in files.items()}


def _build_wechat_channel():
    return wechatpay.WechatPayChannel(
        config_value("WECHATPAY_API_BASE"), wechat_credentials(), wechat_platform_keys(),
        sp_appid=current_app.config.get("WECHATPAY_SP_APPID", ""),
    )


class ChannelCache:
    """One WeChat Pay adapter per process, rebuilt when its settings or key files change.

    The adapter is kept for the settings it was built from: merchant id, certificate serial,
    key files and platform certificate serials. A key file replaced in place (a rotated
    certificate under the same path) is noticed by its modification time, which is read at
    most every `CHANNEL_KEY_CHECK_S` seconds, so a rotation takes effect at most that late.
    """

    def __init__(self):
        self._entry = None
        self._lock = threading.Lock()

    def wechat(self):
        config = current_app.config
        platform_files = config.get("WECHATPAY_PLATFORM_KEY_FILES") or {}
        settings = (
            config.get("WECHATPAY_API_BASE"), config.get("WECHATPAY_SP_MCHID"), config.get("WECHATPAY_SP_APPID", ""),
            config.get("WECHATPAY_MERCHANT_SERIAL"), config.get("WECHATPAY_MERCHANT_KEY_FILE"),
            config.get("WECHATPAY_APIV3_KEY_FILE"), tuple(sorted(platform_files.items())),
        )
        now = time.monotonic()
        entry = self._entry
        if entry is not None and entry[0] == settings and now < entry[1]:
            return entry[3]
        paths = [settings[4], settings[5], *platform_files.values()]
        modified = _modification_times(paths)
        if entry is not None and entry[0] == settings and entry[2] == modified and None not in modified:
            channel = entry[3]
        else:
            channel = _build_wechat_channel()
        with self._lock:
            self._entry = (settings, now + config.get("CHANNEL_KEY_CHECK_S", 0), modified, channel)
        return channel

    def clear(self):
        with self._lock:
            self._entry = None


def _modification_times(paths):
    times = []
    for path in paths:
        try:
            times.append(os.stat(path).st_mtime_ns if path else None)
        except OSError:
            times.append(None)
    return tuple(times)


channel_cache = ChannelCache()


def wechat_channel():
    """Return the WeChat Pay adapter of the configured service provider, kept per process (ChannelCache)."""
    return channel_cache.wechat()


def alipay_apps():
    """AppKeys of every configured Alipay app: {app id: AppKeys}."""
    apps = {}
    for app_id, files in config_value("ALIPAY_APP_KEY_FILES").items():
        private_file, _, public_file = files.partition("|")
        if not public_file:
            raise ChannelConfigError(f"ALIPAY_APP_KEY_FILES for app {app_id} must be PRIVATE_KEY_FILE|ALIPAY_PUBLIC_KEY_FILE.")
        apps[app_id] = alipay.AppKeys(
            app_id=app_id,
            private_key=key_from_file(wechatpay.load_private_key, private_file),
            alipay_public_key=key_from_file(wechatpay.load_public_key, public_file),
        )
    return apps


def alipay_channel(statement_merchant_id=""):
    return alipay.AlipayChannel(
        config_value("ALIPAY_GATEWAY"), alipay_apps(), isv_app_id=current_app.config.get("ALIPAY_ISV_APP_ID", ""),
        replay_window=int(current_app.config.get("ALIPAY_REPLAY_WINDOW_SECONDS") or alipay.REPLAY_WINDOW_SECONDS),
        statement_merchant_id=statement_merchant_id,
    )


def alipay_auth_token(app_id):
    """The app_auth_token a company's app granted the group's third-party app, from its file."""
    path = (current_app.config.get("ALIPAY_APP_AUTH_TOKEN_FILES") or {}).get(app_id)
    if not path:
        raise ChannelConfigError(f"No app_auth_token file is configured for Alipay app {app_id} (ALIPAY_APP_AUTH_TOKEN_FILES).")
    token = key_from_file(_read_secret, path).decode("ascii", "replace")
    if not token:
        raise ChannelConfigError(f"The app_auth_token file of Alipay app {app_id} is empty.")
    return token


def bank_channel(bank_code, bank_company_id=""):
    path = (current_app.config.get("BANK_KEY_FILES") or {}).get(bank_code)
    if not path:
        raise ChannelConfigError(f"No signing key file is configured for bank {bank_code!r} (BANK_KEY_FILES).")
    key = key_from_file(_read_secret, path)
    if len(key) < 32:
        raise ChannelConfigError(f"The signing key of bank {bank_code!r} has {len(key)} bytes; it needs at least 32.")
    statement_url = (current_app.config.get("BANK_STATEMENT_URLS") or {}).get(bank_code, "")
    return bank.BankChannel(bank_code, key, bank_company_id, statement_url=statement_url)


def channel_for(code):
    """The adapter of an online channel ("wechat" or "alipay")."""
    if code == "wechat":
        return wechat_channel()
    if code == "alipay":
        return alipay_channel()
    raise ChannelConfigError(f"Channel {code!r} takes no online orders.")


def order_merchant(company_id, channel_code):
    """Return (merchant id, app_auth_token or None) of a company's active merchant on a channel."""
    if channel_code == "wechat":
        merchant = db.session.scalar(sa.select(WechatMerchant).filter_by(company_id=company_id, active=True))
        return (merchant.sub_mchid, None) if merchant else (None, None)
    if channel_code == "alipay":
        app = db.session.scalar(sa.select(AlipayApp).filter_by(company_id=company_id, active=True))
        if app is None:
            return None, None
        return app.app_id, (alipay_auth_token(app.app_id) if app.mode == "isv" else None)
    raise ChannelConfigError(f"Channel {channel_code!r} takes no online orders.")


def statement_channel(statement_channel_name, merchant_id):
    """Return (adapter, app_auth_token or None) that downloads and reads a merchant's daily statement.

    `statement_channel_name` is "wechatpay", "alipay" or "bank:<bank code>" as in StatementLine.
    """
    if statement_channel_name == "wechatpay":
        return wechat_channel(), None
    if statement_channel_name == "alipay":
        app = db.session.scalar(sa.select(AlipayApp).filter_by(app_id=merchant_id))
        auth_token = alipay_auth_token(merchant_id) if app is not None and app.mode == "isv" else None
        return alipay_channel(statement_merchant_id=merchant_id), auth_token
    if statement_channel_name.startswith("bank:"):
        return bank_channel(statement_channel_name.split(":", 1)[1], merchant_id), None
    raise ChannelConfigError(f"Statement channel {statement_channel_name!r} is unknown; use wechatpay, alipay or bank:<bank code>.")
