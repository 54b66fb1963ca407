// Read-only diagram of a process instance: its own model version, the completed elements
// and the flows between them in green, the elements it waits at in orange.

import 'bpmn-js/dist/assets/diagram-js.css';
import 'bpmn-js/dist/assets/bpmn-js.css';
import './heatflow.css';

import NavigatedViewer from 'bpmn-js/lib/NavigatedViewer';

import { getJson } from './common.js';
import { pageLocale, translator } from './translate.js';

async function show(container) {
  const { body } = await getJson(container.dataset.diagramUrl);
  if (!body.ok) {
    container.textContent = body.message || translator(pageLocale(container))('流程图无法加载。');
    return;
  }
  const viewer = new NavigatedViewer({ container });
  await viewer.importXML(body.xml);
  const canvas = viewer.get('canvas');
  const registry = viewer.get('elementRegistry');
  const completed = new Set(body.completed);
  const current = new Set(body.current);
  completed.forEach((id) => registry.get(id) && canvas.addMarker(id, 'hf-completed'));
  current.forEach((id) => registry.get(id) && canvas.addMarker(id, 'hf-current'));
  registry.filter((element) => element.type === 'bpmn:SequenceFlow').forEach((flow) => {
    const source = flow.source && flow.source.id;
    const target = flow.target && flow.target.id;
    if (completed.has(source) && (completed.has(target) || current.has(target))) {
      canvas.addMarker(flow.id, 'hf-taken');
    }
  });
  canvas.zoom('fit-viewport', 'auto');
  container.dataset.completed = body.completed.join(' ');
  container.dataset.current = body.current.join(' ');
  container.dataset.loaded = 'true';
}

const container = document.getElementById('instance-diagram');
if (container) {
  show(container).catch((error) => {
    container.textContent = translator(pageLocale(container))('流程图无法显示：{message}', { message: error.message });
  });
}
