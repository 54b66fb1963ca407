// Build the browser bundles into app/static/dist/: designer, instance viewer, DMN editor and
// the HQ dashboard charts (ECharts).
// Each entry gets its .js and .css; fonts go to dist/assets/. Run with `npm run build`.
//
// The app's Content-Security-Policy rejects inline style attributes, so the plugin below
// rewrites the few library strings that create elements with a style attribute: the
// properties panel's two containers (their styles move to heatflow.css), the align and
// distribute icons (SVG presentation attributes instead of style) and the decision table's
// drag image (a class instead of style). The build fails when a pattern is no longer found,
// so a library upgrade cannot silently bring the violations back. The dmn-js watermark is
// licensed "must not be changed"; its style attributes are allowed by hash instead (see
// app/processes/design_routes.py).
import * as esbuild from 'esbuild';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));

function styleToAttributes(source) {
  return source.replace(/style="([^"]*)"/g, (_, css) => css.split(';')
    .map((rule) => rule.trim())
    .filter(Boolean)
    .map((rule) => {
      const [name, ...value] = rule.split(':');
      return `${name.trim()}="${value.join(':').trim()}"`;
    })
    .join(' '));
}

const PATCHES = [
  {
    file: 'bpmn-js-properties-panel/dist/index.esm.js',
    apply: (source) => source
      .replace('<div style="height: 100%" tabindex="-1" class="bio-properties-panel-container">', '<div tabindex="-1" class="bio-properties-panel-container">')
      .replace('<div style="flex: none; height: auto" class="bio-properties-panel', '<div class="bio-properties-panel')
  },
  { file: 'bpmn-js/lib/features/align-elements/AlignElementsIcons.js', apply: styleToAttributes },
  { file: 'bpmn-js/lib/features/distribute-elements/DistributeElementsIcons.js', apply: styleToAttributes },
  {
    file: 'dmn-js-decision-table/lib/features/drag-and-drop/DragAndDrop.js',
    apply: (source) => source.replace(/domify\(`<span style="[^"]*"><\/span>`\)/, 'domify(\'<span class="hf-drag-image"></span>\')')
  }
];

const noInlineStyles = {
  name: 'no-inline-styles',
  setup(build) {
    PATCHES.forEach(({ file, apply }) => {
      const filter = new RegExp(`node_modules[\\\\/]${file.replace(/[.*+?^${}()|[\]\\/]/g, (c) => (c === '/' ? '[\\\\/]' : `\\${c}`))}$`);
      build.onLoad({ filter }, async (args) => {
        const source = await readFile(args.path, 'utf8');
        const patched = apply(source);
        if (patched === source || /style="/.test(patched.replace(/\s+\*.*style=".*$/gm, ''))) {
          throw new Error(`${file} no longer matches the inline-style patch; update build.mjs for this library version.`);
        }
        return { contents: patched, loader: 'js' };
      });
    });
  }
};

await esbuild.build({
  absWorkingDir: here,
  entryPoints: {
    designer: 'src/designer.js',
    viewer: 'src/viewer.js',
    'dmn-editor': 'src/dmn-editor.js',
    'hq-dashboard': 'src/hq-dashboard.js'
  },
  outdir: path.join(here, '..', 'app', 'static', 'dist'),
  bundle: true,
  minify: true,
  format: 'iife',
  target: ['es2020'],
  jsx: 'automatic',
  jsxImportSource: '@bpmn-io/properties-panel/preact',
  loader: { '.woff': 'file', '.woff2': 'file', '.ttf': 'file', '.eot': 'file', '.svg': 'file' },
  assetNames: 'assets/[name]-[hash]',
  legalComments: 'linked',
  plugins: [noInlineStyles],
  logLevel: 'warning'
});
