/**
 * The NATS users' permissions, as tables: who may send which work, announce which event, write which KV
 * bucket, touch which stream. (test/permissions.test.ts runs them on a real nats-server.)
 */
import { describe, expect, it } from 'vitest';
import type { JobEventType } from '@mesh/common';
import { BUCKETS, queuesOf, inboxPrefix, NATS_USERS, natsPasswordVariable, natsUserOf, natsUsers, permissionsOf, renderNatsAuthorization, STREAMS, type NatsUser } from '../src/index.ts';

/** NATS subject matching: `*` is one token, `>` one or more at the end. */
function matches(pattern: string, subject: string): boolean {
  const p = pattern.split('.');
  const s = subject.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return s.length > i;
    if (i >= s.length || (p[i] !== '*' && p[i] !== s[i])) return false;
  }
  return p.length === s.length;
}

const who = (op: 'publish' | 'subscribe', subject: string): NatsUser[] => NATS_USERS.filter((u) => permissionsOf(u)[op].some((p) => matches(p, subject)));
const JOB = '0f8fad5b-d9cb-469f-a165-70867728950e';
/** Every work subject and its consumer, the default ladder's transcoders among them. */
const workQueues = queuesOf().filter((q) => q.stream === 'WORK');

describe('NATS permissions', () => {
  it('every work subject is sent by its upstream stage (and by ingest-api, which re-drives dead letters), and handed back by its own stage', () => {
    const senders = Object.fromEntries(workQueues.map((w) => [w.subject, who('publish', w.subject)]));
    expect(senders).toEqual({
      'work.download': ['ingest-api', 'downloader'],
      'work.transcode.720p': ['ingest-api', 'downloader', 'transcoder'],
      'work.transcode.360p': ['ingest-api', 'downloader', 'transcoder'],
      'work.package': ['ingest-api', 'transcoder', 'packager'],
      // The thumbnailer's: publish the manifest again, now with the seek previews.
      'work.upload': ['ingest-api', 'packager', 'uploader', 'thumbnailer'],
      'work.thumbnail': ['ingest-api', 'downloader', 'thumbnailer'],
    });
    // A rendition added later is sent by the downloader without a new rule.
    expect(who('publish', 'work.transcode.1080p')).toContain('downloader');
  });

  it("every stage's durable consumer is created, pulled and acked only by that stage's user", () => {
    for (const w of workQueues) {
      const user = natsUserOf(w.consumer);
      for (const subject of [`$JS.API.CONSUMER.CREATE.WORK.${w.consumer}.${w.subject}`, `$JS.API.CONSUMER.MSG.NEXT.WORK.${w.consumer}`, `$JS.ACK.WORK.${w.consumer}.1.2.3.4.5`]) {
        expect(who('publish', subject), subject).toEqual([user]);
      }
      expect(who('subscribe', `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.WORK.${w.consumer}`)).toEqual([user]);
      expect(who('publish', `dead.${w.consumer}`)).toEqual([user]);
    }
    // No one creates a consumer of another name on the work queue.
    expect(who('publish', '$JS.API.CONSUMER.CREATE.WORK.thief.work.upload')).toEqual([]);
  });

  it('each event type is announced only by the services whose code publishes it', () => {
    const by = (type: JobEventType) => who('publish', `events.${JOB}.${type}`);
    expect(by('job.playable')).toEqual(['ingest-api', 'downloader', 'packager', 'uploader']);
    expect(by('job.completed')).toEqual(['downloader', 'packager', 'uploader']);
    expect(by('manifest.published')).toEqual(['uploader']);
    expect(by('rendition.ready')).toEqual(['transcoder']);
    expect(by('thumbnail.ready')).toEqual(['thumbnailer']);
    expect(by('source.probed')).toEqual(['downloader']);
    expect(by('job.created')).toEqual(['ingest-api']);
    expect(by('job.cancelled')).toEqual(['ingest-api']);
    expect(by('notification.sent')).toEqual(['notifier']);
    expect(by('stage.progress')).toEqual(['transcoder']);
    // Events as they were published before the type was in the subject: by no one now.
    expect(who('publish', `events.${JOB}`)).toEqual([]);
  });

  it('only the stages that change job records may write them; the FFmpeg stages read them', () => {
    const key = (bucket: string) => `$KV.${bucket}.${JOB}`;
    const read = (bucket: string) => `$JS.API.DIRECT.GET.KV_${bucket}.$KV.${bucket}.${JOB}`;
    expect(who('publish', key(BUCKETS.jobState))).toEqual(['ingest-api', 'downloader', 'packager', 'uploader']);
    expect(who('publish', read(BUCKETS.jobState))).toEqual(['ingest-api', 'downloader', 'transcoder', 'packager', 'uploader', 'thumbnailer']);
    expect(who('publish', key(BUCKETS.locks))).toEqual(['uploader']);
    expect(who('publish', key(BUCKETS.owners))).toEqual(['ingest-api']);
    expect(who('publish', key(BUCKETS.leases))).toEqual(['ingest-api']);
    expect(who('publish', key(BUCKETS.done))).toEqual(['downloader', 'transcoder', 'packager', 'uploader', 'thumbnailer']);
  });

  it('no one deletes or purges a stream; only ingest-api updates one (its settings, the replicas of a bucket); each creates only the streams it uses', () => {
    for (const s of [...Object.values(STREAMS).map((c) => c.name), ...Object.values(BUCKETS).map((b) => `KV_${b}`)]) {
      expect(who('publish', `$JS.API.STREAM.DELETE.${s}`), s).toEqual([]);
      expect(who('publish', `$JS.API.STREAM.PURGE.${s}`), s).toEqual([]);
      expect(who('publish', `$JS.API.STREAM.UPDATE.${s}`), s).toEqual(['ingest-api']);
    }
    expect(who('publish', `$JS.API.STREAM.CREATE.${STREAMS.views.name}`)).toEqual(['ingest-api']);
    expect(who('publish', '$JS.API.STREAM.CREATE.EVIL')).toEqual([]);
  });

  it('each user reads only its own replies and the subjects its code subscribes to', () => {
    for (const user of NATS_USERS) {
      expect(who('subscribe', `${inboxPrefix(user)}.abc.1`)).toEqual([user]);
      expect(permissionsOf(user).subscribe.filter((s) => s.startsWith('_INBOX'))).toEqual([`${inboxPrefix(user)}.>`]);
    }
    expect(who('subscribe', '_INBOX.abc')).toEqual([]);
    expect(who('subscribe', `control.cancel.${JOB}`)).toEqual(['downloader', 'transcoder', 'packager', 'uploader', 'thumbnailer']);
    expect(who('publish', `control.cancel.${JOB}`)).toEqual(['ingest-api']);
    expect(who('subscribe', `events.${JOB}.job.playable`)).toEqual([]);
  });

  it('renders one user per service, each password a variable of its own', () => {
    const conf = renderNatsAuthorization(natsUsers((u) => `$${natsPasswordVariable(u)}`));
    expect([...conf.matchAll(/user: "([\w-]+)"\n\s+password: \$(\w+)/g)].map((m) => [m[1], m[2]])).toEqual(NATS_USERS.map((u) => [u, natsPasswordVariable(u)]));
    expect(natsPasswordVariable('ingest-api')).toBe('NATS_PASSWORD_INGEST_API');
    expect(['transcoder-720', 'transcoder-360'].map(natsUserOf)).toEqual(['transcoder', 'transcoder']);
  });
});
