/**
 * The local S3 stand-in: s3rver 3.7.1 run through its programmatic API (it is a Koa app), extended with
 * the conditional requests real S3 and MinIO honour and s3rver ignores (see s3rver/lib/controllers/object.js):
 *
 * - GET/HEAD with `If-Match`: 412 PreconditionFailed when the object has another ETag (404 when missing,
 *   from s3rver). Presigned source URLs are pinned this way (libs/storage withSourceUrl).
 * - PUT (and CopyObject, CompleteMultipartUpload) with `If-None-Match: *`: 412 when the key exists;
 *   with `If-Match: <etag>`: 412 when the ETag differs, 404 NoSuchKey when the object is missing.
 *   Any other If-None-Match value on a write: 501 NotImplemented, as S3 answers.
 *
 * Writes to one key (PUT, copy, multipart completion, DELETE) are serialised, so a condition is checked
 * and the write done with nothing in between: of concurrent `If-None-Match: *` PUTs exactly one wins.
 *
 * Run as a process by startS3: `node s3rver-main.ts '<json options>'` (see Options).
 */
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { IncomingMessage } from 'node:http';

interface Options {
  port: number;
  address: string;
  directory: string;
  /** Buckets created at start, each with the bucket config files given (CORS XML). */
  buckets: { name: string; configs: string[] }[];
}

interface Ctx {
  method: string;
  path: string;
  query: Record<string, unknown>;
  req: IncomingMessage;
  get(header: string): string;
}
type Middleware = (ctx: Ctx, next: () => Promise<void>) => Promise<void>;
interface Store {
  getBucket(bucket: string): Promise<unknown>;
  /** Throws ENOENT when the object does not exist. */
  getMetadata(bucket: string, key: string): Promise<{ etag: string }>;
}
interface S3rverApp {
  middleware: Middleware[];
  store: Store;
  run(): Promise<{ port: number }>;
}

const require = createRequire(import.meta.url);
const S3rver = require('s3rver') as new (o: object) => S3rverApp;
const S3Error = require('s3rver/lib/models/error.js') as new (code: string, message: string, detail?: Record<string, string>) => Error;

/** s3rver's object sub-resources (?acl, ?tagging, ...): requests on them are not object reads or writes. */
const SUBRESOURCES = ['acl', 'legal-hold', 'retention', 'select', 'tagging', 'torrent', 'uploads'];

/** `/bucket/key...` as s3rver's router reads it (path style; each part percent-decoded). */
function objectOf(path: string): { bucket: string; key: string } | null {
  const m = /^\/([^/]+)\/(.+)$/.exec(path);
  if (!m) return null;
  try {
    return { bucket: decodeURIComponent(m[1]!), key: decodeURIComponent(m[2]!) };
  } catch {
    return null;
  }
}

/** An entity-tag list (`"a", "b"`, `*`) against an ETag; quotes and weak prefixes are not significant. */
function matches(list: string, etag: string): boolean {
  const bare = (t: string) => t.trim().replace(/^W\//, '').replaceAll('"', '');
  return list.split(',').some((t) => t.trim() === '*' || bare(t) === bare(etag));
}

const failed = (condition: string) => new S3Error('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold', { Condition: condition });

function preconditions(store: Store): Middleware {
  const locks = new Map<string, Promise<void>>();
  /** Runs `fn` after every earlier write to `id` is done. */
  const serialised = async (id: string, fn: () => Promise<void>): Promise<void> => {
    const before = locks.get(id) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const chain = before.then(() => mine);
    locks.set(id, chain);
    await before;
    try {
      await fn();
    } finally {
      release();
      if (locks.get(id) === chain) locks.delete(id);
    }
  };
  const etagOf = async (bucket: string, key: string): Promise<string | null> => {
    try {
      return (await store.getMetadata(bucket, key)).etag;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  };

  return async (ctx, next) => {
    const target = objectOf(ctx.path);
    if (!target || SUBRESOURCES.some((r) => r in ctx.query) || !(await store.getBucket(target.bucket))) return next();
    const { bucket, key } = target;
    const ifMatch = ctx.get('if-match');
    const ifNoneMatch = ctx.get('if-none-match');

    if (ctx.method === 'GET' || ctx.method === 'HEAD') {
      if (ifMatch && !('uploadId' in ctx.query)) {
        const etag = await etagOf(bucket, key);
        // A missing object: s3rver answers NoSuchKey (404), as S3 does.
        if (etag !== null && !matches(ifMatch, etag)) throw failed('If-Match');
      }
      return next();
    }

    const write =
      (ctx.method === 'PUT' && !('uploadId' in ctx.query)) || (ctx.method === 'POST' && 'uploadId' in ctx.query) || (ctx.method === 'DELETE' && !('uploadId' in ctx.query));
    if (!write) return next();
    return serialised(`${bucket}/${key}`, async () => {
      if (ctx.method !== 'DELETE' && (ifMatch || ifNoneMatch)) {
        const refuse = async (err: Error) => {
          // Like S3, answer once the request is read: the client is not cut off mid-body.
          if (!ctx.req.readableEnded) {
            ctx.req.resume();
            await once(ctx.req, 'end');
          }
          throw err;
        };
        if (ifNoneMatch && ifNoneMatch.trim() !== '*') {
          await refuse(new S3Error('NotImplemented', 'A header you provided implies functionality that is not implemented', { Header: 'If-None-Match' }));
        }
        const etag = await etagOf(bucket, key);
        if (ifNoneMatch && etag !== null) await refuse(failed('If-None-Match'));
        if (ifMatch && etag === null) await refuse(new S3Error('NoSuchKey', 'The specified key does not exist.', { Key: key }));
        if (ifMatch && etag !== null && !matches(ifMatch, etag)) await refuse(failed('If-Match'));
      }
      await next();
    });
  };
}

const o = JSON.parse(process.argv[2] ?? '{}') as Options;
const app = new S3rver({
  port: o.port,
  address: o.address,
  directory: o.directory,
  silent: true,
  configureBuckets: o.buckets.map((b) => ({ name: b.name, configs: b.configs.map((path) => readFileSync(path)) })),
});
// After s3rver's logging, XML and vhost middleware, right before its router.
app.middleware.splice(app.middleware.length - 1, 0, preconditions(app.store));
const { port } = await app.run();
process.stdout.write(`s3rver listening on ${o.address}:${port}\n`);
