/**
 * What each service may do on NATS: one NATS user per service, allowed to publish and subscribe only the
 * subjects its code uses, derived from the topology (STREAMS, BUCKETS, WORK) and the events each service
 * publishes. A compromised stage (a crafted video that takes over FFmpeg) cannot forge another stage's work
 * (a transcoder publishing work.upload), announce what is not its to announce (the thumbnailer publishing
 * job.playable: event types are in the subject, and readers check the body's type is the subject's), read
 * another service's replies, or delete or rewrite a stream. One exception: the thumbnailer sends
 * work.upload to have a manifest republished with the seek previews, and NATS cannot tell that refresh
 * from an upload the packager would send; the uploader then publishes only manifests packaged into the
 * work bucket, which every stage's S3 user can write anyway. A subject of its own for refreshes would close it.
 *
 * Rendered as nats-server users (`authorization { users = [...] }`) for the Compose cluster
 * (deploy/nats/users.conf), the Helm values (deploy/nats/values.yaml) and the tests (libs/testkit startNats
 * with `users: true`), by `npm run nats:users`; passwords are never in a file: the server reads each from
 * its environment (`$NATS_PASSWORD_<USER>`). Subjects are those nats.js 3.4 uses (verified on nats-server
 * 2.9.10 by test/permissions.test.ts):
 *
 *   $JS.API.INFO                                   account info (every JetStream client at start)
 *   $JS.API.STREAM.{INFO,CREATE,UPDATE}.<stream>    ensureStream; KV buckets are streams KV_<bucket> (UPDATE:
 *                                                  ingest-api only, for the streams' settings and NATS_REPLICAS)
 *   $JS.API.CONSUMER.CREATE.<stream>.<name>.<filter> a durable's creation and update, with its filter
 *   $JS.API.CONSUMER.{INFO,MSG.NEXT}.<stream>.<name> its checks and pulls; $JS.ACK.<stream>.<name>.> its acks
 *                                                  (the v1 ack subjects servers send unless their js_ack_fc_v2
 *                                                  feature flag is on; it is off by default up to 2.14)
 *   $JS.API.DIRECT.GET.KV_<b>.$KV.<b>.<key>         KV get; a KV put or delete publishes to $KV.<b>.<key>
 *   $JS.API.STREAM.MSG.{GET,DELETE}.<stream>        a message by sequence (dead letters, max-deliveries advisories)
 *   $JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<name>   the advisory a consumer's replicas listen to
 *   _INBOX_<user>.>                                 replies, on the user's own inbox prefix (connect.ts)
 */
import { cancelSubject, DEFAULT_LADDER, EVENTS_SUBJECT_PREFIX, WORK, workRoute, type JobEventType, type Ladder, type WorkKind } from '@mesh/common';
import { deadLetterSubject } from './dead-letters.ts';
import { BUCKETS, bucketStream, SHARED_STREAM_NAMES, STREAMS, type Bucket } from './topology.ts';

export const NATS_USERS = ['ingest-api', 'downloader', 'transcoder', 'packager', 'uploader', 'thumbnailer', 'notifier'] as const;
export type NatsUser = (typeof NATS_USERS)[number];

/** The NATS user a service logs in as: every transcoder (transcoder-720, transcoder-360, ...) shares one. */
export function natsUserOf(service: string): NatsUser {
  const user = service.startsWith('transcoder-') ? 'transcoder' : service;
  if (!(NATS_USERS as readonly string[]).includes(user)) throw new Error(`no NATS user for service ${service}`);
  return user as NatsUser;
}

/** Replies to a user's requests come to this prefix, which only that user may subscribe to. */
export function inboxPrefix(user: string): string {
  return `_INBOX_${user}`;
}

/** The environment variable nats-server reads a user's password from (deploy: a secret). */
export function natsPasswordVariable(user: string): string {
  return `NATS_PASSWORD_${user.toUpperCase().replaceAll('-', '_')}`;
}

export interface Permissions {
  publish: string[];
  subscribe: string[];
}

