"""Receipt PDF drawing: WeasyPrint with one embedded CJK font and no other resources.

The template references the font file configured as RECEIPT_FONT_PATH by @font-face, and
the URL fetcher given to WeasyPrint loads that file and inline data: URLs only, so a
receipt never reaches the network or reads any other file.
"""

import logging
from pathlib import Path

from flask import current_app, render_template
from flask_babel import gettext as _
from weasyprint import HTML, default_url_fetcher

logger = logging.getLogger(__name__)

# Noto Sans CJK as Debian and Ubuntu install it (package fonts-noto-cjk).
DEFAULT_FONT_PATH = "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"


class ReceiptError(RuntimeError):
    """A receipt that cannot be drawn. The message names what to fix."""


class BlockedResourceError(ValueError):
    """A resource the receipt template may not load."""


def receipt_font_path():
    """Return the configured receipt font file, or raise ReceiptError if it is missing."""
    path = Path(current_app.config.get("RECEIPT_FONT_PATH") or DEFAULT_FONT_PATH)
    if not path.is_file():
        raise ReceiptError(
            _("收据字体文件 %(path)s 不存在。请安装 fonts-noto-cjk，或将配置项 RECEIPT_FONT_PATH 指向一个中文字体文件。", path=path)
        )
    return path


def make_url_fetcher(font_path):
    """Build a WeasyPrint URL fetcher that serves `font_path` and data: URLs and rejects the rest."""
    font_url = font_path.as_uri()

    def fetch_resource(url, timeout=10, ssl_context=None, http_headers=None):
        if url.startswith("data:"):
            # urllib decodes data: URLs in memory, so nothing is fetched.
            return default_url_fetcher(url, timeout=timeout, ssl_context=ssl_context)
        if url == font_url:
            return {"file_obj": font_path.open("rb"), "mime_type": "font/collection", "redirected_url": url}
        logger.warning("Blocked receipt resource %s because receipts load only their font and data: URLs", url)
        raise BlockedResourceError(f"Receipts load only {font_url} and data: URLs, not {url}.")

    return fetch_resource


def render_receipt_pdf(context, template="invoicing/receipt.html"):
    """Render a receipt template (the payment receipt unless named) with `context` and return the PDF bytes."""
    font_path = receipt_font_path()
    html = render_template(template, font_url=font_path.as_uri(), **context)
    document = HTML(string=html, base_url=None, url_fetcher=make_url_fetcher(font_path))
    return document.write_pdf()
