/**
 * The API document and its page, without a key: GET /openapi.json, and GET /docs, Swagger UI served from
 * this server (swagger-ui-dist in node_modules and static/), never from a CDN. A request names an entry
 * of FILES, never a path, so no other file can be reached.
 */
import type Router from '@koa/router';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fileSender, type StaticFile as File } from './static-files.ts';

const SWAGGER_UI = dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'));
const STATIC = fileURLToPath(new URL('../static/', import.meta.url));

const PAGE: File = { path: join(STATIC, 'docs.html'), type: 'text/html' };
const vendor = (name: string, type: string): File => ({ path: join(SWAGGER_UI, name), type, vendor: true });
const FILES: Record<string, File> = {
  'swagger-ui.css': vendor('swagger-ui.css', 'text/css'),
  'index.css': vendor('index.css', 'text/css'),
  'swagger-ui-bundle.js': vendor('swagger-ui-bundle.js', 'text/javascript'),
  'favicon-32x32.png': vendor('favicon-32x32.png', 'image/png'),
  'favicon-16x16.png': vendor('favicon-16x16.png', 'image/png'),
  'init.js': { path: join(STATIC, 'init.js'), type: 'text/javascript' },
};

/**
 * The page loads scripts, styles and images from this server only, and "Try it out" can reach this
 * server only. Inline styles are allowed: Swagger UI sets some on its elements.
 */
export const DOCS_CSP = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/** Registers GET /openapi.json and the docs page; call it before the key check, they are public. */
export function registerDocs(router: Router, document: object): void {
  const body = JSON.stringify(document);
  const send = fileSender({ 'Content-Security-Policy': DOCS_CSP });

  router.get('/openapi.json', (ctx) => {
    ctx.set('Cache-Control', 'no-cache');
    ctx.type = 'application/json';
    ctx.body = body;
  });
  router.get('/docs', (ctx) => send(ctx, PAGE));
  router.get('/docs/:file', async (ctx) => {
    const name = ctx.params['file'] ?? '';
    // Left without a body, the answer is the API's 404 problem.
    if (Object.hasOwn(FILES, name)) await send(ctx, FILES[name]!);
  });
}
