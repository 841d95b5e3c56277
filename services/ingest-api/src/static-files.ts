/**
 * Serving a fixed table of files (the docs page, the dashboard): each read once and kept, answered with
 * its own type, never sniffed, under the page's Content-Security-Policy. Libraries from node_modules
 * change only with their package, so a browser may keep them a day; the pages' own files are checked
 * each time.
 */
import type Koa from 'koa';
import { readFile } from 'node:fs/promises';

export interface StaticFile {
  path: string;
  type: string;
  /** A library's file from node_modules. */
  vendor?: boolean;
}

export function fileSender(headers: Record<string, string>): (ctx: Koa.Context, file: StaticFile) => Promise<void> {
  const cache = new Map<string, Buffer>();
  return async (ctx, file) => {
    let bytes = cache.get(file.path);
    if (!bytes) cache.set(file.path, (bytes = await readFile(file.path)));
    ctx.set({ 'Cache-Control': file.vendor ? 'public, max-age=86400' : 'no-cache', 'X-Content-Type-Options': 'nosniff', ...headers });
    ctx.type = file.type;
    ctx.body = bytes;
  };
}
