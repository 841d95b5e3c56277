/**
 * S3 helpers: plain functions over an S3Client, no wrapper state. Missing sources become InputErrors
 * (the job fails with a reason naming the object); other failures are retryable StorageErrors.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import {
  CreateBucketCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { InputError, mapLimit, MeshError, type ObjectRef } from '@mesh/common';
import { bytesMoved, inSpan, SpanKind } from '@mesh/telemetry';

/** An S3 call in its own CLIENT span, with the object and (once known) the bytes moved. */
function s3Span<T>(operation: string, ref: ObjectRef, fn: (done: (bytes: number, direction: 'download' | 'upload') => void) => Promise<T>): Promise<T> {
  return inSpan(`s3 ${operation}`, { kind: SpanKind.CLIENT, attributes: { 'rpc.system': 'aws-api', 'rpc.service': 'S3', 'rpc.method': operation, 'aws.s3.bucket': ref.bucket, 'aws.s3.key': ref.key } }, (span) =>
    fn((bytes, direction) => {
      span.setAttribute('mesh.bytes', bytes);
      bytesMoved.inc({ direction }, bytes);
    }),
  );
}

export function createS3(c: { endpoint?: string | undefined; region: string; credentials?: { accessKeyId: string; secretAccessKey: string } }): S3Client {
  return new S3Client({
    region: c.region,
    ...(c.endpoint ? { endpoint: c.endpoint, forcePathStyle: true } : {}),
    ...(c.credentials ? { credentials: c.credentials } : {}),
  });
}

export const s3url = (ref: ObjectRef): string => `s3://${ref.bucket}/${ref.key}`;

/** An ETag as S3 sends it (quoted), without its quotes: the MD5 hex of single-part uploads. */
const etagOf = (raw: string | undefined): string => (raw ?? '').replaceAll('"', '');

/**
 * Turns an SDK error into a readable one; a missing object or bucket on read is the input's fault. Reasons
 * reach job status, so they name the object's key, never the bucket (internal names stay in logs).
 */
function storageError(err: unknown, action: string, ref: ObjectRef, missingIsInput: boolean): Error {
  const name = err instanceof S3ServiceException ? err.name : err instanceof Error ? err.name : '';
  const status = err instanceof S3ServiceException ? err.$metadata.httpStatusCode : undefined;
  if (missingIsInput && (name === 'NoSuchBucket' || (name === 'NotFound' && !ref.key))) {
    return new InputError('SOURCE_NOT_FOUND', 'the input bucket does not exist', err);
  }
  if (missingIsInput && (name === 'NoSuchKey' || name === 'NotFound' || status === 404)) {
    return new InputError('SOURCE_NOT_FOUND', `object ${ref.key} does not exist`, err);
  }
  if (name === 'PreconditionFailed' || status === 412) return new PreconditionFailedError(ref, err);
  const detail = err instanceof Error ? err.message : String(err);
  return new MeshError('STORAGE_FAILED', `${action} ${ref.key || 'the bucket'} failed: ${detail}`, { cause: err });
}

/** A conditional write or read found the object other than expected: someone else wrote it meanwhile. */
export class PreconditionFailedError extends MeshError {
  override name = 'PreconditionFailedError';
  constructor(ref: ObjectRef, cause?: unknown) {
    super('STORAGE_FAILED', `${ref.key} changed meanwhile (precondition failed)`, { cause });
  }
}

export async function bucketExists(s3: S3Client, bucket: string): Promise<boolean> {
  try {
    await s3.send(new HeadBucketCommand({ Bucket: bucket }));
    return true;
  } catch (err) {
    const status = err instanceof S3ServiceException ? err.$metadata.httpStatusCode : undefined;
    if (status === 404) return false;
    throw storageError(err, 'head of bucket', { bucket, key: '' }, false);
  }
}

export async function ensureBuckets(s3: S3Client, names: string[]): Promise<void> {
  for (const Bucket of names) {
    try {
      await s3.send(new HeadBucketCommand({ Bucket }));
    } catch {
      try {
        await s3.send(new CreateBucketCommand({ Bucket }));
      } catch (err) {
        const name = err instanceof Error ? err.name : '';
        if (name !== 'BucketAlreadyOwnedByYou' && name !== 'BucketAlreadyExists') throw err;
      }
    }
  }
}

/** Streams an object to `path`; returns its size. */
export function downloadToFile(s3: S3Client, ref: ObjectRef, path: string, signal?: AbortSignal): Promise<number> {
  return s3Span('GetObject', ref, async (done) => {
    try {
      const res = await s3.send(new GetObjectCommand({ Bucket: ref.bucket, Key: ref.key }), signal ? { abortSignal: signal } : {});
      await pipeline(res.Body as Readable, createWriteStream(path), signal ? { signal } : {});
      const { size } = await stat(path);
      done(size, 'download');
      return size;
    } catch (err) {
      if (err instanceof MeshError) throw err;
      throw storageError(err, 'download of', ref, true);
    }
  });
}

export interface PutOptions {
  contentType?: string;
  metadata?: Record<string, string>;
  cacheControl?: string;
  signal?: AbortSignal;
}

