// ECharts for the HQ dashboard pages. Each chart container names its chart in data-chart;
// the figures come from the page's JSON block #hq-chart-data, rendered by the server with
// the tables below the charts, so a chart and its table always show the same numbers.
// Amounts arrive as decimal strings and are converted to numbers for plotting only.

import * as echarts from 'echarts/core';
import { BarChart, LineChart } from 'echarts/charts';
import { GridComponent, LegendComponent, TitleComponent, TooltipComponent } from 'echarts/components';
import { CanvasRenderer } from 'echarts/renderers';

echarts.use([BarChart, LineChart, GridComponent, LegendComponent, TitleComponent, TooltipComponent, CanvasRenderer]);

const COLORS = ['#0969da', '#cf222e', '#1a7f37', '#9a6700', '#8250df', '#bc4c00', '#57606a', '#0550ae'];
// Chart texts in the page's own font (CJK first), so widths measured for layout match the drawn glyphs.
const FONT = { fontFamily: getComputedStyle(document.body).fontFamily || 'sans-serif' };
// A plain legend wraps into as many rows as the card needs; fitLegend() then makes room below the grid.
const LEGEND = { type: 'plain', bottom: 4, left: 8, right: 8, itemGap: 12, textStyle: FONT };
const AXIS_ROOM = 44;
// Company names are long: show every one, broken over two lines.
const COMPANY_LABEL = { interval: 0, width: 84, overflow: 'break' };
// Below this chart width three or more company names no longer fit side by side. The
// arrears and waiver charts then turn their bars horizontal, one company per row. A name
// is cut to the width left of the bars, and the tooltip shows it whole.
const NARROW_CHART_PX = 560;
const NARROW_COMPANY_LABEL = { interval: 0, width: 92, overflow: 'truncate' };
const NARROW_GRID_LEFT = 104;
const isNarrow = (container) => container.clientWidth < NARROW_CHART_PX;

// A value axis along horizontal bars, its name centred beside the labels. Amounts of
// millions take half the width of a phone chart, so ECharts drops a tick label that would
// touch its neighbour.
const narrowValueAxis = (name, extra = {}) => ({
  type: 'value', name, nameLocation: 'middle', nameGap: 24, splitNumber: 3, axisLabel: { hideOverlap: true }, ...extra
});

// Axis, legend and series texts in the reader's language, rendered by the page as #hq-chart-labels.
const labelSource = document.getElementById('hq-chart-labels');
const LABELS = labelSource ? JSON.parse(labelSource.textContent) : {};

const num = (value) => (value === null || value === undefined ? null : Number(value));

function collection(data) {
  const companies = [...new Set(data.series.map((s) => s.company))];
  return {
    color: COLORS,
    tooltip: { trigger: 'axis', valueFormatter: (v) => (v === null ? '—' : `${v}%`) },
    legend: LEGEND,
    grid: { left: 48, right: 16, top: 36, bottom: 64 },
    xAxis: { type: 'category', data: data.days, boundaryGap: false },
    yAxis: { type: 'value', name: LABELS.rate_axis, min: 0, max: 100 },
    series: data.series.map((s) => ({
      name: s.name,
      type: 'line',
      showSymbol: false,
      connectNulls: false,
      color: COLORS[companies.indexOf(s.company) % COLORS.length],
      lineStyle: { type: s.season === 'previous' ? 'dashed' : 'solid', width: s.season === 'previous' ? 1.5 : 2.5 },
      data: s.rates.map(num)
    }))
  };
}

function arrears(data, narrow) {
  const names = data.rows.map((r) => r.name);
  const stack = (keys, labels, group) => Object.keys(keys).map((key) => ({
    name: `${group}·${labels[key]}`,
    type: 'bar',
    stack: group,
    data: data.rows.map((r) => num(r[key]))
  }));
  const series = [...stack(data.ages, data.ages, LABELS.age), ...stack(data.categories, data.categories, LABELS.category)];
  if (narrow) {
    return {
      color: COLORS,
      tooltip: { trigger: 'axis', axisPointer: { type: 'shadow' } },
      legend: LEGEND,
      grid: { left: NARROW_GRID_LEFT, right: 24, top: 16, bottom: 72 },
      xAxis: narrowValueAxis(LABELS.arrears_axis),
      yAxis: { type: 'category', data: names, inverse: true, axisLabel: NARROW_COMPANY_LABEL },
      series
    };
  }
  return {
    color: COLORS,
    tooltip: { trigger: 'axis' },
    legend: LEGEND,
    grid: { left: 72, right: 16, top: 36, bottom: 72 },
    xAxis: { type: 'category', data: names, axisLabel: COMPANY_LABEL },
    yAxis: { type: 'value', name: LABELS.arrears_axis },
    series
  };
}

