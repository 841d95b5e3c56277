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

/** S3_TIMEOUT_MS by default: how long a call may wait for a connection, and for the server to answer or send more. */
export const DEFAULT_S3_TIMEOUT_MS = 30_000;

export function createS3(c: { endpoint?: string | undefined; region: string; credentials?: { accessKeyId: string; secretAccessKey: string }; timeoutMs?: number }): S3Client {
  const timeoutMs = c.timeoutMs ?? DEFAULT_S3_TIMEOUT_MS;
  return new S3Client({
    region: c.region,
    ...(c.endpoint ? { endpoint: c.endpoint, forcePathStyle: true } : {}),
    ...(c.credentials ? { credentials: c.credentials } : {}),
    // The SDK's NodeHttpHandler waits forever by default: an endpoint that accepts and never answers
    // would hold the work until ack_wait, and again at every redelivery. A connection not made, or a
    // socket silent, for timeoutMs fails the attempt; the SDK's standard retry mode (3 attempts, backoff)
    // then applies as before. Not requestTimeout: in this SDK it bounds a whole transfer (a multi-GB
    // rendition may take minutes) and only warns unless told to throw.
    requestHandler: { connectionTimeout: timeoutMs, socketTimeout: timeoutMs },
  });
}

export const s3url = (ref: ObjectRef): string => `s3://${ref.bucket}/${ref.key}`;

/** An ETag as S3 sends it (quoted), without its quotes: the MD5 hex of single-part uploads. */
const etagOf = (raw: string | undefined): string => (raw ?? '').replaceAll('"', '');

/** Abort support for a single SDK call. */
const sendOptions = (signal: AbortSignal | undefined) => (signal ? { abortSignal: signal } : {});

const statusOf = (err: unknown): number | undefined => (err instanceof S3ServiceException ? err.$metadata.httpStatusCode : undefined);

/**
 * Turns an SDK error into a readable one; a missing object or bucket on read is the input's fault. Reasons
 * reach job status, so they name the object's key, never the bucket (internal names stay in logs).
 */
function storageError(err: unknown, action: string, ref: ObjectRef, missingIsInput: boolean): Error {
  if (err instanceof MeshError) return err;
  const name = err instanceof S3ServiceException ? err.name : err instanceof Error ? err.name : '';
  const status = statusOf(err);
  if (missingIsInput && (name === 'NoSuchBucket' || (name === 'NotFound' && !ref.key))) {
    return new InputError('SOURCE_NOT_FOUND', 'the input bucket does not exist', err);
  }
  if (missingIsInput && (name === 'NoSuchKey' || name === 'NotFound' || status === 404)) {
    return new InputError('SOURCE_NOT_FOUND', `object ${ref.key} does not exist`, err);
  }
  const detail = err instanceof Error ? err.message : String(err);
  // "@smithy/node-http-handler - the request socket timed out after 300 ms of inactivity (configured by client requestHandler)."
  const readable = name === 'TimeoutError' ? `${detail.replace(/^@smithy\/[\w-]+ - /, '').replace(/ \(configured by client requestHandler\)\.?$/, '')} (S3_TIMEOUT_MS)` : detail;
  return new MeshError('STORAGE_FAILED', `${action} ${ref.key || 'the bucket'} failed: ${readable}`, { cause: err });
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
      const res = await s3.send(new GetObjectCommand({ Bucket: ref.bucket, Key: ref.key }), sendOptions(signal));
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

/** Uploads a file (multipart when large); returns its size. */
export function uploadFile(s3: S3Client, ref: ObjectRef, path: string, o: ConditionalPut = {}): Promise<number> {
  return s3Span('PutObject', ref, async (done) => {
    const size = await uploadFileUntraced(s3, ref, path, o);
    done(size, 'upload');
    return size;
  });
}

async function uploadFileUntraced(s3: S3Client, ref: ObjectRef, path: string, o: ConditionalPut): Promise<number> {
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
      ...(o.ifMatch ? { IfMatch: `"${o.ifMatch.replaceAll('"', '')}"` } : {}),
    },
    queueSize: 4,
    partSize: 8 * 1024 * 1024,
  });
  // Upload takes no signal: abort it (and its multipart upload) when ours fires.
  const abort = () => void upload.abort().catch(() => undefined);
  o.signal?.addEventListener('abort', abort, { once: true });
  try {
    o.signal?.throwIfAborted();
    await upload.done();
  } catch (err) {
    const status = statusOf(err);
    if (o.ifNoneMatch && (status === 412 || status === 409)) throw new PreconditionFailedError(ref, 'an object with that key exists already', err);
    if (o.ifMatch && (status === 412 || status === 409 || status === 404)) throw new PreconditionFailedError(ref, `the object is no longer ETag ${o.ifMatch}`, err);
    throw storageError(err, 'upload to', ref, false);
  } finally {
    o.signal?.removeEventListener('abort', abort);
  }
  return size;
}

