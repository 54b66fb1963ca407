// The process designer page: bpmn-js Modeler with the properties panel and Heatflow's own group.
//
// The page loads the diagram and the panel's choices from data-source-url, saves drafts,
// posts the diagram for validation, marks every element the server reports, and deploys.
// window.heatflowDesigner exposes the modeler for scripted edits (browser tests).

import 'bpmn-js/dist/assets/diagram-js.css';
import 'bpmn-js/dist/assets/bpmn-js.css';
import 'bpmn-js/dist/assets/bpmn-font/css/bpmn.css';
import '@bpmn-io/properties-panel/dist/assets/properties-panel.css';
import './heatflow.css';

import Modeler from 'bpmn-js/lib/Modeler';
import { BpmnPropertiesPanelModule, BpmnPropertiesProviderModule } from 'bpmn-js-properties-panel';

import HeatflowPropertiesProvider from './heatflow-properties.jsx';
import spiffworkflow from './spiffworkflow-moddle.json';
import { pageLocale, translateModule, translator } from './translate.js';
import { getJson, postForm, showErrors, showStatus } from './common.js';

const ERROR_MARKER = 'hf-error';
const heatflowPropertiesModule = {
  __init__: ['heatflowPropertiesProvider'],
  heatflowPropertiesProvider: ['type', HeatflowPropertiesProvider]
};

function start(root) {
  const status = document.getElementById('designer-status');
  const errorList = document.getElementById('designer-errors');
  const origin = document.getElementById('designer-origin');
  const csrfToken = root.dataset.csrfToken;
  const locale = pageLocale(root);
  const translate = translator(locale);
  let modeler = null;
  let baseVersion = '';
  let marked = [];

  function clearErrors() {
    const canvas = modeler.get('canvas');
    const overlays = modeler.get('overlays');
    marked.forEach((id) => canvas.removeMarker(id, ERROR_MARKER));
    overlays.remove({ type: 'heatflow-error' });
    marked = [];
    showErrors(errorList, [], () => {});
  }

  function pick(elementId) {
    const element = elementId && modeler.get('elementRegistry').get(elementId);
    if (element) {
      modeler.get('selection').select(element);
      modeler.get('canvas').scrollToElement(element);
    }
  }

  function markErrors(errors) {
    clearErrors();
    const registry = modeler.get('elementRegistry');
    const canvas = modeler.get('canvas');
    const overlays = modeler.get('overlays');
    const counts = {};
    errors.forEach((error) => {
      if (registry.get(error.element_id)) {
        counts[error.element_id] = (counts[error.element_id] || 0) + 1;
      }
    });
    Object.entries(counts).forEach(([id, count]) => {
      canvas.addMarker(id, ERROR_MARKER);
      const badge = document.createElement('div');
      badge.className = 'hf-error-badge';
      badge.title = errors.filter((e) => e.element_id === id).map((e) => e.message).join('\n');
      badge.textContent = translate('{count} 处问题', { count });
      overlays.add(id, 'heatflow-error', { position: { top: -14, left: 0 }, html: badge });
      marked.push(id);
    });
    showErrors(errorList, errors, pick);
  }

  async function currentXml() {
    const { xml } = await modeler.saveXML({ format: true });
    return xml;
  }

  async function open(from) {
    const url = from ? `${root.dataset.sourceUrl}?from=${from}` : root.dataset.sourceUrl;
    const { body } = await getJson(url);
    if (!body.ok) {
      showStatus(status, 'error', body.message);
      return;
    }
    if (!modeler) {
      modeler = new Modeler({
        container: document.getElementById('designer-canvas'),
        propertiesPanel: { parent: document.getElementById('designer-properties') },
        additionalModules: [BpmnPropertiesPanelModule, BpmnPropertiesProviderModule, heatflowPropertiesModule, translateModule(locale)],
        moddleExtensions: { spiffworkflow },
        heatflow: { options: body.options, decisionUrl: root.dataset.decisionUrl }
      });
      window.heatflowDesigner = { modeler, validate, deploy, saveDraft };
    }
    const result = await modeler.importXML(body.xml);
    // Fit, then leave room on the left for the palette, which floats over the canvas.
    const canvas = modeler.get('canvas');
    canvas.zoom('fit-viewport', 'auto');
    canvas.zoom(canvas.zoom() * 0.85, 'auto');
    canvas.scroll({ dx: 50, dy: 0 });
    baseVersion = body.version === null || body.version === undefined ? '' : String(body.version);
    origin.textContent = body.version
      ? translate('已打开：{origin} 版本 {version}', { origin: translate(body.origin_label), version: body.version })
      : translate('已打开：{origin}', { origin: translate(body.origin_label) });
    root.dataset.loaded = body.origin;
    clearErrors();
    if (result.warnings.length) {
      showStatus(status, 'error', translate('流程图已打开，但有 {count} 处无法识别的内容：{message}', {
        count: result.warnings.length, message: result.warnings[0].message
      }));
    } else if (from) {
      showStatus(status, 'success', translate('已载入集团模板；保存草稿或部署前，本公司的版本不会改变。'));
    }
  }

  async function send(url, busyText) {
    showStatus(status, 'success', busyText);
    const { status: code, body } = await postForm(url, { xml: await currentXml(), base_version: baseVersion }, csrfToken);
    return { code, body };
  }

  async function saveDraft() {
    const { body } = await send(root.dataset.draftUrl, translate('正在保存草稿…'));
    showStatus(status, body.ok ? 'success' : 'error', body.message);
    if (body.ok) {
      origin.textContent = translate('已打开：{origin}', { origin: translate('草稿') });
    }
    return body;
  }

  async function validate() {
    const { body } = await send(root.dataset.validateUrl, translate('正在校验…'));
    markErrors(body.errors || []);
    showStatus(status, body.ok ? 'success' : 'error', body.message);
    root.dataset.validated = body.ok ? 'ok' : 'errors';
    return body;
  }

  async function deploy() {
    const { body } = await send(root.dataset.deployUrl, translate('正在校验并部署…'));
    markErrors(body.errors || []);
    showStatus(status, body.ok ? 'success' : 'error', body.message);
    if (body.ok) {
      baseVersion = String(body.version);
      origin.textContent = translate('已打开：{origin} 版本 {version}', {
        origin: translate(body.kind === 'template' ? '集团模板' : '已部署'), version: body.version
      });
      const deployed = document.getElementById('designer-version');
      if (deployed && body.kind === 'model') {
        deployed.textContent = translate('当前部署版本 {version}', { version: body.version });
      }
      root.dataset.deployedVersion = String(body.version);
    }
    return body;
  }

  document.getElementById('designer-save').addEventListener('click', saveDraft);
  document.getElementById('designer-validate').addEventListener('click', validate);
  document.getElementById('designer-deploy').addEventListener('click', deploy);
  const templateButton = document.getElementById('designer-template');
  if (templateButton) {
    templateButton.addEventListener('click', () => open('template'));
  }
  open(null).catch((error) => showStatus(status, 'error', translate('流程图无法打开：{message}', { message: error.message })));
}

const root = document.getElementById('designer');
if (root) {
  start(root);
}
