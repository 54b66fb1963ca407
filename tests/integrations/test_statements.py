"""Daily statements of WeChat Pay and Alipay read into StatementLine, and bad files rejected by line and column."""

import io
import zipfile
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from app.integrations import alipay, wechatpay
from app.integrations.channel import PaymentChannel, StatementError
from app.integrations.bank import BankChannel
from app.integrations.statement import StatementLine

CST = timezone(timedelta(hours=8))
WECHAT_HEADER = (
    "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,"
    "应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,"
    "手续费,费率,订单金额,申请退款金额,费率备注"
)


def _wechat_row(time, transaction_id, out_trade_no, state, settled, refund_id="0", out_refund_no="0", refund="0.00"):
    values = [
        time, "wx0000000000000001", "1900000100", "1900000111", "", transaction_id, out_trade_no, "oUser", "NATIVE", state,
        "OTHERS", "CNY", settled, "0.00", refund_id, out_refund_no, refund, "0.00", "ORIGINAL" if state == "REFUND" else "",
        "SUCCESS" if state == "REFUND" else "", "热费", "1201000001", "0.01380", "0.60%", settled, refund, "",
    ]
    return ",".join("`" + value for value in values)


def _wechat_bill(rows, line_end="\r\n"):
    summary = ["总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额", "`2,`2300.00,`300.00,`0.00,`0.01380,`2300.00,`300.00"]
    return line_end.join([WECHAT_HEADER, *rows, *summary]).encode("utf-8") + line_end.encode()


def test_wechat_trade_bill_payment_and_refund():
    data = _wechat_bill([
        _wechat_row("2026-01-10 10:00:00", "4200000001", "TJ20260110aa", "SUCCESS", "2300.00"),
        _wechat_row("2026-01-11 09:30:00", "4200000001", "TJ20260110aa", "REFUND", "0.00", "50000001", "RTJ1", "300.00"),
    ])
    lines = wechatpay.parse_trade_bill(data)
    assert lines == [
        StatementLine("wechatpay", "1900000111", "4200000001", "TJ20260110aa", "payment", Decimal("2300.00"), datetime(2026, 1, 10, 10, 0, tzinfo=CST)),
        StatementLine("wechatpay", "1900000111", "50000001", "TJ20260110aa", "refund", Decimal("300.00"), datetime(2026, 1, 11, 9, 30, tzinfo=CST)),
    ]
    # Files with bare \n line ends read the same.
    assert wechatpay.parse_trade_bill(data.replace(b"\r\n", b"\n")) == lines


def test_wechat_trade_bill_errors():
    bad_amount = _wechat_bill([_wechat_row("2026-01-10 10:00:00", "4200000001", "TJ1", "SUCCESS", "23.001")])
    with pytest.raises(StatementError, match="第 2 行，列「应结订单金额」，值「23.001」"):
        wechatpay.parse_trade_bill(bad_amount)
    bad_state = _wechat_bill([_wechat_row("2026-01-10 10:00:00", "4200000001", "TJ1", "NOTPAY", "1.00")])
    with pytest.raises(StatementError, match="列「交易状态」，值「NOTPAY」"):
        wechatpay.parse_trade_bill(bad_state)
    with pytest.raises(StatementError, match="缺少列：微信订单号"):
        wechatpay.parse_trade_bill("交易时间,商户号\r\n`2026-01-10 10:00:00,`1\r\n".encode())
    short = _wechat_bill(["`2026-01-10 10:00:00,`x"])
    with pytest.raises(StatementError, match="第 2 行有 2 列"):
        wechatpay.parse_trade_bill(short)


ALIPAY_HEADER = (
    "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,"
    "订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,券名称,"
    "商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注"
)


def _alipay_csv(rows):
    lines = [
        "#支付宝业务明细查询", "#账号：[20880000000000010156]", "#起始日期：[2026年01月10日 00:00:00]   终止日期：[2026年01月11日 00:00:00]",
        "#-----------------------------------------业务明细列表----------------------------------------",
        ALIPAY_HEADER, *rows,
        "#-----------------------------------------业务明细列表结束------------------------------------",
        "#交易合计：1笔，商家实收共1200.00元，商家优惠共0.00元", "#退款合计：1笔", "#导出时间：[2026年01月11日 10:12:13]",
    ]
    return "\r\n".join(lines).encode("gbk")


def _alipay_row(trade_no, out_trade_no, kind, amount, batch=""):
    return ",".join([
        trade_no, out_trade_no, kind, "天津热力 热费", "2026-01-10 09:59:00", "2026-01-10 10:00:00", "", "", "", "", "buyer@example.com",
        amount, amount, "0.00", "0.00", "0.00", "0.00", "0.00", "", "0.00", "0.00", batch, "-7.20", "0.00", "",
    ])


def _zipped(csv_bytes):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("20880000000000010156_20260110_业务明细(汇总).csv", "#汇总".encode("gbk"))
        archive.writestr("20880000000000010156_20260110_业务明细.csv", csv_bytes)
    return buffer.getvalue()


def test_alipay_bill_zip_in_gbk():
    csv_bytes = _alipay_csv([
        _alipay_row("2026011022001400001", "TJ20260110bb", "交易", "1200.00"),
        _alipay_row("2026011022001400001", "TJ20260110bb", "退款", "-200.00", "RTJ20260110x"),
    ])
    lines = alipay.parse_trade_bill(_zipped(csv_bytes), "2021000000000101")
    assert [(l.channel, l.merchant_id, l.channel_txn_id, l.out_trade_no, l.kind, l.amount) for l in lines] == [
        ("alipay", "2021000000000101", "2026011022001400001", "TJ20260110bb", "payment", Decimal("1200.00")),
        ("alipay", "2021000000000101", "2026011022001400001:RTJ20260110x", "TJ20260110bb", "refund", Decimal("200.00")),
    ]
    assert lines[0].occurred_at == datetime(2026, 1, 10, 10, 0, tzinfo=CST)
    assert alipay.parse_trade_bill(csv_bytes, "2021000000000101") == lines


def test_alipay_bill_errors():
    wrong_sign = _alipay_csv([_alipay_row("1", "TJ1", "交易", "-5.00")])
    with pytest.raises(StatementError, match="第 6 行，列「订单金额（元）」，值「-5.00」：交易应为正数"):
        alipay.parse_trade_bill(wrong_sign, "A")
    unknown = _alipay_csv([_alipay_row("1", "TJ1", "转账", "5.00")])
    with pytest.raises(StatementError, match="列「业务类型」，值「转账」"):
        alipay.parse_trade_bill(unknown, "A")
    with pytest.raises(StatementError, match="业务明细列表"):
        alipay.parse_trade_bill("#只有注释\r\n".encode("gbk"), "A")
    with pytest.raises(StatementError, match="不是有效的 zip"):
        alipay.parse_trade_bill(b"PK\x03\x04broken", "A")


def test_adapters_share_the_interface():
    assert issubclass(wechatpay.WechatPayChannel, PaymentChannel)
    assert issubclass(alipay.AlipayChannel, PaymentChannel)
    assert issubclass(BankChannel, PaymentChannel)
    bank = BankChannel("CEB", b"k" * 32, "TJ0001")
    assert bank.parse_statement("1|9.00\n20260110|S1|1201000001|9.00|atm|缴费\n".encode())[0].merchant_id == "TJ0001"