function waivers(rows, narrow) {
  const names = rows.map((r) => (r.outlier ? `${r.name} ⚠` : r.name));
  const amount = {
    name: LABELS.waiver_amount,
    type: 'bar',
    data: rows.map((r) => ({ value: num(r.amount), itemStyle: r.outlier ? { color: '#cf222e' } : undefined }))
  };
  const count = { name: LABELS.waiver_count, type: 'line', data: rows.map((r) => r.count) };
  if (narrow) {
    // The amount axis runs along the bottom and the count axis along the top.
    return {
      color: COLORS,
      tooltip: { trigger: 'axis', axisPointer: { type: 'shadow' } },
      legend: { bottom: 0 },
      grid: { left: NARROW_GRID_LEFT, right: 24, top: 48, bottom: 72 },
      xAxis: [narrowValueAxis(LABELS.amount_axis), narrowValueAxis(LABELS.count_axis, { position: 'top', minInterval: 1 })],
      yAxis: { type: 'category', data: names, inverse: true, axisLabel: NARROW_COMPANY_LABEL },
      series: [amount, { ...count, xAxisIndex: 1 }]
    };
  }
  return {
    color: COLORS,
    tooltip: { trigger: 'axis' },
    legend: { bottom: 0 },
    grid: { left: 72, right: 56, top: 36, bottom: 72 },
    xAxis: { type: 'category', data: names, axisLabel: COMPANY_LABEL },
    yAxis: [{ type: 'value', name: LABELS.amount_axis }, { type: 'value', name: LABELS.count_axis, minInterval: 1 }],
    series: [amount, { ...count, yAxisIndex: 1 }]
  };
}

function processes(rows) {
  const shown = rows.filter((r) => r.open_age_hours !== null).slice(0, 10).reverse();
  return {
    color: ['#bc4c00', '#0969da'],
    tooltip: { trigger: 'axis', axisPointer: { type: 'shadow' } },
    title: shown.length ? undefined : { text: LABELS.no_open_steps, left: 'center', top: 'middle', textStyle: { color: '#57606a', fontSize: 14 } },
    legend: { bottom: 0 },
    grid: { left: 200, right: 24, top: 36, bottom: 56 },
    xAxis: { type: 'value', name: LABELS.hours },
    yAxis: { type: 'category', data: shown.map((r) => `${r.name} ${r.process}·${r.step}`), axisLabel: { width: 190, overflow: 'truncate' } },
    series: [
      { name: LABELS.open_wait, type: 'bar', data: shown.map((r) => num(r.open_age_hours)) },
      { name: LABELS.done_wait, type: 'bar', data: shown.map((r) => num(r.mean_wait_hours)) }
    ]
  };
}

function communities(rows) {
  return {
    color: COLORS,
    tooltip: { trigger: 'axis', valueFormatter: (v) => (v === null ? '—' : `${v}%`) },
    grid: { left: 48, right: 16, top: 24, bottom: 64 },
    xAxis: { type: 'category', data: rows.map((r) => r.name), axisLabel: { rotate: 30, interval: 0, hideOverlap: true } },
    yAxis: { type: 'value', name: LABELS.rate_axis, min: 0, max: 100 },
    series: [{ name: LABELS.rate, type: 'bar', data: rows.map((r) => num(r.rate)) }]
  };
}

const BUILDERS = { collection, arrears, waivers, processes, communities };

// Grow the chart's bottom margin to the wrapped legend's height plus the x-axis labels.
function fitLegend(chart) {
  const legend = chart.getModel().getComponent('legend');
  if (!legend) return;
  const height = chart.getViewOfComponentModel(legend).group.getBoundingRect().height;
  const bottom = Math.ceil(height) + 4 + AXIS_ROOM;
  if (chart.getOption().grid[0].bottom !== bottom) chart.setOption({ grid: { bottom } });
}

// The charts by name, for the browser tests that check the legend layout.
window.hqCharts = {};

function render() {
  const source = document.getElementById('hq-chart-data');
  if (!source) return;
  const data = JSON.parse(source.textContent);
  document.querySelectorAll('[data-chart]').forEach((container) => {
    const name = container.dataset.chart;
    const figures = name === 'communities' ? data : data[name];
    const locale = document.documentElement.lang.startsWith('zh') ? 'ZH' : 'EN';
    const chart = echarts.init(container, null, { renderer: 'canvas', locale });
    let narrow = isNarrow(container);
    const draw = () => {
      chart.setOption({ textStyle: FONT, animation: false, ...BUILDERS[name](figures, narrow) }, { notMerge: true });
      fitLegend(chart);
    };
    draw();
    window.addEventListener('resize', () => {
      chart.resize();
      if (isNarrow(container) !== narrow) {
        narrow = !narrow;
        draw();
      } else {
        fitLegend(chart);
      }
    });
    window.hqCharts[name] = chart;
    container.dataset.rendered = 'true';
  });
}

render();
