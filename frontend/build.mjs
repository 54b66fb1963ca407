// Build the browser bundles into app/static/dist/: designer, instance viewer and DMN editor.
// Each entry gets its .js and .css; fonts go to dist/assets/. Run with `npm run build`.
import * as esbuild from 'esbuild';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));

await esbuild.build({
  absWorkingDir: here,
  entryPoints: {
    designer: 'src/designer.js',
    viewer: 'src/viewer.js',
    'dmn-editor': 'src/dmn-editor.js'
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
  logLevel: 'info'
});
