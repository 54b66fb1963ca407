// Heatflow group of the properties panel: what the engine reads from a diagram beyond plain BPMN.
//
// - service task: the registered service (spiffworkflow:serviceTaskOperator) and its parameter expressions
// - user task: the task form (property `form`) and the task data prefix (property `data_prefix`)
// - lane: the role whose staff do the lane's tasks (the lane name is the role code)
// - timer event: a duration or a date, stored quoted because the engine evaluates timers as expressions
// - business rule task: the escalation decision id (spiffworkflow:calledDecisionId)
//
// The choices come from the server (`options` of the designer's source endpoint), so the
// panel offers only services, forms and roles that deployment accepts.

import { SelectEntry, TextFieldEntry, isSelectEntryEdited, isTextFieldEntryEdited } from '@bpmn-io/properties-panel';
import { useService } from 'bpmn-js-properties-panel';
import { getBusinessObject, is } from 'bpmn-js/lib/util/ModelUtil';

const SPIFF = 'spiffworkflow';
const NONE = '';

// -- moddle helpers

function extensionsOf(businessObject) {
  return (businessObject.get('extensionElements') || { values: [] }).values || [];
}

function findExtension(businessObject, type) {
  return extensionsOf(businessObject).find((value) => is(value, type));
}

// Return the element's extension of `type`, creating extensionElements and the extension with `attrs` when missing.
function ensureExtension(element, type, attrs, bpmnFactory, modeling) {
  const businessObject = getBusinessObject(element);
  let extensionElements = businessObject.get('extensionElements');
  if (!extensionElements) {
    extensionElements = bpmnFactory.create('bpmn:ExtensionElements', { values: [] });
    extensionElements.$parent = businessObject;
    modeling.updateProperties(element, { extensionElements });
  }
  let extension = findExtension(businessObject, type);
  if (!extension) {
    extension = bpmnFactory.create(type, attrs);
    extension.$parent = extensionElements;
    modeling.updateModdleProperties(element, extensionElements, {
      values: [...extensionElements.get('values'), extension]
    });
  }
  return extension;
}

function removeExtension(element, type, modeling) {
  const businessObject = getBusinessObject(element);
  const extensionElements = businessObject.get('extensionElements');
  if (!extensionElements) {
    return;
  }
  const values = extensionElements.get('values').filter((value) => !is(value, type));
  modeling.updateModdleProperties(element, extensionElements, { values });
}

// -- spiffworkflow:properties (form, data_prefix)

function getProperty(element, name) {
  const properties = findExtension(getBusinessObject(element), `${SPIFF}:Properties`);
  const property = properties && (properties.get('properties') || []).find((p) => p.name === name);
  return property ? property.value : NONE;
}

function setProperty(element, name, value, bpmnFactory, modeling) {
  const properties = ensureExtension(element, `${SPIFF}:Properties`, { properties: [] }, bpmnFactory, modeling);
  const others = (properties.get('properties') || []).filter((p) => p.name !== name);
  const list = [...others];
  if (value) {
    const property = bpmnFactory.create(`${SPIFF}:Property`, { name, value });
    property.$parent = properties;
    const existing = (properties.get('properties') || []).findIndex((p) => p.name === name);
    list.splice(existing < 0 ? list.length : existing, 0, property);
  }
  modeling.updateModdleProperties(element, properties, { properties: list });
}

// -- entries

const select = (props) => <SelectEntry {...props} />;
const textField = (props) => <TextFieldEntry {...props} />;

function ServiceEntry({ element, id, options }) {
  const bpmnFactory = useService('bpmnFactory');
  const modeling = useService('modeling');
  const translate = useService('translate');
  const operator = findExtension(getBusinessObject(element), `${SPIFF}:ServiceTaskOperator`);
  const service = operator && options.services.find((s) => s.name === operator.id);

  const setValue = (name) => {
    if (!name) {
      removeExtension(element, `${SPIFF}:ServiceTaskOperator`, modeling);
      return;
    }
    const chosen = options.services.find((s) => s.name === name);
    const target = ensureExtension(element, `${SPIFF}:ServiceTaskOperator`, { id: name }, bpmnFactory, modeling);
    const previous = {};
    const oldParameters = target.get('parameters');
    ((oldParameters && oldParameters.get('parameters')) || []).forEach((p) => { previous[p.id] = p.value; });
    const parametersElement = bpmnFactory.create(`${SPIFF}:Parameters`, { parameters: [] });
    parametersElement.$parent = target;
    const parameters = Object.keys(chosen.inputs).map((input) => {
      const parameter = bpmnFactory.create(`${SPIFF}:Parameter`, { id: input, type: 'any', value: previous[input] || input });
      parameter.$parent = parametersElement;
      return parameter;
    });
    parametersElement.set('parameters', parameters);
    modeling.updateModdleProperties(element, target, {
      id: name, resultVariable: `${name}_result`, parameters: parametersElement
    });
  };

  return select({
    element, id, label: translate('服务'),
    description: service
      ? translate('输出：{outputs}', {
        outputs: Object.entries(service.outputs)
          .map(([name, description]) => translate('{name}（{description}）', { name, description }))
          .join(translate('；'))
      })
      : translate('选择本平台登记的服务；参数按服务要求自动生成。'),
    getValue: () => (operator ? operator.id : NONE),
    setValue,
    getOptions: () => [
      { value: NONE, label: translate('（未选择）') },
      ...options.services.map((s) => ({ value: s.name, label: s.name }))
    ]
  });
}

