/**
 * Getting a local file to the mesh: the file checked (exists, a regular file, not empty), its
 * Content-Type guessed from its extension, and a streamed PUT to the presigned URL of POST /uploads that
 * reports the bytes sent. node:http rather than fetch: S3 wants a Content-Length on a presigned PUT, and a
 * streamed fetch body is sent chunked.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { extname } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { networkReason, UnreachableError, UsageError } from './errors.ts';

const TYPES: Record<string, string> = {
  '.mp4': 'video/mp4',
  '.m4v': 'video/x-m4v',
  '.mov': 'video/quicktime',
  '.mkv': 'video/x-matroska',
  '.webm': 'video/webm',
  '.avi': 'video/x-msvideo',
  '.ts': 'video/mp2t',
  '.mts': 'video/mp2t',
  '.m2ts': 'video/mp2t',
  '.mpg': 'video/mpeg',
  '.mpeg': 'video/mpeg',
  '.3gp': 'video/3gpp',
  '.flv': 'video/x-flv',
  '.wmv': 'video/x-ms-wmv',
  '.ogv': 'video/ogg',
};

/** The Content-Type an upload of `path` declares; the mesh probes the bytes anyway, so a guess is enough. */
export function contentTypeOf(path: string): string {
  return TYPES[extname(path).toLowerCase()] ?? 'application/octet-stream';
}

/** The file's size, or a UsageError saying why it cannot be uploaded. */
export async function checkFile(path: string): Promise<number> {
  const info = await stat(path).catch((err: NodeJS.ErrnoException) => {
    throw new UsageError(err.code === 'ENOENT' ? `no such file: ${path}` : err.code === 'EACCES' ? `cannot read ${path}: permission denied` : `cannot read ${path}: ${err.message}`);
  });
  if (info.isDirectory()) throw new UsageError(`${path} is a directory, not a video file`);
  if (!info.isFile()) throw new UsageError(`${path} is not a regular file`);
  if (info.size === 0) throw new UsageError(`${path} is empty`);
  return info.size;
}

/** PUTs the file at `path` (`size` bytes) to `url` with `headers`, calling `onBytes` with the bytes sent so far. */
export async function putFile(url: string, path: string, o: { size: number; headers: Record<string, string>; onBytes?: (sent: number) => void; signal?: AbortSignal | undefined }): Promise<void> {
  const target = new URL(url);
  const request = target.protocol === 'https:' ? httpsRequest : httpRequest;
  const req = request(target, { method: 'PUT', headers: { ...o.headers, 'Content-Length': String(o.size) }, ...(o.signal ? { signal: o.signal } : {}) });
  const answered = new Promise<IncomingMessage>((resolve, reject) => req.once('response', resolve).once('error', reject));
  // Unhandled until awaited below; the pipeline reports the same error.
  answered.catch(() => undefined);
  let sent = 0;
  const count = new Transform({
    transform(chunk: Buffer, _enc, done) {
      sent += chunk.length;
      o.onBytes?.(sent);
      done(null, chunk);
    },
  });
  // Where the upload goes is S3 (or a CDN in front): said so, without the signed query.
  const where = `${target.protocol}//${target.host}`;
  try {
    await pipeline(createReadStream(path), count, req);
  } catch (err) {
    if (o.signal?.aborted) throw err;
    // The storage may have answered (and closed) before taking every byte: its answer says why.
    const res = await Promise.race([answered, new Promise<null>((r) => setTimeout(r, 1000, null))]).catch(() => null);
    if (!res) throw new UnreachableError(`the upload to ${where} failed: ${networkReason(err)}`);
    throw await refusal(res, where);
  }
  const res = await answered.catch((err: unknown) => {
    if (o.signal?.aborted) throw err;
    throw new UnreachableError(`the upload to ${where} failed: ${networkReason(err)}`);
  });
  if (res.statusCode === undefined || res.statusCode >= 300) throw await refusal(res, where);
  res.resume();
}

/** An S3 error answer as one line: its Code and Message when it has them. */
async function refusal(res: IncomingMessage, where: string): Promise<UnreachableError> {
  let text = '';
  for await (const chunk of res) if (text.length < 4096) text += String(chunk);
  const code = /<Code>([^<]*)<\/Code>/.exec(text)?.[1];
  const message = /<Message>([^<]*)<\/Message>/.exec(text)?.[1];
  const why = [code, message].filter(Boolean).join(': ') || text.trim().slice(0, 200) || 'no reason given';
  return new UnreachableError(`the storage at ${where} refused the upload (HTTP ${res.statusCode}): ${why}`);
}