/** What a service does with NATS, in the topology's terms; `permissionsOf` turns it into subjects. */
interface Role {
  /** Applies stream settings to existing streams (ensureStream with update) and keeps JOB_VIEWS. */
  ownsStreams?: boolean;
  /** Work it consumes: a durable consumer on WORK each, shared by the replicas. */
  consumes: WorkKind[];
  /** Work subjects it publishes for the next stages. */
  sends: string[];
  /** Event types it publishes on `events.<jobId>.<type>`. */
  events: JobEventType[];
  /** KV buckets it opens (and may create when missing), reads and writes. */
  buckets: { opens: Bucket[]; reads: Bucket[]; writes: Bucket[] };
  /** Anything else, in subjects. */
  publish?: string[];
  subscribe?: string[];
}

const API = '$JS.API';
/** `work.transcode.*`: every rendition, those added later included. */
const ANY_TRANSCODE = WORK.transcode.subject;

/** Every stage reports on itself. */
const STAGE_EVENTS: JobEventType[] = ['stage.started', 'stage.done', 'stage.failed'];
/**
 * Announced by whoever changes a job record (libs/jobs lifecycle.ts): the phase a change leads to, or one a
 * crash kept from going out. The stages that only read job records (transcoders, thumbnailer) never do.
 */
const PHASE_EVENTS: JobEventType[] = ['job.playable', 'job.completed', 'job.failed'];
/** The buckets every stage opens (openJobStates). */
const STAGE_BUCKETS: Bucket[] = [BUCKETS.jobState, BUCKETS.locks, BUCKETS.owners, BUCKETS.done];
/** Every stage reads the job's record (is it cancelled?) and marks what it finished. */
const stage = (o: { reads?: Bucket[]; writes?: Bucket[] } = {}) => ({
  opens: STAGE_BUCKETS,
  reads: [BUCKETS.jobState, BUCKETS.done, ...(o.reads ?? [])],
  writes: [BUCKETS.done, ...(o.writes ?? [])],
});

/** A stream read by ordered (ephemeral, unacknowledged) consumers: the projector and the live views. */
const reader = (stream: string) => [
  `${API}.STREAM.INFO.${stream}`,
  `${API}.CONSUMER.CREATE.${stream}.>`,
  `${API}.CONSUMER.INFO.${stream}.*`,
  `${API}.CONSUMER.MSG.NEXT.${stream}.*`,
  `${API}.CONSUMER.DELETE.${stream}.*`,
];

const ROLES: Record<NatsUser, Role> = {
  'ingest-api': {
    ownsStreams: true,
    consumes: [],
    // Submits and retries start with work.download; a dead letter is re-driven to whichever stage it came from.
    sends: ['work.>'],
    // Its own, and the notifier's, which a re-driven notification dead letter publishes again.
    events: ['job.created', 'job.reopened', 'job.cancelled', 'job.playable', 'job.failed'],
    buckets: { opens: Object.values(BUCKETS), reads: [BUCKETS.jobState, BUCKETS.owners, BUCKETS.leases], writes: [BUCKETS.jobState, BUCKETS.owners, BUCKETS.leases] },
    publish: [
      cancelSubject('*'),
      // The projector: job views out, events and views read.
      ...STREAMS.views.subjects,
      ...reader(STREAMS.events.name),
      ...reader(STREAMS.views.name),
      // Queue depths (GET /admin/queues, metrics).
      `${API}.CONSUMER.INFO.${STREAMS.work.name}.*`,
      // Dead letters: listed, read, re-driven and removed.
      `${API}.STREAM.MSG.GET.${STREAMS.deadLetters.name}`,
      `${API}.STREAM.MSG.DELETE.${STREAMS.deadLetters.name}`,
    ],
    // The job view cache (libs/jobs views.ts) hears each document the projector publishes.
    subscribe: ['views.*'],
  },
  downloader: {
    consumes: ['download'],
    sends: [ANY_TRANSCODE, WORK.thumbnail.subject],
    events: [...STAGE_EVENTS, 'source.probed', ...PHASE_EVENTS],
    buckets: stage({ writes: [BUCKETS.jobState] }),
  },
  transcoder: {
    consumes: ['transcode'],
    sends: [WORK.package.subject],
    events: [...STAGE_EVENTS, 'stage.progress', 'rendition.ready'],
    buckets: stage(),
  },
  packager: {
    consumes: ['package'],
    sends: [WORK.upload.subject],
    events: [...STAGE_EVENTS, ...PHASE_EVENTS],
    buckets: stage({ writes: [BUCKETS.jobState] }),
  },
  uploader: {
    consumes: ['upload'],
    sends: [],
    events: [...STAGE_EVENTS, 'manifest.published', ...PHASE_EVENTS],
    buckets: stage({ reads: [BUCKETS.owners, BUCKETS.locks], writes: [BUCKETS.jobState, BUCKETS.locks] }),
  },
  thumbnailer: {
    consumes: ['thumbnail'],
    // Asks the uploader to publish the manifest in place again once the seek previews are in the output
    // (a refresh: the uploader republishes only what that job attempt has out, under its own rules).
    sends: [WORK.upload.subject],
    events: [...STAGE_EVENTS, 'thumbnail.ready'],
    buckets: stage(),
  },
  notifier: {
    consumes: [],
    sends: [],
    events: ['notification.sent', 'stage.failed'],
    buckets: { opens: [], reads: [], writes: [] },
    // Its durable consumer on JOB_EVENTS (services/notifier), and the event a max-deliveries advisory names.
    publish: [...durable(STREAMS.events.name, 'notifier', `${EVENTS_SUBJECT_PREFIX}.>`), deadLetterSubject('notifier'), `${API}.STREAM.MSG.GET.${STREAMS.events.name}`],
    subscribe: [advisory(STREAMS.events.name, 'notifier')],
  },
};