function ParameterEntry({ element, id, parameter, description }) {
  const modeling = useService('modeling');
  const debounce = useService('debounceInput');
  const translate = useService('translate');
  return textField({
    element, id, debounce, label: translate('参数 {id}', { id: parameter.id }),
    description: translate('{description}（任务数据中的表达式）', { description: translate(description) }),
    getValue: () => parameter.value || NONE,
    setValue: (value) => modeling.updateModdleProperties(element, parameter, { value: value || parameter.id })
  });
}

function FormEntry({ element, id, options }) {
  const bpmnFactory = useService('bpmnFactory');
  const modeling = useService('modeling');
  const translate = useService('translate');
  const value = getProperty(element, 'form');
  const form = options.forms.find((f) => f.value === value);
  return select({
    element, id, label: translate('表单'),
    description: form ? translate('字段：{fields}', { fields: form.fields.join(translate('、')) }) : translate('办理人在待办中填写的表单。'),
    getValue: () => value,
    setValue: (chosen) => setProperty(element, 'form', chosen, bpmnFactory, modeling),
    getOptions: () => [{ value: NONE, label: translate('（未选择）') }, ...options.forms.map((f) => ({ value: f.value, label: f.label }))]
  });
}

function DataPrefixEntry({ element, id }) {
  const bpmnFactory = useService('bpmnFactory');
  const modeling = useService('modeling');
  const debounce = useService('debounceInput');
  const translate = useService('translate');
  return textField({
    element, id, debounce, label: translate('数据前缀'),
    description: translate('审批表单把意见存为「前缀_decision」，网关条件按此判断；留空时用任务编号。'),
    getValue: () => getProperty(element, 'data_prefix'),
    setValue: (value) => setProperty(element, 'data_prefix', (value || '').trim(), bpmnFactory, modeling)
  });
}

function LaneRoleEntry({ element, id, options }) {
  const modeling = useService('modeling');
  const translate = useService('translate');
  const name = getBusinessObject(element).name || NONE;
  const known = options.lanes.some((lane) => lane.value === name);
  return select({
    element, id, label: translate('办理角色'),
    description: translate('泳道名即角色编号；运行时由本公司持有该角色的员工办理，group_approver 由集团审批人办理。'),
    getValue: () => name,
    setValue: (value) => modeling.updateLabel(element, value),
    getOptions: () => [
      ...(known ? [] : [{ value: name, label: name ? translate('{name}（不是本公司角色）', { name }) : translate('（未选择）') }]),
      ...options.lanes
    ]
  });
}

function timerDefinition(element) {
  return (getBusinessObject(element).get('eventDefinitions') || []).find((d) => is(d, 'bpmn:TimerEventDefinition'));
}

function timerKind(definition) {
  if (definition.get('timeDate')) {
    return 'timeDate';
  }
  if (definition.get('timeCycle')) {
    return 'timeCycle';
  }
  return 'timeDuration';
}

function unquote(text) {
  const match = /^\s*(["'])(.*)\1\s*$/.exec(text || '');
  return match ? match[2] : (text || NONE);
}

function setTimer(element, kind, value, bpmnFactory, modeling) {
  const definition = timerDefinition(element);
  const cleaned = (value || '').trim();
  const expression = cleaned ? bpmnFactory.create('bpmn:FormalExpression', { body: `"${unquote(cleaned)}"` }) : undefined;
  if (expression) {
    expression.$parent = definition;
  }
  modeling.updateModdleProperties(element, definition, {
    timeDuration: kind === 'timeDuration' ? expression : undefined,
    timeDate: kind === 'timeDate' ? expression : undefined,
    timeCycle: kind === 'timeCycle' ? expression : undefined
  });
}

function timerValue(definition) {
  const expression = definition.get(timerKind(definition));
  return expression ? unquote(expression.body) : NONE;
}

function TimerKindEntry({ element, id }) {
  const bpmnFactory = useService('bpmnFactory');
  const modeling = useService('modeling');
  const translate = useService('translate');
  const definition = timerDefinition(element);
  return select({
    element, id, label: translate('定时类型'),
    getValue: () => timerKind(definition),
    setValue: (kind) => setTimer(element, kind, timerValue(definition), bpmnFactory, modeling),
    getOptions: () => [
      { value: 'timeDuration', label: translate('时长（如 PT48H 表示 48 小时）') },
      { value: 'timeDate', label: translate('日期时间（如 2026-03-15T00:00:00+08:00）') },
      { value: 'timeCycle', label: translate('循环（如 R3/PT24H）') }
    ]
  });
}

function TimerValueEntry({ element, id }) {
  const bpmnFactory = useService('bpmnFactory');
  const modeling = useService('modeling');
  const debounce = useService('debounceInput');
  const translate = useService('translate');
  const definition = timerDefinition(element);
  return textField({
    element, id, debounce, label: translate('定时值（ISO 8601）'),
    description: translate('按 ISO 8601 填写，不加引号；保存时自动加引号，因为引擎把定时值当表达式计算。'),
    getValue: () => timerValue(definition),
    setValue: (value) => setTimer(element, timerKind(definition), value, bpmnFactory, modeling),
    validate: (value) => {
      const text = unquote(value || '');
      if (!text) {
        return translate('请填写定时值。');
      }
      if (!/^(R\d*\/)?P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?$/.test(text)
          && !/^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2})?(Z|[+-]\d{2}:\d{2})?)?$/.test(text)) {
        return translate('「{text}」不是 ISO 8601 时长或日期，例如 PT48H、P3D、2026-03-15T00:00:00+08:00。', { text });
      }
      return null;
    }
  });
}

