"""Site photos of valve tasks on the account and instance pages, as thumbnails linking to the photo."""

import io
import re
import uuid

import sqlalchemy as sa
from PIL import Image

from app.extensions import db
from app.fieldwork.models import FieldPhoto
from tests.fieldwork.conftest import png_bytes


def _close_with_photos(login, task, count=2):
    photos = [(io.BytesIO(png_bytes(600, 400)), f"valve-{number}.png") for number in range(count)]
    data = {"submission_id": str(uuid.uuid4()), "result": "sealed", "seal_no": "TJ-S-0042", "comment": "", "photos": photos}
    response = login("tj_field").post(f"/field/tasks/{task.id}", data=data, content_type="multipart/form-data")
    assert response.status_code == 302
    return db.session.scalars(sa.select(FieldPhoto.id).order_by(FieldPhoto.id)).all()


def _thumbnail_links(html):
    """Return (photo link, thumbnail source) pairs of the site photo section."""
    section = html.split('id="site-photos"', 1)[1].split("</section>", 1)[0]
    return re.findall(r'<a href="([^"]+)"[^>]*><img src="([^"]+)"', section)


def test_instance_page_shows_valve_photos(valve_task, login):
    account, instance, task = valve_task
    photo_ids = _close_with_photos(login, task)

    html = login("tj_approver").get(f"/processes/instances/{instance.id}").get_data(as_text=True)

    assert _thumbnail_links(html) == [(f"/field/photos/{i}", f"/field/photos/{i}/thumbnail") for i in photo_ids]
    assert "关栓" in html.split('id="site-photos"', 1)[1].split("</section>", 1)[0]


def test_account_page_shows_valve_photos(valve_task, login):
    account, _instance, task = valve_task
    photo_ids = _close_with_photos(login, task, count=1)

    html = login("tj_clerk").get(f"/accounts/{account.id}").get_data(as_text=True)

    assert _thumbnail_links(html) == [(f"/field/photos/{photo_ids[0]}", f"/field/photos/{photo_ids[0]}/thumbnail")]


def test_photo_thumbnail_is_small_jpeg(valve_task, login):
    _account, _instance, task = valve_task
    photo_id = _close_with_photos(login, task, count=1)[0]

    response = login("tj_approver").get(f"/field/photos/{photo_id}/thumbnail")

    assert response.status_code == 200
    assert response.mimetype == "image/jpeg"
    with Image.open(io.BytesIO(response.data)) as image:
        assert image.size == (240, 160)
    full = login("tj_approver").get(f"/field/photos/{photo_id}")
    assert full.mimetype == "image/png"
    assert full.data == png_bytes(600, 400)


def test_other_company_gets_404_for_photos(valve_task, login):
    account, instance, task = valve_task
    photo_id = _close_with_photos(login, task, count=1)[0]
    other = login("qd_approver")

    assert other.get(f"/field/photos/{photo_id}").status_code == 404
    assert other.get(f"/field/photos/{photo_id}/thumbnail").status_code == 404
    assert other.get(f"/processes/instances/{instance.id}").status_code == 404
    assert other.get(f"/accounts/{account.id}").status_code == 404


def test_pages_without_photos_have_no_section(valve_task, login):
    account, instance, _task = valve_task
    approver = login("tj_approver")

    assert 'id="site-photos"' not in approver.get(f"/processes/instances/{instance.id}").get_data(as_text=True)
    assert 'id="site-photos"' not in approver.get(f"/accounts/{account.id}").get_data(as_text=True)
