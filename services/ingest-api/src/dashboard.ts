/**
 * The operations dashboard's files, without a key (the page holds nothing secret; everything it shows
 * comes from the keyed routes): GET / is the page, GET /dashboard/{file} its modules, styles and icon
 * (services/ingest-api/dashboard/) and the libraries it uses, served from node_modules: Shaka Player
 * and uPlot, never from a CDN. A request names an entry of the table, never a path.
 */
import type Router from '@koa/router';
import { readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fileSender, type StaticFile as File } from './static-files.ts';

const require = createRequire(import.meta.url);
const packageDir = (name: string) => dirname(require.resolve(`${name}/package.json`));
const OWN = fileURLToPath(new URL('../dashboard/', import.meta.url));

const TYPES: Record<string, string> = { js: 'text/javascript', css: 'text/css', svg: 'image/svg+xml', html: 'text/html' };

/** The dashboard's own files, read from its folder once: flat names only. */
function ownFiles(): Record<string, File> {
  const files: Record<string, File> = {};
  for (const name of readdirSync(OWN)) {
    const ext = /^[a-z][\w-]*\.(js|css|svg)$/.exec(name)?.[1];
    if (ext) files[name] = { path: join(OWN, name), type: TYPES[ext]! };
  }
  return files;
}

export const DASHBOARD_FILES: Record<string, File> = {
  ...ownFiles(),
  'shaka-player.compiled.js': { path: join(packageDir('shaka-player'), 'dist/shaka-player.compiled.js'), type: 'text/javascript', vendor: true },
  'uPlot.iife.min.js': { path: join(packageDir('uplot'), 'dist/uPlot.iife.min.js'), type: 'text/javascript', vendor: true },
  'uPlot.min.css': { path: join(packageDir('uplot'), 'dist/uPlot.min.css'), type: 'text/css', vendor: true },
};
const PAGE: File = { path: join(OWN, 'index.html'), type: 'text/html' };

/**
 * Scripts and styles from this server only, no inline script or style. The player fetches manifests
 * and segments wherever a job's base_url points (any CDN), and plays them through MSE (blob:).
 */
export const DASHBOARD_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self' blob:; connect-src 'self' http: https:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/** Registers GET / and GET /dashboard/{file}; call it before the key check, they are public. */
export function registerDashboard(router: Router): void {
  // The page's URLs (a job id) stay here, even when an operator follows a link into Jaeger.
  const send = fileSender({ 'Content-Security-Policy': DASHBOARD_CSP, 'Referrer-Policy': 'same-origin' });
  router.get('/', (ctx) => send(ctx, PAGE));
  router.get('/dashboard/:file', async (ctx) => {
    const name = ctx.params['file'] ?? '';
    // Left without a body, the answer is the API's 404 problem.
    if (Object.hasOwn(DASHBOARD_FILES, name)) await send(ctx, DASHBOARD_FILES[name]!);
  });
}
