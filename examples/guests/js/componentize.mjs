// Builds the JavaScript guest into a component with componentize-js's library API:
//   node componentize.mjs <toolchain dir> <source.js> <wit dir> <world> <out.wasm>
// <toolchain dir> holds node_modules/@bytecodealliance/componentize-js (installed by
// .ci/install-guest-toolchains into ~/.cache/taskhost/js). The http and fetch-event features are
// disabled: a task module imports no wasi:http.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [toolchain, sourcePath, witPath, worldName, out] = process.argv.slice(2);
if (!out) {
  console.error('usage: node componentize.mjs <toolchain dir> <source.js> <wit dir> <world> <out.wasm>');
  process.exit(2);
}
const entry = join(toolchain, 'node_modules/@bytecodealliance/componentize-js/src/componentize.js');
const { componentize } = await import(pathToFileURL(entry).href);
const { component } = await componentize({
  sourcePath,
  witPath,
  worldName,
  disableFeatures: ['http', 'fetch-event'],
});
await writeFile(out, component);
