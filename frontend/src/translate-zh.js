// Chinese labels of the bpmn-js palette, context pad and replace menu; unknown texts stay in English.
const LABELS = {
  'Activate hand tool': '抓手工具',
  'Activate lasso tool': '框选工具',
  'Activate create/remove space tool': '插入/删除空间',
  'Activate global connect tool': '连线工具',
  'Create start event': '开始事件',
  'Create intermediate/boundary event': '中间/边界事件',
  'Create end event': '结束事件',
  'Create gateway': '网关',
  'Create task': '任务',
  'Create data object reference': '数据对象',
  'Create data store reference': '数据存储',
  'Create expanded sub-process': '展开的子流程',
  'Create pool/participant': '池',
  'Create group': '分组',
  'Append end event': '追加结束事件',
  'Append gateway': '追加网关',
  'Append task': '追加任务',
  'Append intermediate/boundary event': '追加中间事件',
  'Append text annotation': '追加注释',
  'Change element': '更改类型',
  'Change type': '更改类型',
  'Connect using sequence/message flow or association': '连线',
  'Connect to other element': '连线',
  'Delete': '删除',
  'Add lane above': '上方添加泳道',
  'Add lane below': '下方添加泳道',
  'Divide into two lanes': '分为两条泳道',
  'Divide into three lanes': '分为三条泳道',
  'User task': '用户任务',
  'Service task': '服务任务',
  'Business rule task': '业务规则任务',
  'Script task': '脚本任务',
  'Exclusive gateway': '排他网关',
  'Parallel gateway': '并行网关',
  'Timer boundary event (interrupting)': '定时边界事件（中断）',
  'Timer boundary event (non-interrupting)': '定时边界事件（不中断）',
  'Timer intermediate catch event': '定时中间事件',
  'Search in diagram': '在图中搜索',
  'General': '常规',
  'Name': '名称',
  'ID': '编号',
  'Documentation': '说明',
  'Element documentation': '元素说明'
};

export default {
  translate: ['value', function translate(template, replacements) {
    const text = LABELS[template] || template;
    return text.replace(/{([^}]+)}/g, (_, key) => (replacements && key in replacements ? replacements[key] : `{${key}}`));
  }]
};
