"""`flask heat notifications requeue` with ids and reasons that match no failed notification."""

import pytest

pytestmark = pytest.mark.xdist_group("wechatpay")


@pytest.mark.parametrize("notification_id", ["0", "2147483648", "99999999999"])
def test_requeue_id_out_of_range_not_found(app_ctx, demo, notification_id):
    runner = app_ctx.test_cli_runner()

    result = runner.invoke(args=["heat", "notifications", "requeue", notification_id, "--reason", "typo"])

    assert result.exit_code == 1
    assert result.output == (
        f"Notification {notification_id} was not found; list failed ones with `flask heat notifications failed`.\n"
    )
    # The session is still usable, so the next command succeeds.
    listed = runner.invoke(args=["heat", "notifications", "failed"])
    assert listed.exit_code == 0, listed.output
    assert listed.output == "0 failed notifications\n"


@pytest.mark.parametrize("reason", ["\u200b", "\ufeff\u3000", "\xa0"])
def test_requeue_invisible_reason_rejected(app_ctx, demo, reason):
    runner = app_ctx.test_cli_runner()

    result = runner.invoke(args=["heat", "notifications", "requeue", "1", "--reason", reason])

    assert result.exit_code == 1
    assert result.output.startswith("A reason is required")


def test_requeue_long_reason_rejected(app_ctx, demo):
    runner = app_ctx.test_cli_runner()

    result = runner.invoke(args=["heat", "notifications", "requeue", "1", "--reason", "r" * 256])

    assert result.exit_code == 1
    assert result.output == "The reason has 256 characters; shorten it to at most 255.\n"