/** A durable pull consumer's subjects: create or update it with its filter, check it, pull, ack. */
function durable(stream: string, name: string, filter: string): string[] {
  return [`${API}.CONSUMER.CREATE.${stream}.${name}.${filter}`, `${API}.CONSUMER.INFO.${stream}.${name}`, `${API}.CONSUMER.MSG.NEXT.${stream}.${name}`, `$JS.ACK.${stream}.${name}.>`];
}

function advisory(stream: string, name: string): string {
  return `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.${stream}.${name}`;
}

/**
 * The subjects `user` may publish and subscribe to, without repeats, in a stable order. The transcoder's
 * consumers are one per rung of `ladder` (a consumer name is one subject token, so no wildcard could
 * allow "any transcoder" without allowing the other stages' consumers too). The deployments' users are
 * rendered for the rungs of every preset and of the environment's ladder (`npm run nats:users`).
 */
export function permissionsOf(user: NatsUser, ladder: Ladder = DEFAULT_LADDER): Permissions {
  const role = ROLES[user];
  const streams = role.ownsStreams ? Object.values(STREAMS) : Object.values(STREAMS).filter((s) => SHARED_STREAM_NAMES.includes(s.name));
  const work = role.consumes.flatMap((kind) => (kind === 'transcode' ? ladder.map((r) => workRoute('transcode', r.name)) : [workRoute(kind)]));
  const publish = [
    `${API}.INFO`,
    ...streams.flatMap((s) => [`${API}.STREAM.INFO.${s.name}`, `${API}.STREAM.CREATE.${s.name}`, ...(role.ownsStreams ? [`${API}.STREAM.UPDATE.${s.name}`] : [])]),
    // The owner of the streams also brings the buckets to NATS_REPLICAS (ensureBucketReplicas).
    ...role.buckets.opens.flatMap((b) => [`${API}.STREAM.INFO.${bucketStream(b)}`, `${API}.STREAM.CREATE.${bucketStream(b)}`, ...(role.ownsStreams ? [`${API}.STREAM.UPDATE.${bucketStream(b)}`] : [])]),
    ...role.buckets.reads.map((b) => `${API}.DIRECT.GET.${bucketStream(b)}.$KV.${b}.>`),
    ...role.buckets.writes.map((b) => `$KV.${b}.>`),
    ...work.flatMap((w) => [
      ...durable(STREAMS.work.name, w.consumer, w.subject),
      // Handing a message back on shutdown republishes it; a failure is kept as a dead letter.
      w.subject,
      deadLetterSubject(w.consumer),
    ]),
    // A max-deliveries advisory: the stored message is read, its failure recorded, and it is removed.
    ...(work.length > 0 ? [`${API}.STREAM.MSG.GET.${STREAMS.work.name}`, `${API}.STREAM.MSG.DELETE.${STREAMS.work.name}`] : []),
    ...role.sends,
    ...role.events.map((type) => `${EVENTS_SUBJECT_PREFIX}.*.${type}`),
    ...(role.publish ?? []),
  ];
  const subscribe = [
    `${inboxPrefix(user)}.>`,
    ...work.map((w) => advisory(STREAMS.work.name, w.consumer)),
    // A cancelled job's work stops at once.
    ...(work.length > 0 ? [cancelSubject('*')] : []),
    ...(role.subscribe ?? []),
  ];
  return { publish: [...new Set(publish)], subscribe: [...new Set(subscribe)] };
}

