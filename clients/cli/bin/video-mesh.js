#!/usr/bin/env node
// The installed entry point. The client is TypeScript run by Node's type stripping (no build step);
// Node strips types only outside node_modules, so when the package is installed (inside node_modules)
// this registers a hook that strips this package's own .ts files with Node's stripTypeScriptTypes.
// Plain JavaScript on purpose: it must run (and say what is missing) on any Node.
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 22) || (major === 24 && minor < 15) || major === 23) {
  process.stderr.write(`error: video-mesh needs Node.js 22.22.2+ or 24.15+ (this is ${process.version})\n`);
  process.exit(2);
}
const root = new URL('../', import.meta.url).href;
if (root.includes('/node_modules/')) {
  const { registerHooks, stripTypeScriptTypes } = await import('node:module');
  const { readFileSync } = await import('node:fs');
  // stripTypeScriptTypes warns that it is experimental on every run: not this one warning.
  const emitWarning = process.emitWarning;
  process.emitWarning = (warning, ...rest) => {
    if (String(warning).includes('stripTypeScriptTypes')) return;
    emitWarning.call(process, warning, ...rest);
  };
  registerHooks({
    load(url, context, nextLoad) {
      const own = url.startsWith(root) && !url.slice(root.length).includes('node_modules/');
      if (!own || !url.endsWith('.ts')) return nextLoad(url, context);
      return { format: 'module', source: stripTypeScriptTypes(readFileSync(new URL(url), 'utf8')), shortCircuit: true };
    },
  });
}
await import('../src/main.ts');