/**
 * A conditional write found the object not as the writer expected: it exists (`ifNoneMatch: '*'`), has
 * another ETag or is gone (`ifMatch`), or another conditional write to it was in progress. Read it again
 * and decide anew; nothing was written.
 */
export class PreconditionFailedError extends MeshError {
  override name = 'PreconditionFailedError';
  readonly ref: ObjectRef;
  constructor(ref: ObjectRef, why: string, cause: unknown) {
    super('WRITE_CONFLICT', `write to ${ref.key} refused: ${why}`, { cause });
    this.ref = ref;
  }
}

export interface ConditionalPut extends PutOptions {
  /** Write only over this version of the object (its ETag, quoted or not). */
  ifMatch?: string;
  /** '*': write only if no object has the key. */
  ifNoneMatch?: '*';
}

/** Writes `body`; returns the new object's ETag (without its quotes). Conditional writes fail with PreconditionFailedError. */
export function putObject(s3: S3Client, ref: ObjectRef, body: string | Uint8Array, o: ConditionalPut = {}): Promise<string> {
  return s3Span('PutObject', ref, async (done) => {
    const ifMatch = o.ifMatch === undefined ? undefined : quotedEtag(o.ifMatch);
    try {
      const res = await s3.send(
        new PutObjectCommand({
          Bucket: ref.bucket,
          Key: ref.key,
          Body: body,
          ContentType: o.contentType ?? contentTypeFor(ref.key),
          Metadata: o.metadata,
          CacheControl: o.cacheControl,
          ...(ifMatch ? { IfMatch: ifMatch } : {}),
          ...(o.ifNoneMatch ? { IfNoneMatch: o.ifNoneMatch } : {}),
        }),
        sendOptions(o.signal),
      );
      done(typeof body === 'string' ? Buffer.byteLength(body) : body.byteLength, 'upload');
      return etagOf(res.ETag);
    } catch (err) {
      const status = statusOf(err);
      if (o.ifNoneMatch && status === 412) throw new PreconditionFailedError(ref, 'an object with that key exists already', err);
      if (ifMatch && status === 412) throw new PreconditionFailedError(ref, `the object is no longer ETag ${etagOf(ifMatch)}`, err);
      if (ifMatch && status === 404) throw new PreconditionFailedError(ref, `the object (ETag ${etagOf(ifMatch)}) does not exist any more`, err);
      // S3 answers 409 when another conditional write to the key is in flight: the same decision applies.
      if ((ifMatch || o.ifNoneMatch) && status === 409) throw new PreconditionFailedError(ref, 'another conditional write to it was in progress', err);
      throw storageError(err, 'upload to', ref, false);
    }
  });
}

/** An ETag as HTTP wants it in If-Match: quoted. */
const quotedEtag = (etag: string): string => `"${etagOf(etag)}"`;

/** The object's text, or null when it does not exist. */
export async function getText(s3: S3Client, ref: ObjectRef, o: { signal?: AbortSignal } = {}): Promise<string | null> {
  const bytes = await getBytes(s3, ref, o);
  return bytes && Buffer.from(bytes).toString('utf8');
}

