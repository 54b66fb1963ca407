// The DMN editor page of an escalation decision: dmn-js Modeler opened on the decision table.
//
// It loads data-load-url (DMN XML) and posts the edited XML as form field `xml` to
// data-save-url, which answers {"ok": true, "version"} or 400 with per-element errors.
// window.heatflowDecisionEditor exposes the modeler for scripted edits (browser tests).

import 'dmn-js/dist/assets/diagram-js.css';
import 'dmn-js/dist/assets/dmn-js-shared.css';
import 'dmn-js/dist/assets/dmn-js-drd.css';
import 'dmn-js/dist/assets/dmn-js-decision-table.css';
import 'dmn-js/dist/assets/dmn-js-decision-table-controls.css';
import 'dmn-js/dist/assets/dmn-js-literal-expression.css';
import 'dmn-js/dist/assets/dmn-font/css/dmn.css';
import './heatflow.css';

import DmnModeler from 'dmn-js/lib/Modeler';

import { postForm, showErrors, showStatus } from './common.js';
import { pageLocale, translateModule, translator } from './translate.js';

const ERROR_CLASS = 'hf-error-cell';

async function start(root) {
  const status = document.getElementById('decision-status');
  const errorList = document.getElementById('decision-errors');
  const canvas = document.getElementById('decision-canvas');
  // dmn-js hands each view only its own additionalModules (common ones are dropped), so the
  // translate module is given to every view type.
  const locale = pageLocale(root);
  const translate = translator(locale);
  const translation = { additionalModules: [translateModule(locale)] };
  const modeler = new DmnModeler({
    container: canvas,
    common: { keyboard: { bindTo: document } },
    drd: translation,
    decisionTable: translation,
    literalExpression: translation,
    boxedExpression: translation
  });
  window.heatflowDecisionEditor = { modeler };

  const response = await fetch(root.dataset.loadUrl, { credentials: 'same-origin' });
  if (!response.ok) {
    showStatus(status, 'error', translate('决策表「{id}」无法加载（服务器返回 {status}）。', { id: root.dataset.decisionId, status: response.status }));
    return;
  }
  await modeler.importXML(await response.text());
  const decisionView = modeler.getViews().find((view) => view.type === 'decisionTable' && view.element.id === root.dataset.decisionId)
    || modeler.getViews().find((view) => view.type === 'decisionTable');
  if (decisionView) {
    await modeler.open(decisionView);
  }
  root.dataset.loaded = 'true';

  function markErrors(errors) {
    canvas.querySelectorAll(`.${ERROR_CLASS}`).forEach((node) => node.classList.remove(ERROR_CLASS));
    errors.forEach((error) => {
      if (!error.element_id) {
        return;
      }
      canvas.querySelectorAll(`[data-element-id="${CSS.escape(error.element_id)}"], [data-row-id="${CSS.escape(error.element_id)}"], [data-col-id="${CSS.escape(error.element_id)}"]`)
        .forEach((node) => node.classList.add(ERROR_CLASS));
    });
    showErrors(errorList, errors, (id) => {
      const node = id && canvas.querySelector(`[data-element-id="${CSS.escape(id)}"], [data-row-id="${CSS.escape(id)}"]`);
      if (node) {
        node.scrollIntoView({ block: 'center' });
      }
    });
  }

  document.getElementById('decision-save').addEventListener('click', async () => {
    showStatus(status, 'success', translate('正在保存…'));
    const { xml } = await modeler.saveXML({ format: true });
    const { body } = await postForm(root.dataset.saveUrl, { xml }, root.dataset.csrfToken);
    markErrors(body.errors || []);
    if (body.ok) {
      showStatus(status, 'success', translate('决策表已保存为版本 {version}。', { version: body.version }));
      root.dataset.savedVersion = String(body.version);
    } else {
      showStatus(status, 'error', body.message || translate('决策表未保存：有 {count} 处问题，已在表中标红。', { count: (body.errors || []).length }));
    }
  });
}

const root = document.getElementById('decision-editor');
if (root) {
  start(root).catch((error) => showStatus(
    document.getElementById('decision-status'), 'error', translator(pageLocale(root))('决策表无法打开：{message}', { message: error.message })
  ));
}
