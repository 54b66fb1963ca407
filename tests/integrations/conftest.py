"""Fixtures of the WeChat Pay tests: generated keys, the simulator and the app served over HTTP.

Keys are generated once per test session into a temporary directory. The live Flask server
serves the session `app` itself on 127.0.0.1, so it sees the schema that `app_ctx` empties.
"""


import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.billing.services import run_billing
from app.extensions import db
from alipay_helpers import ISV_APP_ID, QD_APP_ID, QD_AUTH_TOKEN, TJ_APP_ID
from app.payments.models import AlipayApp, WechatMerchant
from tools.alipay_simulator import Simulator as AlipaySimulator
from tools.wechatpay_simulator import Simulator
from wechatpay_helpers import MERCHANT_SERIAL, PLATFORM_SERIAL, SP_MCHID, SUB_MCHIDS


def _write_key_pair(directory, name):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_path = directory / f"{name}_private.pem"
    private_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public_path = directory / f"{name}_public.pem"
    public_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return key, private_path, public_path


@pytest.fixture(scope="session")
def keys(tmp_path_factory):
    """Merchant, platform and an attacker's key pairs and the APIv3 key, as objects and files."""
    directory = tmp_path_factory.mktemp("wechatpay-keys")
    merchant, merchant_file, merchant_public_file = _write_key_pair(directory, "merchant")
    platform, _, platform_public_file = _write_key_pair(directory, "platform")
    attacker, _, _ = _write_key_pair(directory, "attacker")
    apiv3_file = directory / "apiv3.key"
    apiv3_file.write_text("0123456789abcdefghijklmnopqrstuv")
    return {
        "merchant": merchant, "merchant_file": merchant_file, "merchant_public_file": merchant_public_file,
        "platform": platform, "platform_public_file": platform_public_file, "attacker": attacker,
        "apiv3": apiv3_file.read_bytes(), "apiv3_file": apiv3_file,
    }


@pytest.fixture
def simulator(keys):
    """The simulator on a free port of 127.0.0.1, with retries 1000 times faster than the channel's."""
    sim = Simulator(
        merchant_public_keys={SP_MCHID: keys["merchant"].public_key()}, platform_private_key=keys["platform"],
        platform_serial=PLATFORM_SERIAL, apiv3_key=keys["apiv3"], time_scale=1000.0, max_attempts=6,
    )
    sim.base_url = sim.start(0)
    yield sim
    sim.stop()


@pytest.fixture
def wechat(app, demo, import_fixture, keys, simulator, live_server_url, monkeypatch):
    """TJ and QD imported and billed, each with a sub-merchant, the app configured for the simulator."""
    settings = {
        "WECHATPAY_API_BASE": simulator.base_url, "WECHATPAY_SP_MCHID": SP_MCHID, "WECHATPAY_SP_APPID": "wx0000000000000001",
        "WECHATPAY_MERCHANT_SERIAL": MERCHANT_SERIAL, "WECHATPAY_MERCHANT_KEY_FILE": str(keys["merchant_file"]),
        "WECHATPAY_APIV3_KEY_FILE": str(keys["apiv3_file"]),
        "WECHATPAY_PLATFORM_KEY_FILES": {PLATFORM_SERIAL: str(keys["platform_public_file"])},
        "WECHATPAY_NOTIFY_URL": f"{live_server_url}/payments/notify/wechat",
    }
    for name, value in settings.items():
        monkeypatch.setitem(app.config, name, value)
    for code in ("TJ", "QD"):
        import_fixture(code, f"{code}-shared.xlsx")
        run_billing(code, "2025-2026")
        db.session.add(WechatMerchant(company_id=demo[code].id, sub_mchid=SUB_MCHIDS[code]))
    db.session.commit()
    return {"demo": demo, "server": live_server_url, "simulator": simulator, "keys": keys}


@pytest.fixture(scope="session")
def alipay_keys(tmp_path_factory):
    """Key pairs of TJ's own app, the group's ISV app, the simulated Alipay and an attacker, as objects and files."""
    directory = tmp_path_factory.mktemp("alipay-keys")
    result = {}
    for name in ("tj_app", "isv_app", "alipay", "attacker"):
        key, private_file, public_file = _write_key_pair(directory, name)
        result[name] = key
        result[f"{name}_private_file"] = private_file
        result[f"{name}_public_file"] = public_file
    token_file = directory / "qd_app_auth_token"
    token_file.write_text(QD_AUTH_TOKEN + "\n")
    result["qd_token_file"] = token_file
    return result


@pytest.fixture
def alipay_simulator(alipay_keys):
    """The Alipay simulator on a free port, resending 1000 times faster than Alipay."""
    sim = AlipaySimulator(
        app_public_keys={TJ_APP_ID: alipay_keys["tj_app"].public_key(), ISV_APP_ID: alipay_keys["isv_app"].public_key()},
        alipay_private_key=alipay_keys["alipay"], auth_tokens={QD_AUTH_TOKEN: QD_APP_ID}, time_scale=1000.0, max_attempts=5,
    )
    sim.gateway = sim.start(0)
    yield sim
    sim.stop()


@pytest.fixture
def alipay_world(app, demo, import_fixture, alipay_keys, alipay_simulator, live_server_url, monkeypatch):
    """TJ (own app) and QD (authorised the group's ISV app) imported and billed, the app configured for the simulator."""
    alipay_public = str(alipay_keys["alipay_public_file"])
    settings = {
        "ALIPAY_GATEWAY": alipay_simulator.gateway,
        "ALIPAY_APP_KEY_FILES": {
            TJ_APP_ID: f"{alipay_keys['tj_app_private_file']}|{alipay_public}",
            ISV_APP_ID: f"{alipay_keys['isv_app_private_file']}|{alipay_public}",
        },
        "ALIPAY_ISV_APP_ID": ISV_APP_ID,
        "ALIPAY_APP_AUTH_TOKEN_FILES": {QD_APP_ID: str(alipay_keys["qd_token_file"])},
        "ALIPAY_NOTIFY_URL": f"{live_server_url}/payments/notify/alipay",
    }
    for name, value in settings.items():
        monkeypatch.setitem(app.config, name, value)
    for code in ("TJ", "QD"):
        import_fixture(code, f"{code}-shared.xlsx")
        run_billing(code, "2025-2026")
    db.session.add(AlipayApp(company_id=demo["TJ"].id, app_id=TJ_APP_ID, mode="direct"))
    db.session.add(AlipayApp(company_id=demo["QD"].id, app_id=QD_APP_ID, mode="isv"))
    db.session.commit()
    return {"demo": demo, "server": live_server_url, "simulator": alipay_simulator, "keys": alipay_keys}