/** The object's bytes (for small objects: a thumbnail, a manifest), or null when it does not exist. */
export async function getBytes(s3: S3Client, ref: ObjectRef, o: { signal?: AbortSignal } = {}): Promise<Uint8Array | null> {
  try {
    const res = await s3.send(new GetObjectCommand({ Bucket: ref.bucket, Key: ref.key }), sendOptions(o.signal));
    return await res.Body!.transformToByteArray();
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

export function headObject(s3: S3Client, ref: ObjectRef & { versionId?: string | undefined }, o: { signal?: AbortSignal } = {}): Promise<ObjectHead | null> {
  return s3Span('HeadObject', ref, () => headObjectUntraced(s3, ref, o));
}

async function headObjectUntraced(s3: S3Client, ref: ObjectRef & { versionId?: string | undefined }, o: { signal?: AbortSignal }): Promise<ObjectHead | null> {
  try {
    const res = await s3.send(new HeadObjectCommand({ Bucket: ref.bucket, Key: ref.key, ...(ref.versionId ? { VersionId: ref.versionId } : {}) }), sendOptions(o.signal));
    return {
      size: res.ContentLength ?? 0,
      etag: etagOf(res.ETag),
      // Set when the bucket keeps versions: pin reads to it (PinnedSource).
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
 * The client's object as it was probed: its ETag, and its version when the bucket keeps versions. Defined
 * here, not taken from the message schemas, so what a read is pinned to does not move with them.
 */
export interface PinnedSource {
  bucket: string;
  key: string;
  etag: string;
  versionId?: string | undefined;
}

/** What a reader of the presigned URL must send with every request (FFmpeg: `-headers`). */
export interface SourcePin {
  /** The If-Match header value, the probed ETag quoted: S3 answers 412 once the object is another. */
  ifMatch: string;
}

/**
 * Runs `fn` with a presigned URL to the client's object (FFmpeg reads it in place, with range requests),
 * pinned to the probed version: the URL is signed with `If-Match: "<etag>"` (and the version id, when
 * known), which the reader sends with every request, so a replaced object fails the first request after
 * the swap (412) instead of feeding another video into the work. A 412 becomes SOURCE_CHANGED.
 *
 * After `fn`, the object is checked once more (same ETag; the pinned version when there is one): an object
 * replaced or deleted meanwhile fails the work with SOURCE_CHANGED / SOURCE_NOT_FOUND, also when `fn` failed
 * because of it, so no output ever mixes two versions of a source and the reason says what happened.
 */
export async function withSourceUrl<T>(s3: S3Client, source: PinnedSource, fn: (url: string, pin: SourcePin) => Promise<T>): Promise<T> {
  const pin = { ifMatch: quotedEtag(source.etag) };
  const url = await presignGet(s3, source, { expiresSec: SOURCE_URL_TTL_SEC, ifMatch: pin.ifMatch, ...(source.versionId ? { versionId: source.versionId } : {}) });
  let result: T;
  try {
    result = await fn(url, pin);
  } catch (err) {
    await assertSourceUnchanged(s3, source, err);
    throw err;
  }
  await assertSourceUnchanged(s3, source);
  return result;
}

/** S3 refused a pinned read: FFmpeg says "HTTP error 412 Precondition Failed", the SDK gives the status. Causes are looked through. */
function refusedByPin(err: unknown): boolean {
  for (let e = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    const text = `${e.message} ${(e as { stderrTail?: string }).stderrTail ?? ''}`;
    if (statusOf(e) === 412 || /\b412 Precondition Failed|PreconditionFailed/i.test(text)) return true;
  }
  return false;
}

/** Throws SOURCE_NOT_FOUND / SOURCE_CHANGED (caused by `failure`, what the reader ran into, if any) unless the object is still the one pinned. */
async function assertSourceUnchanged(s3: S3Client, source: PinnedSource, failure?: unknown): Promise<void> {
  const now = await headObject(s3, source);
  if (!now) throw new InputError('SOURCE_NOT_FOUND', `object ${source.key} was deleted while it was being converted`, failure);
  const refused = failure !== undefined && refusedByPin(failure);
  if (now.etag !== source.etag || refused) {
    const was = `ETag ${source.etag} is now ${now.etag}`;
    const how = refused ? `S3 refused to read it as probed (412 Precondition Failed${now.etag === source.etag ? '' : `; ${was}`})` : was;
    throw new InputError('SOURCE_CHANGED', `object ${source.key} changed while it was being converted (${how}); submit it again`, failure);
  }
}

export async function listKeys(s3: S3Client, bucket: string, prefix: string, o: { signal?: AbortSignal } = {}): Promise<string[]> {
  return [...(await listObjects(s3, bucket, prefix, o)).keys()];
}

/** Every object under `prefix`: key -> size and ETag (without its quotes). */
export async function listObjects(s3: S3Client, bucket: string, prefix: string, o: { signal?: AbortSignal } = {}): Promise<Map<string, { size: number; etag: string }>> {
  const objects = new Map<string, { size: number; etag: string }>();
  let token: string | undefined;
  try {
    do {
      const res = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }), sendOptions(o.signal));
      for (const o of res.Contents ?? []) if (o.Key) objects.set(o.Key, { size: o.Size ?? 0, etag: etagOf(o.ETag) });
      token = res.IsTruncated ? res.NextContinuationToken : undefined;
    } while (token);
  } catch (err) {
    throw storageError(err, 'listing of', { bucket, key: prefix }, false);
  }
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
  const there = await listObjects(s3, to.bucket, to.prefix, o);
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

export async function deletePrefix(s3: S3Client, bucket: string, prefix: string, o: { signal?: AbortSignal } = {}): Promise<number> {
  const keys = await listKeys(s3, bucket, prefix, o);
  for (let i = 0; i < keys.length; i += 1000) {
    await s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys.slice(i, i + 1000).map((Key) => ({ Key })) } }), sendOptions(o.signal));
  }
  return keys.length;
}