/** Write only if the object is still the one with this ETag, or (`*`) only if there is none yet: PreconditionFailedError otherwise. */
export interface Condition {
  ifMatch?: string;
  ifNoneMatch?: '*';
}

/** Uploads a file (multipart when large); returns its size. */
export function uploadFile(s3: S3Client, ref: ObjectRef, path: string, o: PutOptions & Condition = {}): Promise<number> {
  return s3Span('PutObject', ref, async (done) => {
    const size = await uploadFileUntraced(s3, ref, path, o);
    done(size, 'upload');
    return size;
  });
}

async function uploadFileUntraced(s3: S3Client, ref: ObjectRef, path: string, o: PutOptions & Condition): Promise<number> {
  const size = (await stat(path)).size;
  const upload = new Upload({
    client: s3,
    params: {
      Bucket: ref.bucket,
      Key: ref.key,
      Body: createReadStream(path),
      ContentType: o.contentType ?? contentTypeFor(ref.key),
      Metadata: o.metadata,
      CacheControl: o.cacheControl,
      ...(o.ifNoneMatch ? { IfNoneMatch: o.ifNoneMatch } : {}),
      ...(o.ifMatch ? { IfMatch: `"${o.ifMatch}"` } : {}),
    },
    queueSize: 4,
    partSize: 8 * 1024 * 1024,
  });
  const stop = () => void upload.abort();
  o.signal?.addEventListener('abort', stop, { once: true });
  try {
    o.signal?.throwIfAborted();
    await upload.done();
  } catch (err) {
    throw storageError(err, 'upload to', ref, false);
  } finally {
    o.signal?.removeEventListener('abort', stop);
  }
  return size;
}

/** Writes a small object; returns its new ETag. With a condition, S3 decides atomically whether it may. */
export function putObject(s3: S3Client, ref: ObjectRef, body: string | Uint8Array, o: PutOptions & Condition = {}): Promise<string> {
  return s3Span('PutObject', ref, async (done) => {
    try {
      const res = await s3.send(
        new PutObjectCommand({
          Bucket: ref.bucket,
          Key: ref.key,
          Body: body,
          ContentType: o.contentType ?? contentTypeFor(ref.key),
          Metadata: o.metadata,
          CacheControl: o.cacheControl,
          ...(o.ifMatch ? { IfMatch: `"${o.ifMatch}"` } : {}),
          ...(o.ifNoneMatch ? { IfNoneMatch: o.ifNoneMatch } : {}),
        }),
        o.signal ? { abortSignal: o.signal } : {},
      );
      done(typeof body === 'string' ? Buffer.byteLength(body) : body.byteLength, 'upload');
      return etagOf(res.ETag);
    } catch (err) {
      throw storageError(err, 'upload to', ref, false);
    }
  });
}

/** The object's text, or null when it does not exist. */
export async function getText(s3: S3Client, ref: ObjectRef): Promise<string | null> {
  try {
    const res = await s3.send(new GetObjectCommand({ Bucket: ref.bucket, Key: ref.key }));
    return await res.Body!.transformToString('utf8');
  } catch (err) {
    const e = storageError(err, 'read of', ref, true);
    if (e instanceof InputError) return null;
    throw e;
  }
}

export interface ObjectHead {
  size: number;
  etag: string;
  /** Set where the bucket keeps versions. */
  versionId?: string;
  contentType?: string;
  cacheControl?: string;
  metadata: Record<string, string>;
}

export function headObject(s3: S3Client, ref: ObjectRef, o: { signal?: AbortSignal } = {}): Promise<ObjectHead | null> {
  return s3Span('HeadObject', ref, () => headObjectUntraced(s3, ref, o));
}

async function headObjectUntraced(s3: S3Client, ref: ObjectRef, o: { signal?: AbortSignal }): Promise<ObjectHead | null> {
  try {
    const res = await s3.send(new HeadObjectCommand({ Bucket: ref.bucket, Key: ref.key }), o.signal ? { abortSignal: o.signal } : {});
    return {
      size: res.ContentLength ?? 0,
      etag: etagOf(res.ETag),
      ...(res.VersionId && res.VersionId !== 'null' ? { versionId: res.VersionId } : {}),
      ...(res.ContentType ? { contentType: res.ContentType } : {}),
      ...(res.CacheControl ? { cacheControl: res.CacheControl } : {}),
      metadata: res.Metadata ?? {},
    };
  } catch (err) {
    const e = storageError(err, 'head of', ref, true);
    if (e instanceof InputError) return null;
    throw e;
  }
}

/** How long stages' presigned URLs to the source last: past the longest encode, FFmpeg seeks with it again. */
export const SOURCE_URL_TTL_SEC = 24 * 3600;

/**
 * Runs `fn` with a presigned URL to the client's object (FFmpeg reads it in place, with range requests),
 * then checks the object is still the one probed: same ETag. An object replaced or deleted meanwhile
 * fails the work with SOURCE_CHANGED / SOURCE_NOT_FOUND, also when `fn` failed because of it, so no
 * output ever mixes two versions of a source and the reason says what happened.
 */