function DecisionEntry({ element, id, decisionUrl }) {
  const bpmnFactory = useService('bpmnFactory');
  const modeling = useService('modeling');
  const debounce = useService('debounceInput');
  const translate = useService('translate');
  const extension = findExtension(getBusinessObject(element), `${SPIFF}:CalledDecisionId`);
  const value = extension ? (extension.value || NONE) : NONE;
  return textField({
    element, id, debounce, label: translate('升级决策表编号'),
    description: value
      ? translate('在决策表编辑器中打开：{url}', { url: decisionUrl.replace('__id__', encodeURIComponent(value)) })
      : translate('升级判断所用 DMN 决策表的编号（decision id）。'),
    getValue: () => value,
    setValue: (text) => {
      const cleaned = (text || '').trim();
      if (!cleaned) {
        removeExtension(element, `${SPIFF}:CalledDecisionId`, modeling);
        return;
      }
      const target = ensureExtension(element, `${SPIFF}:CalledDecisionId`, { value: cleaned }, bpmnFactory, modeling);
      modeling.updateModdleProperties(element, target, { value: cleaned });
    },
    validate: (text) => (!text || /^[A-Za-z_][A-Za-z0-9_.-]{0,63}$/.test(text.trim())
      ? null : translate('编号只能包含字母、数字、下划线、点和连字符，并以字母或下划线开头。'))
  });
}

// -- the provider

function entriesFor(element, options, decisionUrl) {
  const entries = [];
  const add = (id, component, isEdited, props = {}) => {
    entries.push({ id, isEdited, component, options, decisionUrl, ...props });
  };
  if (is(element, 'bpmn:ServiceTask')) {
    add('heatflow-service', ServiceEntry, isSelectEntryEdited);
    const operator = findExtension(getBusinessObject(element), `${SPIFF}:ServiceTaskOperator`);
    const service = operator && options.services.find((s) => s.name === operator.id);
    const parameters = operator && operator.get('parameters');
    ((parameters && parameters.get('parameters')) || []).forEach((parameter) => {
      const description = (service && service.inputs[parameter.id]) || '该服务不使用此参数';
      add(`heatflow-parameter-${parameter.id}`, ParameterEntry, isTextFieldEntryEdited, { parameter, description });
    });
  }
  if (is(element, 'bpmn:UserTask')) {
    add('heatflow-form', FormEntry, isSelectEntryEdited);
    add('heatflow-data-prefix', DataPrefixEntry, isTextFieldEntryEdited);
  }
  if (is(element, 'bpmn:Lane')) {
    add('heatflow-lane-role', LaneRoleEntry, isSelectEntryEdited);
  }
  if (is(element, 'bpmn:Event') && timerDefinition(element)) {
    add('heatflow-timer-kind', TimerKindEntry, isSelectEntryEdited);
    add('heatflow-timer-value', TimerValueEntry, isTextFieldEntryEdited);
  }
  if (is(element, 'bpmn:BusinessRuleTask')) {
    add('heatflow-decision', DecisionEntry, isTextFieldEntryEdited);
  }
  return entries;
}

export default function HeatflowPropertiesProvider(propertiesPanel, heatflowConfig, translate) {
  this.getGroups = (element) => (groups) => {
    // The built-in timer group writes unquoted values, which the engine cannot evaluate; ours replaces it.
    const withoutTimer = groups.filter((group) => group.id !== 'timer');
    const entries = entriesFor(element, heatflowConfig.options, heatflowConfig.decisionUrl);
    if (entries.length) {
      withoutTimer.splice(1, 0, { id: 'heatflow', label: translate('热费平台设置'), entries });
    }
    return withoutTimer;
  };
  propertiesPanel.registerProvider(500, this);
}

HeatflowPropertiesProvider.$inject = ['propertiesPanel', 'config.heatflow', 'translate'];