export interface NatsUserEntry {
  user: string;
  password: string;
  permissions?: { publish: { allow: string[] }; subscribe: { allow: string[] } };
}

/**
 * The users block of a nats-server config: every service's user with its permissions, each password
 * written as `password(user)` gives it (a `$VARIABLE` the server reads from its environment).
 */
export function natsUsers(password: (user: NatsUser) => string, ladder: Ladder = DEFAULT_LADDER): NatsUserEntry[] {
  return NATS_USERS.map((user) => {
    const p = permissionsOf(user, ladder);
    return { user, password: password(user), permissions: { publish: { allow: p.publish }, subscribe: { allow: p.subscribe } } };
  });
}

/** `authorization { users = [...] }` in nats-server's config syntax; a password is written unquoted (a `$VARIABLE`). */
export function renderNatsAuthorization(users: NatsUserEntry[]): string {
  const list = (subjects: string[]) => subjects.map((s) => `            ${JSON.stringify(s)}`).join('\n');
  const entry = (u: NatsUserEntry) =>
    [
      '    {',
      `      user: ${JSON.stringify(u.user)}`,
      `      password: ${u.password}`,
      ...(u.permissions
        ? ['      permissions: {', '        publish: {', '          allow: [', list(u.permissions.publish.allow), '          ]', '        }', '        subscribe: {', '          allow: [', list(u.permissions.subscribe.allow), '          ]', '        }', '      }']
        : []),
      '    }',
    ].join('\n');
  return `authorization {\n  users = [\n${users.map(entry).join('\n')}\n  ]\n}\n`;
}

// ---- deployments --------------------------------------------------------------------------------

/** The Kubernetes Secret holding a user's password (key NATS_PASSWORD): its service reads it, and so do the NATS pods. */
export function natsSecretName(user: NatsUser): string {
  return `video-mesh-nats-${user}`;
}

/**
 * deploy/nats/users.conf: included by the Compose nodes' nats.conf; passwords from the nodes' environment.
 * The transcoder user may use the consumers of `ladder`'s rungs (`npm run nats:users` passes every preset's
 * and the environment's: libs/common deployedRungs).
 */
export function renderUsersConf(ladder: Ladder): string {
  return `# NATS users of the mesh services, one per service, allowed only the subjects it uses. Generated from
# libs/bus/src/permissions.ts by \`npm run nats:users\`: do not edit (test/deploy.test.ts checks it is current).
# Each password comes from the server's environment (${natsPasswordVariable('downloader')}, ...).
# The transcoder user may consume the work of the rungs ${ladder.map((r) => r.name).join(', ')}: those of every preset
# in ladders/*.json, so any preset runs unchanged, and of LADDER or LADDER_FILE when they are set for
# \`npm run nats:users\` (a ladder of your own: render again with it set; deploy/README.md, "Rendition ladders").
${renderNatsAuthorization(natsUsers((u) => `$${natsPasswordVariable(u)}`, ladder))}`;
}

/**
 * The same users as values of the official Helm chart: `config.merge.authorization` (the chart writes
 * `<< $VAR >>` unquoted, a variable the server reads from its environment) and `container.env`, each
 * password from its user's Secret; the transcoder's consumers are those of `ladder`'s rungs, as in renderUsersConf.
 */
export function natsHelmValues(ladder: Ladder): { authorization: { users: NatsUserEntry[] }; env: Record<string, { valueFrom: { secretKeyRef: { name: string; key: string } } }> } {
  return {
    authorization: { users: natsUsers((u) => `<< $${natsPasswordVariable(u)} >>`, ladder) },
    env: Object.fromEntries(NATS_USERS.map((u) => [natsPasswordVariable(u), { valueFrom: { secretKeyRef: { name: natsSecretName(u), key: 'NATS_PASSWORD' } } }])),
  };
}
