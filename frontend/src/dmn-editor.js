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
import { pageLocale, translateModule } from './translate.js';

const ERROR_CLASS = 'hf-error-cell';

async function start(root) {
  const status = document.getElementById('decision-status');
  const errorList = document.getElementById('decision-errors');
  const canvas = document.getElementById('decision-canvas');
  // dmn-js hands each view only its own additionalModules (common ones are dropped), so the
  // translate module is given to every view type.
  const translation = { additionalModules: [translateModule(pageLocale(root))] };
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
    showStatus(status, 'error', `决策表「${root.dataset.decisionId}」无法加载（服务器返回 ${response.status}）。`);
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
    showStatus(status, 'success', '正在保存…');
    const { xml } = await modeler.saveXML({ format: true });
    const { body } = await postForm(root.dataset.saveUrl, { xml }, root.dataset.csrfToken);
    markErrors(body.errors || []);
    if (body.ok) {
      showStatus(status, 'success', `决策表已保存为版本 ${body.version}。`);
      root.dataset.savedVersion = String(body.version);
    } else {
      showStatus(status, 'error', body.message || `决策表未保存：有 ${(body.errors || []).length} 处问题，已在表中标红。`);
    }
  });
}

const root = document.getElementById('decision-editor');
if (root) {
  start(root).catch((error) => showStatus(document.getElementById('decision-status'), 'error', `决策表无法打开：${error.message}`));
}