export async function presignPut(s3: S3Client, ref: ObjectRef, o: { expiresSec: number; contentType?: string }): Promise<string> {
  return getSignedUrl(s3, new PutObjectCommand({ Bucket: ref.bucket, Key: ref.key, ...(o.contentType ? { ContentType: o.contentType } : {}) }), { expiresIn: o.expiresSec });
}

/**
 * A GET URL that works without credentials. With `ifMatch` (a quoted ETag) the header is signed: the reader
 * must send exactly `If-Match: <ifMatch>`, and S3 answers 412 once the object has another ETag. With
 * `versionId` it reads that version only.
 */
export async function presignGet(s3: S3Client, ref: ObjectRef, o: { expiresSec: number; ifMatch?: string; versionId?: string }): Promise<string> {
  const command = new GetObjectCommand({ Bucket: ref.bucket, Key: ref.key, ...(o.ifMatch ? { IfMatch: o.ifMatch } : {}), ...(o.versionId ? { VersionId: o.versionId } : {}) });
  return getSignedUrl(s3, command, { expiresIn: o.expiresSec });
}

const TYPES: [RegExp, string][] = [
  [/\.mpd$/i, 'application/dash+xml'],
  [/\.m3u8$/i, 'application/vnd.apple.mpegurl'],
  [/\.m4s$/i, 'video/iso.segment'],
  [/\.(mp4|m4v)$/i, 'video/mp4'],
  [/\.m4a$/i, 'audio/mp4'],
  [/\.jpe?g$/i, 'image/jpeg'],
  [/\.json$/i, 'application/json'],
  [/\.vtt$/i, 'text/vtt'],
];

export function contentTypeFor(key: string): string {
  return TYPES.find(([re]) => re.test(key))?.[1] ?? 'application/octet-stream';
}

/**
 * Where clients fetch what the mesh writes: S3_PUBLIC_URL when set (a CDN, or MinIO's outside address),
 * else the S3 endpoint, else AWS's regional one. The uploader's manifest URLs and the API's links agree.
 */
export function publicEndpoint(publicBaseUrl: string | undefined, s3: { endpoint?: string | undefined; region: string }): string {
  return publicBaseUrl ?? s3.endpoint ?? `https://s3.${s3.region}.amazonaws.com`;
}

/** Path-style URL of an object, each key segment encoded. */
export function publicUrl(endpoint: string, ref: ObjectRef): string {
  return `${endpoint.replace(/\/+$/, '')}/${ref.bucket}/${ref.key.split('/').map(encodeURIComponent).join('/')}`;
}