/** The client's object, pinned to the bytes the downloader probed. */
export interface PinnedObject extends ObjectRef {
  etag: string;
  versionId?: string;
}

export async function withSourceUrl<T>(s3: S3Client, source: PinnedObject, fn: (url: string) => Promise<T>): Promise<T> {
  const url = await presignGet(s3, source, { expiresSec: SOURCE_URL_TTL_SEC });
  let result: T;
  try {
    result = await fn(url);
  } catch (err) {
    await assertSourceUnchanged(s3, source);
    throw err;
  }
  await assertSourceUnchanged(s3, source);
  return result;
}

async function assertSourceUnchanged(s3: S3Client, source: PinnedObject): Promise<void> {
  const now = await headObject(s3, source);
  if (!now) throw new InputError('SOURCE_NOT_FOUND', `object ${source.key} was deleted while it was being converted`);
  if (now.etag !== source.etag) {
    throw new InputError('SOURCE_CHANGED', `object ${source.key} changed while it was being converted (ETag ${source.etag} is now ${now.etag}); submit it again`);
  }
}

export async function listKeys(s3: S3Client, bucket: string, prefix: string): Promise<string[]> {
  return [...(await listObjects(s3, bucket, prefix)).keys()];
}

/** Every object under `prefix`: key -> size and ETag (without its quotes). */
export async function listObjects(s3: S3Client, bucket: string, prefix: string): Promise<Map<string, { size: number; etag: string }>> {
  const objects = new Map<string, { size: number; etag: string }>();
  let token: string | undefined;
  do {
    const res = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
    for (const o of res.Contents ?? []) if (o.Key) objects.set(o.Key, { size: o.Size ?? 0, etag: etagOf(o.ETag) });
    token = res.IsTruncated ? res.NextContinuationToken : undefined;
  } while (token);
  return objects;
}

/**
 * Writes each file once: `dir/<file>` goes to `keyOf(file)` unless an object is there already. Segments
 * are immutable once written (they are served with a year of caching): a repeated packaging of the same
 * job attempt makes the same media segments, and init segments that differ only in their creation time,
 * so what is there stays. A file is uploaded only if still absent (If-None-Match: *), so two packagers
 * racing on one folder cannot overwrite each other either. Returns what was uploaded and kept.
 */
export async function uploadOnce(
  s3: S3Client,
  dir: string,
  files: string[],
  to: { bucket: string; prefix: string; keyOf: (file: string) => string },
  o: PutOptions & { concurrency?: number } = {},
): Promise<{ uploaded: string[]; kept: string[] }> {
  const there = await listObjects(s3, to.bucket, to.prefix).catch((err: unknown) => {
    throw storageError(err, 'listing of', { bucket: to.bucket, key: to.prefix }, false);
  });
  const uploaded: string[] = [];
  const kept: string[] = [];
  await mapLimit(files, o.concurrency ?? 8, async (file) => {
    const ref = { bucket: to.bucket, key: to.keyOf(file) };
    if (there.has(ref.key)) {
      kept.push(file);
      return;
    }
    try {
      await uploadFile(s3, ref, join(dir, file), { ...o, ifNoneMatch: '*' });
      uploaded.push(file);
    } catch (err) {
      if (!(err instanceof PreconditionFailedError)) throw err;
      kept.push(file);
    }
  });
  return { uploaded, kept };
}

export async function deletePrefix(s3: S3Client, bucket: string, prefix: string): Promise<number> {
  const keys = await listKeys(s3, bucket, prefix);
  for (let i = 0; i < keys.length; i += 1000) {
    await s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys.slice(i, i + 1000).map((Key) => ({ Key })) } }));
  }
  return keys.length;
}

export async function presignPut(s3: S3Client, ref: ObjectRef, o: { expiresSec: number; contentType?: string }): Promise<string> {
  return getSignedUrl(s3, new PutObjectCommand({ Bucket: ref.bucket, Key: ref.key, ...(o.contentType ? { ContentType: o.contentType } : {}) }), { expiresIn: o.expiresSec });
}

export async function presignGet(s3: S3Client, ref: ObjectRef, o: { expiresSec: number }): Promise<string> {
  return getSignedUrl(s3, new GetObjectCommand({ Bucket: ref.bucket, Key: ref.key }), { expiresIn: o.expiresSec });
}

const TYPES: [RegExp, string][] = [
  [/\.mpd$/i, 'application/dash+xml'],
  [/\.m4s$/i, 'video/iso.segment'],
  [/\.(mp4|m4v)$/i, 'video/mp4'],
  [/\.m4a$/i, 'audio/mp4'],
  [/\.jpe?g$/i, 'image/jpeg'],
  [/\.json$/i, 'application/json'],
];

export function contentTypeFor(key: string): string {
  return TYPES.find(([re]) => re.test(key))?.[1] ?? 'application/octet-stream';
}

/** Path-style URL of an object, each key segment encoded. */
export function publicUrl(endpoint: string, ref: ObjectRef): string {
  return `${endpoint.replace(/\/+$/, '')}/${ref.bucket}/${ref.key.split('/').map(encodeURIComponent).join('/')}`;
}
