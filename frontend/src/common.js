// Helpers shared by the designer, the instance viewer and the DMN editor pages.

import { pageLocale, translator } from './translate.js';

// Page texts follow the data-locale of the first element that has one (zh_CN when none has).
const translate = translator(pageLocale(document.querySelector('[data-locale]')));

// POST form fields with the page's CSRF token; resolve to {status, body} where body is the JSON answer.
export async function postForm(url, fields, csrfToken) {
  const form = new FormData();
  Object.entries(fields).forEach(([name, value]) => form.append(name, value));
  form.append('csrf_token', csrfToken);
  const response = await fetch(url, {
    method: 'POST', body: form, credentials: 'same-origin', headers: { Accept: 'application/json' }
  });
  return { status: response.status, body: await jsonOrMessage(response) };
}

export async function getJson(url) {
  const response = await fetch(url, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
  return { status: response.status, body: await jsonOrMessage(response) };
}

// A non-JSON answer (an expired form, a login page, an error page) becomes {ok: false, message}.
async function jsonOrMessage(response) {
  const type = response.headers.get('Content-Type') || '';
  if (type.includes('application/json')) {
    return response.json();
  }
  const reasons = {
    400: translate('请求被拒绝：表单可能已过期，请刷新页面后重试（未保存的修改请先另存）。'),
    403: translate('您没有执行此操作的权限。'),
    404: translate('未找到请求的内容。'),
    413: translate('提交的内容过大。')
  };
  return { ok: false, message: reasons[response.status] || translate('服务器返回 {status}，操作未完成，请稍后重试。', { status: response.status }) };
}

// Show a message in a status box; kind is "success" or "error".
export function showStatus(box, kind, message) {
  box.hidden = false;
  box.className = `flash ${kind}`;
  box.textContent = message;
}

// Fill an error list with one item per finding; onPick(elementId) runs when an item is clicked.
export function showErrors(list, errors, onPick) {
  list.replaceChildren();
  list.hidden = !errors.length;
  errors.forEach((error) => {
    const item = document.createElement('li');
    const link = document.createElement('button');
    link.type = 'button';
    link.className = 'link';
    link.textContent = error.element_id || translate('（整个文件）');
    link.dataset.elementId = error.element_id || '';
    link.addEventListener('click', () => onPick(error.element_id));
    item.append(link, translate('：{message}', { message: error.message }));
    list.append(item);
  });
}
