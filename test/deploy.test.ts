/**
 * Deployment files start safe (deploy/README.md): docker-compose.yml refuses to start without real secrets,
 * gives each service only its own, runs the services as a least-privilege MinIO user, publishes only Caddy
 * and the API and on loopback unless told otherwise, and runs NATS as a three-node JetStream cluster; Caddy
 * terminates TLS and streams events unbuffered; the image installs production dependencies only and they
 * hold everything the services import. The Kubernetes manifests validate against the Kubernetes and KEDA
 * schemas and give each pod only its secrets, no service account token and only the traffic it needs; KEDA
 * scales the transcoders on work waiting or held and scales in slowly into a drain long enough to finish an
 * encode; NATS comes from the official Helm chart with values the chart knows.
 * Any preset ladder runs on the committed files: the NATS users allow every preset's rungs (checked on a
 * live nats-server too), and both compose (profile web-ladder) and deploy/k8s (ladder-web.yaml) run a
 * transcoder for every rung of the web ladder, with the same LADDER_FILE for every service that reads it.
 *
 * Compose is checked on what Debian's `docker-compose config` (1.29) renders, parsed as YAML; the Caddyfile
 * with `caddy adapt` and a live Caddy between stand-ins on loopback; the NATS config with `nats-server -t`.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { parse, parseAllDocuments } from 'yaml';
import { ConfigMap, Service } from 'kubernetes-models/v1';
import { Deployment } from 'kubernetes-models/apps/v1';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';
import { ScaledObject } from '@kubernetes-models/keda/keda.sh/v1alpha1';
import { PermissionViolationError } from '@nats-io/transport-node';
import { closeBus, connectBus, ensureConsumer, ensureStream, natsHelmValues, natsPasswordVariable, natsSecretName, natsUserOf, NATS_USERS, permissionsOf, renderUsersConf, STREAMS } from '@mesh/bus';
import { commonConfig, createLogger, DEFAULT_LADDER, deployedRungs, ladderConfig, mapLimit, natsAuth, presetLadders, transcoderOf, workRoute } from '@mesh/common';
import { freePort, REPO_ROOT, SERVICES } from '@mesh/testkit';

const run = promisify(execFile);
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Obj = Record<string, any>;
type Name = (typeof SERVICES)[number];

const LADDERS = join(REPO_ROOT, 'ladders');
/** Every rung of every preset ladder (and the default): what the committed deployment files are ready for. */
const RUNGS = deployedRungs(LADDERS, {}).map((r) => r.name);
/** The web preset's rungs. */
const WEB = ladderConfig({ LADDER_FILE: join(LADDERS, 'web.json') }).rungs.map((r) => r.name);
/** The transcoders the web ladder adds to the default deployment: one for each rung no default transcoder takes. */
const WEB_TRANSCODERS = WEB.map(transcoderOf).filter((n) => !(SERVICES as readonly string[]).includes(n));
/** What a service runs: its own main.ts, or (a transcoder of another rung) the shared transcoder's. */
const entryOf = (name: string) => `services/${(SERVICES as readonly string[]).includes(name) ? name : 'transcoder'}/src/main.ts`;
/** The rungs a transcoder encodes: RENDITIONS, else the defaults its main.ts passes (transcoder-720: 720p). */
const rungsOf = (entry: string, renditions: string | undefined): string[] =>
  (renditions ?? /defaults: \[([^\]]*)\]/.exec(readFileSync(join(REPO_ROOT, entry), 'utf8'))![1]!.replaceAll("'", '')).split(',').map((r) => r.trim()).filter(Boolean);

/** The files a service's main.ts loads, following relative and workspace imports, and the packages they import (with an importer). */
function modulesOf(entries: string[]): { files: Set<string>; packages: Map<string, string> } {
  const files = new Set<string>();
  const packages = new Map<string, string>();
  const visit = (file: string) => {
    if (files.has(file)) return;
    files.add(file);
    const src = readFileSync(file, 'utf8');
    const specs = [
      // Type-only imports are erased: they load nothing.
      ...[...src.matchAll(/^\s*(?:import|export)\s+(?!type\b)[^'";]*?from\s+'([^']+)'/gm)].map((m) => m[1]!),
      ...[...src.matchAll(/^\s*import\s+'([^']+)'/gm)].map((m) => m[1]!),
      ...[...src.matchAll(/\bimport\(\s*'([^']+)'\s*\)/g)].map((m) => m[1]!),
      ...[...src.matchAll(/require\.resolve\(\s*'([^']+)'\s*\)/g)].map((m) => m[1]!),
    ];
    for (const spec of specs) {
      if (spec.startsWith('node:')) continue;
      if (spec.startsWith('.')) visit(resolve(dirname(file), spec));
      else if (spec.startsWith('@mesh/')) visit(join(REPO_ROOT, 'libs', spec.slice('@mesh/'.length), 'src', 'index.ts'));
      else packages.set(spec.split('/').slice(0, spec.startsWith('@') ? 2 : 1).join('/'), file);
    }
  };
  for (const entry of entries) visit(join(REPO_ROOT, entry));
  return { files, packages };
}
/** Whether the service running `entry` reads the rendition ladder (LADDER, LADDER_FILE, FIRST_RENDITION): it, or a lib it loads, calls ladderConfig. */
const LADDER_MODULE = join(REPO_ROOT, 'libs/common/src/ladder.ts');
const readsLadder = (entry: string) => [...modulesOf([entry]).files].some((f) => f !== LADDER_MODULE && readFileSync(f, 'utf8').includes('ladderConfig('));

const NATS_NODES = ['nats-1', 'nats-2', 'nats-3'];
const INFRA = [...NATS_NODES, 'mongodb', 'minio', 'minio-init', 'otel-collector', 'jaeger', 'proxy'];

/** The secrets compose requires, each with a value for the renders below. */
const REQUIRED: Record<string, string> = {
  APP_API_KEY: 'test-app-key',
  MAIN_API_ENDPOINT: 'https://backend.example.test',
  MAIN_API_KEY: 'test-main-key',
  MINIO_ROOT_USER: 'test-root',
  MINIO_ROOT_PASSWORD: 'test-root-password',
  MESH_S3_ACCESS_KEY: 'test-mesh-user',
  MESH_S3_SECRET_KEY: 'test-mesh-secret',
  // One password per service's NATS user, in the form nats-server reads back as itself (libs/common natsAuth).
  ...Object.fromEntries(NATS_USERS.map((u) => [natsPasswordVariable(u), `p${u.replaceAll('-', '')}${'0'.repeat(32)}`])),
};
/** Secrets a deployment may leave out (empty when unset). */
const OPTIONAL = ['ADMIN_API_KEY', 'WEBHOOK_SECRET'];
const isSecret = (name: string) => /KEY|SECRET|PASSWORD|ROOT_USER/.test(name);

/** The secrets each service gets, in compose and in Kubernetes alike. */
const S3_KEYS = ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY'];
const SECRETS_OF = (name: string): string[] => [
  ...(name === 'ingest-api' ? ['APP_API_KEY', 'ADMIN_API_KEY', ...S3_KEYS] : name === 'notifier' ? ['MAIN_API_KEY', 'WEBHOOK_SECRET'] : S3_KEYS),
  'NATS_PASSWORD',
];
/** The NATS password variables every NATS node reads. */
const NATS_PASSWORDS = () => Object.fromEntries(NATS_USERS.map((u) => [natsPasswordVariable(u), REQUIRED[natsPasswordVariable(u)]!]));

const sorted = (xs: Iterable<string>) => [...xs].sort();
const text = (...path: string[]) => readFileSync(join(REPO_ROOT, ...path), 'utf8');

let dir: string;
let envFile: string;

/** `docker-compose -f docker-compose.yml <args>` from the repo root, with only `env` added to a clean environment. */
async function compose(args: string[], env: Record<string, string> = {}): Promise<string> {
  const names = new Set([...Object.keys(REQUIRED), ...OPTIONAL, 'DOMAIN', 'ACME_EMAIL', 'S3_PUBLIC_URL', 'WEBHOOK_ALLOW_HTTP', 'WEBHOOK_EVENTS']);
  const base = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !names.has(k) && !/^(TRANSCODER_\d+_REPLICAS|COMPOSE_.*|.*PUBLISH_ADDRESS|.*_PORT)$/.test(k)),
  );
  // An empty env file, so a developer's ./.env does not change what is rendered.
  const { stdout } = await run('docker-compose', ['-f', 'docker-compose.yml', '--env-file', envFile, ...args], {
    cwd: REPO_ROOT,
    env: { ...base, ...env },
    timeout: 20_000,
  });
  return stdout;
}

/** What compose says when it refuses to render, or undefined when it renders. */
const refusal = (env: Record<string, string>) =>
  compose(['config', '--quiet'], env).then(
    () => undefined,
    (err: { stderr?: string }) => err.stderr ?? String(err),
  );

let services: string[];
let config: Obj;
let scaled: Obj;
/** Rendered as deploy/README.md says to run the web ladder, with TRANSCODER_1080_REPLICAS=2. */
let web: Obj;
let missing: Record<string, string | undefined>;
/** The documented command for the web ladder: `LADDER_FILE=<file> docker-compose --profile <profile> up -d`. */
const WEB_COMMAND = /LADDER_FILE=(\S+) docker-compose --profile ([\w-]+) up -d/;
const webCommand = () => {
  const m = WEB_COMMAND.exec(text('deploy/README.md'))!;
  return { command: m[0], ladderFile: m[1]!, profile: m[2]! };
};

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'deploy-'));
  envFile = join(dir, 'empty.env');
  await writeFile(envFile, '');
  const without = (name: string) => Object.fromEntries(Object.entries(REQUIRED).filter(([k]) => k !== name));
  // A few at a time: each is a Python process, and a loaded machine would time the rest out.
  const { ladderFile, profile } = webCommand();
  const [list, rendered, scaledRendered, webRendered, ...refusals] = await mapLimit(
    [
      () => compose(['config', '--services'], REQUIRED),
      () => compose(['config'], REQUIRED),
      () => compose(['config'], { ...REQUIRED, TRANSCODER_720_REPLICAS: '3', PUBLISH_ADDRESS: '0.0.0.0', HTTPS_PORT: '8443', API_PUBLISH_ADDRESS: '10.0.0.5' }),
      () => compose(['--profile', profile, 'config'], { ...REQUIRED, LADDER_FILE: ladderFile, TRANSCODER_1080_REPLICAS: '2' }),
      ...Object.keys(REQUIRED).map((name) => () => refusal(without(name))),
    ],
    4,
    (job) => job(),
  );
  services = list!.split('\n').filter(Boolean);
  config = parse(rendered!) as Obj;
  scaled = parse(scaledRendered!) as Obj;
  web = parse(webRendered!) as Obj;
  missing = Object.fromEntries(Object.keys(REQUIRED).map((name, i) => [name, refusals[i]]));
}, 120_000);

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const svc = (name: string): Obj => config['services'][name];
const envOf = (name: string): Record<string, string> => svc(name)['environment'] ?? {};

describe('docker-compose.yml', () => {
  it('has the eight services and the infrastructure, and in a profile the transcoders of the web ladder\'s other rungs', () => {
    // docker-compose 1.29 lists (and renders) every service; `up` starts a profile's only when asked.
    expect(new Set(services)).toEqual(new Set([...SERVICES, ...INFRA, ...WEB_TRANSCODERS]));
    const profiled = Object.entries(config['services'] as Record<string, Obj>).filter(([, s]) => s['profiles']);
    expect(sorted(profiled.map(([name]) => name))).toEqual(sorted(WEB_TRANSCODERS));
    for (const [name, s] of profiled) expect(s['profiles'], name).toEqual([webCommand().profile]);
  });

  it.each(SERVICES)('%s runs its main.ts from the shared image, named for tracing, on every NATS node', (name) => {
    const s = svc(name);
    const entry = `services/${name}/src/main.ts`;
    expect(s['command']).toEqual(['node', entry]);
    expect(existsSync(join(REPO_ROOT, entry))).toBe(true);
    expect(s['image']).toBe('video-mesh:latest');
    expect(envOf(name)['OTEL_SERVICE_NAME']).toBe(name);
    expect(envOf(name)['NATS_URL']!.split(',')).toEqual(NATS_NODES.map((n) => `nats://${n}:4222`));
    expect(envOf(name)['NATS_REPLICAS']).toBe(String(NATS_NODES.length));
  });

  it.each(SERVICES)('%s logs in to NATS as its own user, with that user\'s password', (name) => {
    const user = natsUserOf(name);
    expect(envOf(name)['NATS_USER']).toBe(user);
    expect(envOf(name)['NATS_PASSWORD']).toBe(REQUIRED[natsPasswordVariable(user)]);
    // What the service reads is what the server is given.
    expect(natsAuth(envOf(name))).toEqual({ user, password: REQUIRED[natsPasswordVariable(user)] });
  });

  it('refuses to start without each required secret, naming it', () => {
    for (const [name, said] of Object.entries(missing)) {
      expect(said, name).toBeDefined();
      expect(said, name).toContain(name);
    }
  });

  it('requires every secret with ${VAR:?} and defaults none to a value', () => {
    const raw = text('docker-compose.yml');
    const refs = [...raw.matchAll(/\$\{(\w+)(?::?([-?]))?([^}]*)\}/g)].map(([, name, op, rest]) => ({ name: name!, op, rest: rest! }));
    const secrets = refs.filter((r) => isSecret(r.name) || r.name === 'MAIN_API_ENDPOINT');
    expect(new Set(secrets.map((r) => r.name))).toEqual(new Set([...Object.keys(REQUIRED), ...OPTIONAL]));
    for (const r of secrets) {
      if (OPTIONAL.includes(r.name)) expect({ name: r.name, op: r.op, rest: r.rest }).toEqual({ name: r.name, op: '-', rest: '' });
      else expect({ name: r.name, op: r.op }).toEqual({ name: r.name, op: '?' });
    }
    expect(raw).not.toMatch(/change-me|minioadmin/i);
    // Optional secrets stay empty (unset for the services) when not given.
    expect(envOf('ingest-api')['ADMIN_API_KEY']).toBe('');
    expect(envOf('notifier')['WEBHOOK_SECRET']).toBe('');
  });

  it.each(SERVICES)('%s gets only the secrets it uses', (name) => {
    expect(sorted(Object.keys(envOf(name)).filter(isSecret))).toEqual(sorted(SECRETS_OF(name)));
  });

  it('the notifier needs the backend over https (or WEBHOOK_ALLOW_HTTP=1) and has no S3 settings', () => {
    const env = envOf('notifier');
    expect(env['MAIN_API_ENDPOINT']).toBe(REQUIRED['MAIN_API_ENDPOINT']);
    expect(env['WEBHOOK_ALLOW_HTTP']).toBe('');
    // The webhook events are opt-in: none unless set.
    expect(env['WEBHOOK_EVENTS']).toBe('');
    expect(Object.keys(env).filter((k) => k.startsWith('S3_') || k.startsWith('AWS_'))).toEqual([]);
  });

  it('publishes only Caddy (443, 80) and the API (8000), on 127.0.0.1 unless configured', () => {
    const published = (cfg: Obj) =>
      Object.fromEntries(
        Object.entries(cfg['services'] as Record<string, Obj>)
          .filter(([, s]) => s['ports'])
          .map(([name, s]) => [name, (s['ports'] as string[]).map((p) => /^(.+):(\d+):(\d+)\/tcp$/.exec(p)?.slice(1))]),
      );
    expect(published(config)).toEqual({
      proxy: [['127.0.0.1', '443', '443'], ['127.0.0.1', '80', '80']],
      'ingest-api': [['127.0.0.1', '8000', '8000']],
    });
    expect(published(scaled)).toEqual({
      proxy: [['0.0.0.0', '8443', '443'], ['0.0.0.0', '80', '80']],
      'ingest-api': [['10.0.0.5', '8000', '8000']],
    });
  });

  it('runs the services as their own MinIO user, which minio-init creates with the policy file', () => {
    for (const name of SERVICES.filter((n) => SECRETS_OF(n).includes('AWS_ACCESS_KEY_ID'))) {
      expect(envOf(name)['AWS_ACCESS_KEY_ID'], name).toBe(REQUIRED['MESH_S3_ACCESS_KEY']);
      expect(envOf(name)['AWS_SECRET_ACCESS_KEY'], name).toBe(REQUIRED['MESH_S3_SECRET_KEY']);
    }
    expect(REQUIRED['MESH_S3_ACCESS_KEY']).not.toBe(REQUIRED['MINIO_ROOT_USER']);
    const init = svc('minio-init');
    // docker-compose 1.29 keeps compose's `$$` escape in what it renders; the shell sees `$`.
    const script = (init['command'] as string[]).join('\n').replaceAll('$$', '$');
    expect(init['volumes']).toContain(`${join(REPO_ROOT, 'deploy', 'minio')}:/etc/video-mesh:ro`);
    expect(script).toContain('mc admin policy create local video-mesh /etc/video-mesh/video-mesh-policy.json');
    expect(script).toContain('mc admin user add local "$MESH_S3_ACCESS_KEY" "$MESH_S3_SECRET_KEY"');
    expect(script).toContain('mc admin policy attach local video-mesh --user "$MESH_S3_ACCESS_KEY"');
    const env = envOf('ingest-api');
    const buckets = [env['S3_INPUT_BUCKET'], env['S3_OUTPUT_BUCKET'], env['S3_THUMBNAIL_OUTPUT_BUCKET'], env['S3_WORK_BUCKET']];
    expect(script).toContain(`for b in ${buckets.join(' ')}; do mc mb`);
  });

  it('the MinIO policy allows exactly the operations the storage code makes, on exactly the four buckets', () => {
    // What each S3 call of libs/storage needs; a call missing here fails the test until the policy covers it.
    const NEEDS: Record<string, string[]> = {
      GetObjectCommand: ['s3:GetObject'],
      HeadObjectCommand: ['s3:GetObject'],
      PutObjectCommand: ['s3:PutObject'],
      CopyObjectCommand: ['s3:GetObject', 's3:PutObject'],
      ListObjectsV2Command: ['s3:ListBucket'],
      HeadBucketCommand: ['s3:ListBucket'],
      DeleteObjectsCommand: ['s3:DeleteObject'],
      Upload: ['s3:PutObject', 's3:AbortMultipartUpload', 's3:ListMultipartUploadParts'],
      // Only ensureBuckets (npm start and tests): in compose the buckets are minio-init's (checked below).
      CreateBucketCommand: [],
    };
    const storage = readdirSync(join(REPO_ROOT, 'libs/storage/src')).map((f) => text('libs/storage/src', f)).join('\n');
    const calls = new Set([...storage.matchAll(/new (\w+Command|Upload)\(/g)].map((m) => m[1]!));
    expect([...calls].filter((c) => !(c in NEEDS))).toEqual([]);
    const needed = new Set([...calls].flatMap((c) => NEEDS[c]!));
    const servicesCode = SERVICES.map((n) => text('services', n, 'src', 'main.ts')).join('\n');
    expect(servicesCode).not.toContain('ensureBuckets');

    const policy = JSON.parse(text('deploy/minio/video-mesh-policy.json')) as { Statement: { Effect: string; Action: string[]; Resource: string[] }[] };
    const env = envOf('ingest-api');
    const buckets = sorted([env['S3_INPUT_BUCKET']!, env['S3_OUTPUT_BUCKET']!, env['S3_THUMBNAIL_OUTPUT_BUCKET']!, env['S3_WORK_BUCKET']!]);
    expect(policy.Statement.every((s) => s.Effect === 'Allow')).toBe(true);
    expect(new Set(policy.Statement.flatMap((s) => s.Action))).toEqual(needed);
    for (const s of policy.Statement) {
      const onBuckets = s.Action.every((a) => a === 's3:ListBucket');
      const resources = s.Resource.map((r) => /^arn:aws:s3:::([a-z0-9.-]+)(\/\*)?$/.exec(r));
      expect(resources.every((m) => m && Boolean(m[2]) !== onBuckets), JSON.stringify(s)).toBe(true);
      expect(sorted(resources.map((m) => m![1]!))).toEqual(buckets);
    }
  });

  it('runs three NATS 2.10 nodes as one JetStream cluster, each with its own volume and every service\'s user', async () => {
    const volumes = new Set<string>();
    for (const node of NATS_NODES) {
      const s = svc(node);
      expect(s['image']).toBe('nats:2.10');
      expect(s['command']).toEqual(['--config', '/etc/nats/nats.conf']);
      expect(s['environment']).toEqual({ NATS_SERVER_NAME: node, ...NATS_PASSWORDS() });
      expect(s['volumes']).toContain(`${join(REPO_ROOT, 'deploy', 'nats', 'nats.conf')}:/etc/nats/nats.conf:ro`);
      expect(s['volumes']).toContain(`${join(REPO_ROOT, 'deploy', 'nats', 'users.conf')}:/etc/nats/users.conf:ro`);
      const data = (s['volumes'] as string[]).find((v) => v.endsWith(':/data:rw'));
      expect(data, node).toBeDefined();
      volumes.add(data!);
      expect(s['ports']).toBeUndefined();
    }
    expect(volumes.size).toBe(NATS_NODES.length);
    const conf = text('deploy/nats/nats.conf');
    expect(conf).toMatch(/^server_name: \$NATS_SERVER_NAME$/m);
    expect(conf).toMatch(/^jetstream \{\n\s+store_dir: \/data\n\}/m);
    expect(conf).toMatch(/^include \.\/users\.conf$/m);
    expect(sorted([...conf.matchAll(/nats-route:\/\/([\w-]+):6222/g)].map((m) => m[1]!))).toEqual(NATS_NODES);
    // The server itself accepts the file, for each node's name, with the passwords compose gives it.
    for (const node of NATS_NODES) {
      const { stderr } = await run('nats-server', ['-c', join(REPO_ROOT, 'deploy/nats/nats.conf'), '-t'], { env: { ...process.env, NATS_SERVER_NAME: node, ...NATS_PASSWORDS() } });
      expect(stderr).toContain('is valid');
    }
    // Without a password the node does not start, and says which.
    const { NATS_PASSWORD_UPLOADER: _left, ...others } = NATS_PASSWORDS();
    const refused = await run('nats-server', ['-c', join(REPO_ROOT, 'deploy/nats/nats.conf'), '-t'], { env: { ...process.env, NATS_SERVER_NAME: 'nats-1', ...others } }).then(
      () => '',
      (err: { stderr?: string }) => err.stderr ?? '',
    );
    expect(refused).toMatch(/NATS_PASSWORD_UPLOADER/);
  });

  it('the NATS users are what libs/bus/src/permissions.ts renders for every preset\'s rungs (npm run nats:users)', () => {
    expect(text('deploy/nats/users.conf')).toBe(renderUsersConf(deployedRungs(LADDERS, {})));
    // Passwords only by reference: no secret in the file.
    expect([...text('deploy/nats/users.conf').matchAll(/password: (.*)/g)].map((m) => m[1])).toEqual(NATS_USERS.map((u) => `$${natsPasswordVariable(u)}`));
  });

  describe('for any preset ladder', () => {
    /** The transcoder user as the rendered files have it: users.conf's block, and the Helm values' entry. */
    const renderedTranscoder = () => {
      const conf = text('deploy/nats/users.conf');
      const block = conf.slice(conf.indexOf('user: "transcoder"'), conf.indexOf('user: "packager"'));
      const [publish, subscribe] = block.split(/subscribe: \{/).map((part) => [...part.matchAll(/^\s+"([^"]+)"$/gm)].map((m) => m[1]!));
      const helm = (parse(text('deploy/nats/values.yaml')) as Obj)['config'].merge.authorization.users.find((u: Obj) => u['user'] === 'transcoder');
      return { conf: { publish: publish!, subscribe: subscribe! }, helm: { publish: helm.permissions.publish.allow as string[], subscribe: helm.permissions.subscribe.allow as string[] } };
    };

    it('the rungs rendered are every preset\'s in ladders/*.json and the default, each once, plus LADDER\'s when set', () => {
      const files = readdirSync(LADDERS).filter((f) => f.endsWith('.json'));
      expect(files).toEqual(expect.arrayContaining(['default.json', 'web.json']));
      const named = files.flatMap((f) => (JSON.parse(text('ladders', f)) as { name: string }[]).map((r) => r.name));
      expect(sorted(RUNGS)).toEqual(sorted(new Set([...named, ...DEFAULT_LADDER.map((r) => r.name)])));
      expect(presetLadders(LADDERS).map((p) => p.file)).toEqual(sorted(files));
      const own = [{ name: '2160p', shortSide: 2160, videoKbps: 16000, maxKbps: 17000, bufKbps: 34000, preset: 'veryfast', profile: 'high', audioKbps: 128 }];
      expect(deployedRungs(LADDERS, { LADDER: JSON.stringify(own) }).map((r) => r.name)).toEqual(['2160p', ...RUNGS]);
    });

    it('every rung of every preset has a consumer the rendered transcoder user may use', () => {
      const rendered = renderedTranscoder();
      for (const ladder of [DEFAULT_LADDER, ...presetLadders(LADDERS).map((p) => p.rungs)]) {
        const wanted = permissionsOf('transcoder', ladder);
        for (const [where, user] of Object.entries(rendered)) {
          expect(wanted.publish.filter((x) => !user.publish.includes(x)), where).toEqual([]);
          expect(wanted.subscribe.filter((x) => !user.subscribe.includes(x)), where).toEqual([]);
        }
        for (const { name } of ladder) {
          const { consumer, subject } = workRoute('transcode', name);
          expect(rendered.conf.publish).toContain(`$JS.API.CONSUMER.CREATE.${STREAMS.work.name}.${consumer}.${subject}`);
        }
      }
    });

    it('npm run nats:users -- --check passes on the committed files, and fails naming both for a ladder they do not cover', async () => {
      const script = join(REPO_ROOT, 'scripts/nats-users.ts');
      const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !['LADDER', 'LADDER_FILE', 'FIRST_RENDITION'].includes(k)));
      await run(process.execPath, [script, '--check'], { cwd: REPO_ROOT, env: clean, timeout: 30_000 });
      const own = JSON.stringify([{ name: '2160p', shortSide: 2160, videoKbps: 16000, maxKbps: 17000, bufKbps: 34000, preset: 'veryfast', profile: 'high', audioKbps: 128 }]);
      const failed = await run(process.execPath, [script, '--check'], { cwd: REPO_ROOT, env: { ...clean, LADDER: own }, timeout: 30_000 }).then(
        () => undefined,
        (err: { code?: number; stderr?: string }) => err,
      );
      expect(failed?.code).toBe(1);
      expect(failed?.stderr).toContain('deploy/nats/users.conf is not what');
      expect(failed?.stderr).toContain('deploy/nats/values.yaml is not what');
      expect(failed?.stderr).toContain('2160p');
    });

    it('a nats-server running the rendered users.conf lets the transcoder user consume every rung\'s work, and no other', async () => {
      const storeDir = join(dir, 'nats-users');
      const [port, monitor] = [await freePort(), await freePort()];
      const server = spawn('nats-server', ['-c', join(REPO_ROOT, 'deploy/nats/users.conf'), '-js', '-sd', storeDir, '-a', '127.0.0.1', '-p', String(port), '-m', String(monitor)], {
        stdio: 'ignore',
        env: { ...process.env, ...NATS_PASSWORDS() },
      });
      const log = createLogger('deploy-test', 'silent');
      try {
        for (let i = 0; i < 200; i++) {
          if (server.exitCode !== null) throw new Error(`nats-server exited with ${server.exitCode}`);
          if (await fetch(`http://127.0.0.1:${monitor}/healthz?js-enabled-only=true`).then((r) => r.ok, () => false)) break;
          await new Promise((r) => setTimeout(r, 50));
        }
        const bus = await connectBus({ url: `nats://127.0.0.1:${port}`, name: 'deploy-test', log, auth: { user: 'transcoder', password: REQUIRED[natsPasswordVariable('transcoder')]! } });
        try {
          await ensureStream(bus.jsm, STREAMS.work, { update: false });
          for (const rung of RUNGS) {
            const { consumer, subject } = workRoute('transcode', rung);
            // As the transcoder does at start (libs/bus worker), then a message handed back, pulled and acked.
            await ensureConsumer(bus.jsm, { stream: STREAMS.work.name, durable: consumer, filterSubject: subject, ackWaitMs: 30_000, maxDeliver: 5, maxAckPending: 1 });
            await bus.js.publish(subject, rung);
            const msg = await (await bus.js.consumers.get(STREAMS.work.name, consumer)).next({ expires: 5000 });
            expect(msg?.string(), rung).toBe(rung);
            await msg!.ackAck();
          }
          // A rung of no preset: refused, as another stage's consumer would be.
          const other = workRoute('transcode', '2160p');
          const err = await ensureConsumer(bus.jsm, { stream: STREAMS.work.name, durable: other.consumer, filterSubject: other.subject, ackWaitMs: 30_000, maxDeliver: 5, maxAckPending: 1 }).then(
            () => undefined,
            (e: unknown) => (e instanceof Error && e.cause instanceof PermissionViolationError ? e.cause : e),
          );
          expect(err).toBeInstanceOf(PermissionViolationError);
          expect(err).toMatchObject({ subject: `$JS.API.CONSUMER.INFO.${STREAMS.work.name}.${other.consumer}` });
        } finally {
          await closeBus(bus);
        }
      } finally {
        if (server.exitCode === null) {
          const exited = new Promise((ok) => server.once('exit', ok));
          server.kill('SIGTERM');
          await exited;
        }
      }
    });
  });

  it('scales transcoder-720 from TRANSCODER_720_REPLICAS', () => {
    expect(svc('transcoder-720')['deploy']['replicas']).toBe(1);
    expect(scaled['services']['transcoder-720']['deploy']['replicas']).toBe(3);
    expect(scaled['services']['transcoder-360']['deploy']['replicas']).toBe(1);
  });

  describe('the web ladder (profile web-ladder, LADDER_FILE)', () => {
    /** The transcoders a render runs (every service, profiles included) and the rungs each takes. */
    const transcoders = (cfg: Obj) =>
      Object.entries(cfg['services'] as Record<string, Obj>)
        .filter(([name]) => name.startsWith('transcoder-'))
        .map(([name, s]) => ({ name, profiled: Boolean(s['profiles']), rungs: rungsOf(s['command'][1], s['environment']['RENDITIONS']) }));

    it('is one command, in deploy/README.md and the compose file\'s header', () => {
      expect(WEB_TRANSCODERS).toEqual(['transcoder-1080', 'transcoder-480', 'transcoder-240']);
      expect(text('docker-compose.yml')).toContain(`#   ${webCommand().command}\n`);
    });

    it.each(WEB_TRANSCODERS)('%s runs the shared transcoder code on its rung (RENDITIONS) as the transcoder NATS user, otherwise as transcoder-720', (name) => {
      const s = svc(name);
      const rung = WEB.find((r) => transcoderOf(r) === name)!;
      expect(s['command']).toEqual(['node', 'services/transcoder/src/main.ts']);
      expect(existsSync(join(REPO_ROOT, s['command'][1]))).toBe(true);
      expect(envOf(name)['RENDITIONS']).toBe(rung);
      expect(envOf(name)['OTEL_SERVICE_NAME']).toBe(name);
      expect(natsAuth(envOf(name))).toEqual({ user: 'transcoder', password: REQUIRED[natsPasswordVariable('transcoder')] });
      expect(sorted(Object.keys(envOf(name)).filter(isSecret))).toEqual(sorted(SECRETS_OF(name)));
      // Everything else as transcoder-720: image, restart, drain, NATS nodes, S3, the ladder, secrets.
      const { RENDITIONS: _r, OTEL_SERVICE_NAME: _n, ...env } = envOf(name);
      const { OTEL_SERVICE_NAME: _m, ...env720 } = envOf('transcoder-720');
      expect(env).toEqual(env720);
      const { command: _c, environment: _e, profiles: _p, deploy: _d, ...rest } = s;
      const { command: _c7, environment: _e7, deploy: _d7, ...rest720 } = svc('transcoder-720');
      expect(rest).toEqual(rest720);
    });

    it('scales each from TRANSCODER_<N>_REPLICAS', () => {
      for (const name of WEB_TRANSCODERS) expect(svc(name)['deploy']['replicas'], name).toBe(1);
      expect(web['services']['transcoder-1080']['deploy']['replicas']).toBe(2);
      expect(text('docker-compose.yml')).toContain('replicas: ${TRANSCODER_1080_REPLICAS:-1}');
    });

    it('every service that reads the ladder gets LADDER_FILE and FIRST_RENDITION, empty (the default ladder) unless set', () => {
      const mesh = Object.entries(config['services'] as Record<string, Obj>).filter(([, s]) => s['command']?.[0] === 'node');
      const readers = mesh.filter(([, s]) => readsLadder(s['command'][1])).map(([name]) => name);
      expect(sorted(readers)).toEqual(sorted(['ingest-api', 'downloader', 'transcoder-720', 'transcoder-360', ...WEB_TRANSCODERS]));
      const given = (cfg: Obj, key: string) => mesh.filter(([name]) => key in (cfg['services'][name]['environment'] ?? {})).map(([name]) => name);
      for (const key of ['LADDER_FILE', 'FIRST_RENDITION']) {
        expect(sorted(given(config, key)), key).toEqual(sorted(readers));
        for (const name of readers) expect(config['services'][name]['environment'][key], `${name} ${key}`).toBe('');
      }
      for (const name of readers) expect(web['services'][name]['environment']['LADDER_FILE'], name).toBe(webCommand().ladderFile);
      // Empty is unset for the services: the default ladder.
      expect(ladderConfig(envOf('downloader')).rungs).toEqual(DEFAULT_LADDER);
    });

    it('by default the default transcoders take the default ladder; with the documented command every rung has its transcoder', () => {
      const byDefault = transcoders(config).filter((t) => !t.profiled);
      expect(sorted(byDefault.flatMap((t) => t.rungs))).toEqual(sorted(ladderConfig(envOf('downloader')).rungs.map((r) => r.name)));
      // As the image resolves LADDER_FILE: from its working directory, a copy of the repo's ladders/.
      const env = web['services']['downloader']['environment'] as Record<string, string>;
      const ladder = ladderConfig({ ...env, LADDER_FILE: join(REPO_ROOT, env['LADDER_FILE']!) });
      expect(ladder.rungs.map((r) => r.name)).toEqual(WEB);
      const all = transcoders(web);
      expect(sorted(all.flatMap((t) => t.rungs))).toEqual(sorted(WEB));
      // Each named after its rung's consumer, which it consumes.
      for (const t of all) expect(t.rungs.map(transcoderOf), t.name).toEqual([t.name]);
      expect(ladder.first).toBe('720p');
    });
  });
});

describe('Caddy in front (deploy/caddy/Caddyfile)', () => {
  const CADDYFILE = join(REPO_ROOT, 'deploy/caddy/Caddyfile');
  const adapt = async (env: Record<string, string>): Promise<Obj> => {
    const { stdout } = await run('caddy', ['adapt', '--config', CADDYFILE, '--adapter', 'caddyfile'], { env: { ...process.env, ...env }, timeout: 20_000 });
    return JSON.parse(stdout) as Obj;
  };
  /** The proxy's settings as compose gives them. */
  const proxyEnv = () => svc('proxy')['environment'] as Record<string, string>;
  const routesOf = (cfg: Obj): Obj[] => cfg['apps']['http']['servers']['srv0']['routes'][0]['handle'][0]['routes'];
  const proxyOf = (route: Obj): Obj => route['handle'][0]['routes'][0]['handle'][0];

  it('is mounted read-only and published on 443 and 80', () => {
    expect(svc('proxy')['image']).toBe('caddy:2');
    expect(svc('proxy')['volumes']).toContain(`${CADDYFILE}:/etc/caddy/Caddyfile:ro`);
  });

  it('signs its own certificate for localhost by default (tls internal), and gets one from ACME for DOMAIN with ACME_EMAIL', async () => {
    const local = await adapt(proxyEnv());
    expect(local['apps']['tls']['automation']['policies']).toEqual([{ subjects: ['localhost'], issuers: [{ module: 'internal' }] }]);
    expect(local['admin']).toEqual({ disabled: true });
    const public_ = await adapt({ ...proxyEnv(), DOMAIN: 'video.example.com', ACME_EMAIL: 'ops@example.com' });
    const [policy] = public_['apps']['tls']['automation']['policies'];
    expect(policy.subjects).toEqual(['video.example.com']);
    expect(policy.issuers[0]).toEqual({ module: 'acme', email: 'ops@example.com' });
  });

  it('sends event streams unbuffered, the client buckets to MinIO and everything else to the API', async () => {
    const routes = routesOf(await adapt(proxyEnv()));
    const env = envOf('ingest-api');
    const byPath = Object.fromEntries(routes.map((r) => [JSON.stringify(r['match']?.[0]?.path ?? '*'), proxyOf(r)]));
    const buckets = [env['S3_INPUT_BUCKET'], env['S3_OUTPUT_BUCKET'], env['S3_THUMBNAIL_OUTPUT_BUCKET']].map((b) => `/${b}/*`);
    expect(byPath).toEqual({
      [JSON.stringify(buckets)]: { handler: 'reverse_proxy', upstreams: [{ dial: 'minio:9000' }] },
      [JSON.stringify(['/events', '/events/*', '/video/encoding/*/events'])]: { handler: 'reverse_proxy', flush_interval: -1, upstreams: [{ dial: 'ingest-api:8000' }] },
      '"*"': { handler: 'reverse_proxy', upstreams: [{ dial: 'ingest-api:8000' }] },
    });
  });

  describe('live, between stand-ins for the API and MinIO on loopback', () => {
    let caddy: ChildProcess | undefined;
    let api: Server;
    let s3: Server;
    let httpsPort: number;
    let ca: string;
    const open = new Set<import('node:http').ServerResponse>();

    const listen = (server: Server) => new Promise<number>((ok) => server.listen(0, '127.0.0.1', () => ok((server.address() as AddressInfo).port)));
    const freePort = async () => {
      const s = createServer();
      const port = await listen(s);
      await new Promise((ok) => s.close(ok));
      return port;
    };
    const reachable = (port: number) =>
      new Promise<boolean>((ok) => {
        const socket = connect(port, '127.0.0.1', () => (socket.destroy(), ok(true)));
        socket.on('error', () => ok(false));
      });

    beforeAll(async () => {
      api = createServer((req, res) => {
        if (req.url!.endsWith('/events')) {
          // An event stream that stays open: the first event must reach the client while it does.
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          res.write('data: first\n\n');
          open.add(res);
          return;
        }
        res.end(JSON.stringify({ upstream: 'api', path: req.url, host: req.headers.host }));
      });
      s3 = createServer((req, res) => res.end(JSON.stringify({ upstream: 's3', path: req.url, host: req.headers.host })));
      const [apiPort, s3Port, httpPort] = await Promise.all([listen(api), listen(s3), freePort()]);
      httpsPort = await freePort();
      const cfg = await adapt(proxyEnv());
      // The same routes; only where it listens, where the upstreams are and where it keeps its CA change.
      const json = JSON.stringify(cfg).replaceAll('"ingest-api:8000"', `"127.0.0.1:${apiPort}"`).replaceAll('"minio:9000"', `"127.0.0.1:${s3Port}"`);
      const live = JSON.parse(json) as Obj;
      const http = live['apps']['http'];
      Object.assign(http, { http_port: httpPort, https_port: httpsPort });
      Object.assign(http['servers']['srv0'], { listen: [`127.0.0.1:${httpsPort}`], automatic_https: { disable_redirects: true } });
      live['storage'] = { module: 'file_system', root: join(dir, 'caddy') };
      live['apps']['pki'] = { certificate_authorities: { local: { install_trust: false } } };
      live['logging'] = { logs: { default: { level: 'ERROR' } } };
      const file = join(dir, 'caddy.json');
      await writeFile(file, JSON.stringify(live));
      caddy = spawn('caddy', ['run', '--config', file], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, HOME: dir, XDG_DATA_HOME: dir, XDG_CONFIG_HOME: dir } });
      let stderr = '';
      caddy.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      const root = join(dir, 'caddy', 'pki', 'authorities', 'local', 'root.crt');
      for (let i = 0; i < 200 && !(existsSync(root) && (await reachable(httpsPort))); i++) {
        if (caddy.exitCode !== null) throw new Error(`caddy exited: ${stderr}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      ca = await readFile(root, 'utf8');
    }, 30_000);

    afterAll(async () => {
      for (const res of open) res.destroy();
      if (caddy && caddy.exitCode === null) {
        const exited = new Promise((ok) => caddy!.once('exit', ok));
        caddy.kill('SIGTERM');
        await exited;
      }
      await Promise.all([api, s3].map((s) => new Promise((ok) => s.close(ok))));
    });

    /** GET over TLS, trusting only Caddy's CA, as a client of https://localhost; resolves on the first body chunk. */
    const get = (path: string) =>
      new Promise<{ status: number; type: string | undefined; first: string }>((ok, fail) => {
        const req = httpsRequest({ host: '127.0.0.1', port: httpsPort, path, servername: 'localhost', headers: { host: 'localhost' }, ca }, (res) => {
          res.once('data', (chunk: Buffer) => {
            ok({ status: res.statusCode!, type: res.headers['content-type'], first: chunk.toString() });
            req.destroy();
          });
        });
        req.on('error', fail);
        req.setTimeout(10_000, () => fail(new Error(`no response for ${path}`)));
        req.end();
      });

    it.each(['/events', '/video/encoding/abc/events'])('streams %s: the first event arrives while the stream is open', async (path) => {
      const res = await get(path);
      expect(res).toEqual({ status: 200, type: 'text/event-stream', first: 'data: first\n\n' });
    });

    it('sends the client buckets to MinIO with the Host header unchanged, the rest to the API', async () => {
      expect(JSON.parse((await get('/video-output/cat.mp4/manifest.mpd')).first)).toEqual({ upstream: 's3', path: '/video-output/cat.mp4/manifest.mpd', host: 'localhost' });
      expect(JSON.parse((await get('/video-input/uploads/x?X-Amz-Signature=abc')).first)).toMatchObject({ upstream: 's3', host: 'localhost' });
      for (const path of ['/', '/docs', '/video/encoding/abc', `/${envOf('ingest-api')['S3_WORK_BUCKET']}/job/x`]) {
        expect(JSON.parse((await get(path)).first), path).toMatchObject({ upstream: 'api', path });
      }
    });
  });
});

describe('image', () => {
  const dockerfile = () => text('Dockerfile');
  const pkg = JSON.parse(text('package.json')) as { dependencies: Record<string, string>; devDependencies: Record<string, string> };

  it('builds on node:24-slim with every workspace manifest copied before npm ci', () => {
    expect(dockerfile().match(/^FROM .*$/gm)).toEqual(['FROM node:24-slim']);
    // A workspace missing here makes `npm ci` in the image fail (the lockfile names it).
    for (const root of ['libs', 'services']) {
      for (const ws of readdirSync(join(REPO_ROOT, root))) {
        if (!existsSync(join(REPO_ROOT, root, ws, 'package.json'))) continue;
        expect(dockerfile()).toContain(`COPY ${root}/${ws}/package.json ${root}/${ws}/\n`);
      }
    }
  });

  it('installs production dependencies only, Shaka Packager among them', () => {
    const ci = dockerfile().match(/npm ci[^\n\\]*/g);
    expect(ci).toHaveLength(1);
    expect(ci![0]).toMatch(/ --omit=dev\b/);
    // The packager runs this package's binary (libs/media/src/run.ts).
    expect(text('libs/media/src/run.ts')).toContain("require.resolve('shaka-packager/package.json')");
    expect(pkg.dependencies['shaka-packager']).toBeDefined();
    expect(pkg.devDependencies['shaka-packager']).toBeUndefined();
    const lock = JSON.parse(text('package-lock.json')) as { packages: Record<string, { dev?: boolean }> };
    expect(lock.packages['node_modules/shaka-packager']?.dev).toBeUndefined();
  });

  it('every package the services import at run time is a dependency, not a devDependency', () => {
    const { files: seen, packages } = modulesOf([...new Set([...SERVICES, ...WEB_TRANSCODERS].map(entryOf))]);
    expect(seen.size).toBeGreaterThan(SERVICES.length * 2);
    expect([...seen].filter((f) => f.includes('/libs/testkit/'))).toEqual([]);
    expect(packages.has('shaka-packager')).toBe(true);
    const notInDependencies = [...packages].filter(([name]) => !(name in pkg.dependencies)).map(([name, from]) => `${name} (${from})`);
    expect(notInDependencies).toEqual([]);
  });

  it('holds the preset ladders in its working directory, so LADDER_FILE=ladders/web.json resolves there', () => {
    expect(dockerfile()).toMatch(/^WORKDIR \/app$/m);
    expect(dockerfile()).toMatch(/^COPY ladders\/ ladders\/$/m);
    const ignored = text('.dockerignore').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
    expect(ignored.filter((l) => /^(\*\*\/)?ladders|^\*\.json$/.test(l))).toEqual([]);
    expect(webCommand().ladderFile).toBe('ladders/web.json');
  });

  it('keeps .env out of the build context', () => {
    const ignored = text('.dockerignore').split('\n').map((l) => l.trim());
    expect(ignored).toContain('.env');
    expect(ignored).toContain('*.env');
  });
});

describe('collector', () => {
  it('receives OTLP and exports traces to Jaeger', () => {
    const collector = parse(text('otel/collector.yaml')) as Obj;
    expect(collector['receivers']['otlp']['protocols']['http']['endpoint']).toBe('0.0.0.0:4318');
    expect(collector['exporters']['otlp/jaeger']['endpoint']).toBe('jaeger:4317');
    expect(collector['service']['pipelines']['traces']).toMatchObject({ receivers: ['otlp'], exporters: expect.arrayContaining(['otlp/jaeger']) });
    expect(new URL(envOf('ingest-api')['OTEL_EXPORTER_OTLP_ENDPOINT']!).port).toBe('4318');
  });
});

describe('deploy/k8s', () => {
  const K8S = join(REPO_ROOT, 'deploy', 'k8s');
  // The models' constructors take what the YAML says; validate() checks it against the schema.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const MODELS: Record<string, (m: any) => { validate(): void }> = {
    'v1/ConfigMap': (m) => new ConfigMap(m),
    'v1/Service': (m) => new Service(m),
    'apps/v1/Deployment': (m) => new Deployment(m),
    'networking.k8s.io/v1/NetworkPolicy': (m) => new NetworkPolicy(m),
    'keda.sh/v1alpha1/ScaledObject': (m) => new ScaledObject(m),
  };
  let all: Obj[];
  const find = (kind: string, name: string) => all.find((m) => m['kind'] === kind && m['metadata']?.name === name);
  const podSpec = (name: string): Obj => find('Deployment', name)!['spec'].template.spec;
  const configData = (): Record<string, string> => find('ConfigMap', 'video-mesh-config')!['data'];
  const readme = () => text('deploy/README.md');
  /** The Deployments of services.yaml and of the web ladder's other rungs (ladder-web.yaml). */
  const K8S_SERVICES = [...SERVICES, ...WEB_TRANSCODERS];
  const deployments = () => all.filter((m) => m['kind'] === 'Deployment');
  const fromFile = (file: string) => parseAllDocuments(text('deploy/k8s', file)).map((d) => d.toJS() as Obj).filter(Boolean);

  beforeAll(async () => {
    all = [];
    for (const file of readdirSync(K8S).filter((f) => f.endsWith('.yaml'))) {
      for (const doc of parseAllDocuments(await readFile(join(K8S, file), 'utf8'))) {
        expect(doc.errors, file).toEqual([]);
        if (doc.contents) all.push(doc.toJS() as Obj);
      }
    }
  });

  it('every manifest is valid against its schema', () => {
    expect(all.length).toBeGreaterThan(SERVICES.length);
    for (const m of all) {
      const model = MODELS[`${m['apiVersion']}/${m['kind']}`];
      expect(model, `${m['apiVersion']} ${m['kind']}`).toBeDefined();
      expect(() => model!(m).validate(), `${m['kind']} ${m['metadata']?.name}`).not.toThrow();
    }
  });

  it.each(K8S_SERVICES)('%s: a Deployment that runs its main.ts from the shared image, drains, and runs unprivileged without a token', (name) => {
    const spec = podSpec(name);
    const [c] = spec['containers'];
    expect(c.command).toEqual(['node', entryOf(name)]);
    expect(existsSync(join(REPO_ROOT, c.command[1]))).toBe(true);
    expect(c.image).toBe('video-mesh:latest');
    expect(c.env).toContainEqual({ name: 'OTEL_SERVICE_NAME', value: name });
    expect(spec['automountServiceAccountToken']).toBe(false);
    // SIGTERM drains for DRAIN_MS before the kill.
    // Its settings as the service reads them (the NATS password, a secret, stands in).
    const drainMs = commonConfig({ ...Object.fromEntries((c.env as Obj[]).filter((e) => 'value' in e).map((e) => [e['name'], e['value']])), NATS_PASSWORD: `p${'0'.repeat(32)}` }).drainMs;
    expect(spec['terminationGracePeriodSeconds'] * 1000).toBeGreaterThanOrEqual(drainMs + 5000);
    expect(spec['securityContext']).toMatchObject({ runAsNonRoot: true });
    expect(c.securityContext).toMatchObject({ readOnlyRootFilesystem: true, allowPrivilegeEscalation: false });
    // The only place the services write: FFmpeg and Shaka Packager scratch space.
    expect(c.volumeMounts).toContainEqual({ name: 'tmp', mountPath: '/tmp' });
    expect(spec['volumes']).toContainEqual(expect.objectContaining({ name: 'tmp', emptyDir: expect.any(Object) }));
    const ports = Object.fromEntries(c.ports.map((p: Obj) => [p['name'], p['containerPort']]));
    expect(String(ports['metrics'])).toBe(configData()['METRICS_PORT']);
    expect(c.readinessProbe).toBeDefined();
  });

  it.each(K8S_SERVICES)('%s gets only the secrets it uses, key by key', (name) => {
    const [c] = podSpec(name)['containers'];
    expect(c.envFrom).toEqual([{ configMapRef: { name: 'video-mesh-config' } }]);
    const refs = (c.env as Obj[]).filter((e) => e['valueFrom']);
    expect(refs.every((e) => e['valueFrom'].secretKeyRef?.key === e['name'])).toBe(true);
    expect(sorted(refs.map((e) => e['name']))).toEqual(sorted(SECRETS_OF(name)));
    for (const e of refs) expect(Boolean(e['valueFrom'].secretKeyRef.optional), e['name']).toBe(OPTIONAL.includes(e['name']));
  });

  it.each(K8S_SERVICES)('%s logs in to NATS as its own user, with the password from that user\'s Secret', (name) => {
    const env = podSpec(name)['containers'][0].env as Obj[];
    const user = natsUserOf(name);
    expect(env).toContainEqual({ name: 'NATS_USER', value: user });
    expect(env).toContainEqual({ name: 'NATS_PASSWORD', valueFrom: { secretKeyRef: { name: natsSecretName(user), key: 'NATS_PASSWORD' } } });
  });

  it('the README creates every secret the Deployments read, and nothing else', () => {
    const created = new Set(
      [...readme().matchAll(/kubectl create secret generic ([\w-]+)((?: --from-literal=\w+=\S+)+)/g)].flatMap(([, secret, literals]) =>
        [...literals!.matchAll(/--from-literal=(\w+)=/g)].map((m) => `${secret}/${m[1]}`),
      ),
    );
    const read = new Set(
      deployments().flatMap((d) => (d['spec'].template.spec.containers[0].env as Obj[]).filter((e) => e['valueFrom']).map((e) => `${e['valueFrom'].secretKeyRef.name}/${e['valueFrom'].secretKeyRef.key}`)),
    );
    expect(created).toEqual(read);
  });

  it('gives the services every setting they require, secrets apart', () => {
    const data = configData();
    for (const key of ['NATS_URL', 'NATS_REPLICAS', 'MONGODB_URI', 'S3_INPUT_BUCKET', 'S3_OUTPUT_BUCKET', 'S3_THUMBNAIL_OUTPUT_BUCKET', 'MAIN_API_ENDPOINT', 'OTEL_EXPORTER_OTLP_ENDPOINT']) {
      expect(data[key], key).toBeTruthy();
    }
    expect(Object.keys(data).filter(isSecret)).toEqual([]);
    // The notifier refuses http unless WEBHOOK_ALLOW_HTTP=1; its NetworkPolicy lets it out on https.
    expect(new URL(data['MAIN_API_ENDPOINT']!).protocol).toBe('https:');
    expect(data['WEBHOOK_ALLOW_HTTP']).toBeUndefined();
  });

  it('serves the API, probed on /healthz', () => {
    const api = podSpec('ingest-api')['containers'][0];
    expect(api.readinessProbe.httpGet).toEqual({ path: '/healthz', port: 'http' });
    expect(find('Service', 'ingest-api')!['spec']).toMatchObject({ selector: { 'app.kubernetes.io/name': 'ingest-api' }, ports: [{ port: 8000, targetPort: 'http' }] });
  });

  describe('NetworkPolicies', () => {
    const policies = () => all.filter((m) => m['kind'] === 'NetworkPolicy');
    const selects = (selector: Obj, labels: Record<string, string>) =>
      Object.entries(selector['matchLabels'] ?? {}).every(([k, v]) => labels[k] === v) &&
      ((selector['matchExpressions'] ?? []) as Obj[]).every((e) => e['operator'] === 'In' && (e['values'] as string[]).includes(labels[e['key']]!));
    const peer = (p: Obj | undefined) => {
      if (!p) return 'any';
      const part = (kind: string, s: Obj | undefined) => (s ? `${kind}{${Object.entries(s['matchLabels'] ?? {}).map(([k, v]) => `${k}=${v}`).join(',')}}` : '');
      return [part('ns', p['namespaceSelector']), part('pods', p['podSelector'])].filter(Boolean).join(' ');
    };
    /** Everything the policies selecting these labels allow, as "in|out PROTO/PORT peer" lines. */
    const allowed = (labels: Record<string, string>) => {
      const lines = new Set<string>();
      for (const np of policies().filter((p) => selects(p['spec'].podSelector, labels))) {
        for (const [dir, key, peers] of [['in', 'ingress', 'from'], ['out', 'egress', 'to']] as const) {
          for (const rule of (np['spec'][key] ?? []) as Obj[]) {
            for (const port of rule['ports'] as Obj[]) {
              for (const p of (rule[peers] as Obj[] | undefined) ?? [undefined]) lines.add(`${dir} ${port['protocol']}/${port['port']} ${peer(p)}`);
            }
          }
        }
      }
      return lines;
    };
    const labelsOf = (name: string): Record<string, string> => find('Deployment', name)!['spec'].template.metadata.labels;
    const natsPods = () => {
      const release = /helm install ([\w-]+) nats\/nats -f deploy\/nats\/values\.yaml/.exec(readme())![1]!;
      return { 'app.kubernetes.io/name': 'nats', 'app.kubernetes.io/instance': release };
    };
    const NATS = 'pods{app.kubernetes.io/name=nats,app.kubernetes.io/instance=nats}';
    const MONITORING = 'ns{kubernetes.io/metadata.name=monitoring}';
    const DNS = ['out UDP/53', 'out TCP/53'].map((l) => `${l} ns{kubernetes.io/metadata.name=kube-system} pods{k8s-app=kube-dns}`);
    const EVERY = [...DNS, `out TCP/4222 ${NATS}`, 'out TCP/4318 any', `in TCP/9464 ${MONITORING}`];
    const S3 = ['out TCP/443 any', 'out TCP/9000 any'];
    const EXPECTED = (name: string): string[] =>
      name === 'ingest-api' ? [...EVERY, ...S3, 'in TCP/8000 any', 'out TCP/27017 any'] : name === 'notifier' ? [...EVERY, 'out TCP/443 any'] : [...EVERY, ...S3];

    it('deny everything in and out of every video-mesh pod by default', () => {
      const deny = policies().filter((p) => !p['spec'].ingress && !p['spec'].egress);
      expect(deny).toHaveLength(1);
      expect(deny[0]!['spec'].policyTypes).toEqual(['Ingress', 'Egress']);
      for (const d of deployments()) expect(selects(deny[0]!['spec'].podSelector, d['spec'].template.metadata.labels), d['metadata'].name).toBe(true);
    });

    it.each(K8S_SERVICES)('%s may make and take only the connections it needs', (name) => {
      expect(sorted(allowed(labelsOf(name)))).toEqual(sorted(EXPECTED(name)));
    });

    it('select every transcoder by its component label, so a rung added needs no policy edited', () => {
      const transcoders = deployments().filter((d) => d['metadata'].name.startsWith('transcoder-'));
      expect(transcoders.length).toBe(RUNGS.length);
      for (const d of transcoders) expect(d['spec'].template.metadata.labels['app.kubernetes.io/component'], d['metadata'].name).toBe('transcoder');
      expect(JSON.stringify(policies())).not.toMatch(/transcoder-/);
      // A transcoder of a rung no file names yet gets what every transcoder gets.
      expect(sorted(allowed({ ...labelsOf('transcoder-720'), 'app.kubernetes.io/name': 'transcoder-2160' }))).toEqual(sorted(EXPECTED('transcoder-2160')));
    });

    it("the chart's NATS pods take clients from the mesh only, routes from each other, monitoring from Prometheus", () => {
      expect(NATS).toBe(`pods{${Object.entries(natsPods()).map(([k, v]) => `${k}=${v}`).join(',')}}`);
      expect(sorted(allowed(natsPods()))).toEqual(
        sorted([`in TCP/4222 pods{app.kubernetes.io/part-of=video-mesh}`, `in TCP/6222 ${NATS}`, `in TCP/8222 ${MONITORING}`, `out TCP/6222 ${NATS}`, ...DNS]),
      );
    });

    it('the notifier may reach the backend on the port of MAIN_API_ENDPOINT', () => {
      const url = new URL(configData()['MAIN_API_ENDPOINT']!);
      expect(allowed(labelsOf('notifier'))).toContain(`out TCP/${url.port || 443} any`);
    });
  });

  describe('the web ladder (ladder-web.yaml, LADDER_FILE in config.yaml)', () => {
    /** Name-independent: a manifest of transcoder-<rung> as it reads for transcoder-720. */
    const as720 = (m: Obj, name: string) => JSON.parse(JSON.stringify(m).replaceAll(`"${name}"`, '"transcoder-720"').replaceAll(`\\"${name}\\"`, '\\"transcoder-720\\"')) as Obj;
    /** Requests in cores, limits in MiB. */
    const cores = (q: string) => (q.endsWith('m') ? Number(q.slice(0, -1)) / 1000 : Number(q));
    const mib = (q: string) => Number(q.replace(/(Gi|Mi)$/, '')) * (q.endsWith('Gi') ? 1024 : 1);

    it('holds a Deployment and a ScaledObject for each of the web ladder\'s other rungs, and nothing else', () => {
      const docs = fromFile('ladder-web.yaml');
      expect(sorted(docs.map((m) => `${m['kind']}/${m['metadata'].name}`))).toEqual(sorted(WEB_TRANSCODERS.flatMap((n) => [`Deployment/${n}`, `ScaledObject/${n}`])));
    });

    it.each(WEB_TRANSCODERS)('%s is transcoder-720 with its rung: the shared code, RENDITIONS, resources for the rung', (name) => {
      const rung = WEB.find((r) => transcoderOf(r) === name)!;
      const d = find('Deployment', name)!;
      const [c] = d['spec'].template.spec.containers;
      expect(c.command).toEqual(['node', 'services/transcoder/src/main.ts']);
      expect((c.env as Obj[]).filter((e) => e['name'] === 'RENDITIONS')).toEqual([{ name: 'RENDITIONS', value: rung }]);
      // The rest as transcoder-720's: labels, security, secrets, drain, probes, ports, volumes.
      const same = as720(d, name);
      const ref = find('Deployment', 'transcoder-720')!;
      const sc = same['spec'].template.spec;
      const rc = ref['spec'].template.spec;
      sc.containers[0].command = rc.containers[0].command;
      sc.containers[0].env = (sc.containers[0].env as Obj[]).filter((e) => e['name'] !== 'RENDITIONS');
      sc.containers[0].resources = rc.containers[0].resources;
      sc.volumes[0].emptyDir = rc.volumes[0].emptyDir;
      same['spec'].replicas = ref['spec'].replicas;
      expect(same).toEqual(ref);
      // Its ScaledObject is transcoder-720's on its own consumer.
      expect(as720(find('ScaledObject', name)!, name)).toEqual(find('ScaledObject', 'transcoder-720'));
    });

    it('gives a larger rung no fewer cores and no less memory', () => {
      const byRung = deployedRungs(LADDERS, {}).map((r) => podSpec(transcoderOf(r.name))['containers'][0].resources as Obj);
      for (let i = 1; i < byRung.length; i++) {
        expect(cores(byRung[i - 1]!['requests'].cpu)).toBeGreaterThanOrEqual(cores(byRung[i]!['requests'].cpu));
        expect(mib(byRung[i - 1]!['limits'].memory)).toBeGreaterThanOrEqual(mib(byRung[i]!['limits'].memory));
      }
      // Whole cores, as the README advises for encodes.
      for (const r of byRung) expect(Number.isInteger(cores(r['requests'].cpu))).toBe(true);
    });

    it('config.yaml\'s LADDER_FILE, uncommented, names the preset whose every rung has a transcoder, as the README says to apply it', () => {
      const commented = text('deploy/k8s/config.yaml');
      expect(configData()['LADDER_FILE']).toBeUndefined();
      const line = /^(\s*)# (LADDER_FILE: \S+)$/m.exec(commented)!;
      const data = (parse(commented.replace(line[0], `${line[1]}${line[2]}`)) as Obj)['data'] as Record<string, string>;
      expect(data['LADDER_FILE']).toBe(webCommand().ladderFile);
      const ladder = ladderConfig({ LADDER_FILE: join(REPO_ROOT, data['LADDER_FILE']!) }).rungs.map((r) => r.name);
      const takes = (d: Obj) => rungsOf(d['spec'].template.spec.containers[0].command[1], (d['spec'].template.spec.containers[0].env as Obj[]).find((e) => e['name'] === 'RENDITIONS')?.['value']);
      const transcoders = deployments().filter((d) => d['metadata'].name.startsWith('transcoder-'));
      expect(sorted(transcoders.flatMap(takes))).toEqual(sorted(ladder));
      // Without it, services.yaml's transcoders take the default ladder.
      expect(sorted(fromFile('services.yaml').filter((m) => m['metadata'].name.startsWith('transcoder-')).flatMap(takes))).toEqual(sorted(DEFAULT_LADDER.map((r) => r.name)));
      expect(readme()).toContain('kubectl apply -f deploy/k8s/config.yaml -f deploy/k8s/ladder-web.yaml');
      expect(readme()).toContain('kubectl rollout restart deployment ingest-api downloader transcoder-720 transcoder-360');
    });
  });

  describe('autoscaling', () => {
    const queueMetrics = () => text('services/ingest-api/src/queue-metrics.ts');

    it.each(RUNGS)('the %s rung (every preset\'s) has a transcoder that scales on encodes waiting or held by its own consumer, one replica each', (rendition) => {
      const { consumer } = workRoute('transcode', rendition);
      const so = find('ScaledObject', consumer)!;
      expect(so['spec'].scaleTargetRef.name).toBe(consumer);
      expect(find('Deployment', consumer)).toBeDefined();
      const [trigger, ...others] = so['spec'].triggers as Obj[];
      expect(others).toEqual([]);
      expect(trigger!['type']).toBe('prometheus');
      // Waiting (pending) plus held (ack_pending): busy replicas count as needed, never as spare.
      const metrics = [...(trigger!['metadata'].query as string).matchAll(/max\((\w+)\{consumer="([\w-]+)"\}\)/g)].map((m) => [m[1], m[2]]);
      expect(trigger!['metadata'].query.replace(/max\(\w+\{consumer="[\w-]+"\}\)/g, 'M')).toBe('M + M');
      expect(metrics).toEqual([
        ['mesh_queue_pending', consumer],
        ['mesh_queue_ack_pending', consumer],
      ]);
      // Those are the gauges ingest-api exports.
      for (const [metric] of metrics) expect(queueMetrics()).toContain(`gauge('${metric}'`);
      // One replica per TRANSCODER_CONCURRENCY encodes (1 unless the Deployment sets it).
      const env = podSpec(consumer)['containers'][0].env as Obj[];
      expect(trigger!['metadata'].threshold).toBe(env.find((e) => e['name'] === 'TRANSCODER_CONCURRENCY')?.['value'] ?? '1');
      expect(trigger!['metadata'].ignoreNullValues).toBe('false');
      expect(so['spec'].minReplicaCount).toBeGreaterThanOrEqual(1);
    });

    it.each(RUNGS.map(transcoderOf))('%s scales in one pod at a time, slowly, into a drain that finishes the encode', (name) => {
      const down = find('ScaledObject', name)!['spec'].advanced.horizontalPodAutoscalerConfig.behavior.scaleDown;
      expect(down.stabilizationWindowSeconds).toBeGreaterThanOrEqual(300);
      expect(down.policies.length).toBeGreaterThan(0);
      for (const p of down.policies as Obj[]) expect(p).toMatchObject({ type: 'Pods', value: 1 });
      const spec = podSpec(name);
      const env = spec['containers'][0].env as Obj[];
      const drainMs = Number(env.find((e) => e['name'] === 'DRAIN_MS')?.['value']);
      // Long enough for an hour-long 720p encode; accepted by the services' config; inside the grace period.
      expect(drainMs).toBeGreaterThanOrEqual(30 * 60_000);
      expect(commonConfig({ DRAIN_MS: String(drainMs) }).drainMs).toBe(drainMs);
      expect(spec['terminationGracePeriodSeconds'] * 1000).toBeGreaterThanOrEqual(drainMs + 30_000);
    });
  });

  describe('NATS from the official Helm chart (deploy/nats/values.yaml)', () => {
    const values = () => parse(text('deploy/nats/values.yaml')) as Obj;
    /** Keys of the chart's values.yaml (nats-io/k8s, chart nats 2.14) that this file may set; under `merge`, the chart takes any Kubernetes field. */
    const CHART_KEYS = [
      'config.cluster.enabled',
      'config.cluster.replicas',
      'config.jetstream.enabled',
      'config.jetstream.fileStore.enabled',
      'config.jetstream.fileStore.dir',
      'config.jetstream.fileStore.pvc.enabled',
      'config.jetstream.fileStore.pvc.size',
      'config.jetstream.fileStore.pvc.storageClassName',
      'config.jetstream.memoryStore.enabled',
      'config.monitor.enabled',
      'config.monitor.port',
      'config.merge',
      'container.env',
      'natsBox.enabled',
      'podTemplate.merge',
    ];
    /** Paths to set values; under `merge` (any config or Kubernetes field) and `env` (a map of variables) the chart takes what is given. */
    const leaves = (o: Obj, prefix = ''): string[] =>
      Object.entries(o).flatMap(([k, v]) => {
        const path = prefix ? `${prefix}.${k}` : k;
        return v && typeof v === 'object' && k !== 'merge' && k !== 'env' ? leaves(v as Obj, path) : [path];
      });

    it('sets only keys the chart knows', () => {
      expect(leaves(values()).filter((k) => !CHART_KEYS.includes(k))).toEqual([]);
    });

    it('runs three JetStream nodes as a cluster on file storage PVCs, with monitoring, no toolbox and no token', () => {
      const v = values();
      expect(v['config'].cluster).toEqual({ enabled: true, replicas: 3 });
      expect(String(v['config'].cluster.replicas)).toBe(configData()['NATS_REPLICAS']);
      expect(v['config'].jetstream).toMatchObject({ enabled: true, fileStore: { enabled: true, pvc: { enabled: true } }, memoryStore: { enabled: false } });
      expect(v['config'].monitor).toEqual({ enabled: true, port: 8222 });
      expect(v['natsBox']).toEqual({ enabled: false });
      expect(v['podTemplate'].merge.spec.automountServiceAccountToken).toBe(false);
    });

    it('carries the users libs/bus/src/permissions.ts renders, each password from its Secret (npm run nats:users)', () => {
      const v = values();
      const helm = natsHelmValues(deployedRungs(LADDERS, {}));
      expect(v['config'].merge).toEqual({ authorization: helm.authorization });
      expect(v['container']).toEqual({ env: helm.env });
      // The pods read exactly the Secrets the Deployments read.
      const read = new Set(SERVICES.map((n) => natsSecretName(natsUserOf(n))));
      expect(new Set(Object.values(helm.env).map((e) => e.valueFrom.secretKeyRef.name))).toEqual(read);
    });

    it('makes a config nats-server accepts, as the chart writes it (JSON, `<< $VAR >>` unquoted)', async () => {
      // The chart's nats.formatConfig: pretty JSON of config, then "<< x >>" strings unquoted.
      const json = JSON.stringify({ port: 4222, ...values()['config'].merge }, null, 2).replace(/"<<\s+(.*?)\s+>>"/g, '$1');
      const file = join(dir, 'helm-nats.conf');
      await writeFile(file, json);
      const env = Object.fromEntries(Object.entries(values()['container'].env as Record<string, unknown>).map(([k]) => [k, NATS_PASSWORDS()[k]!]));
      const { stderr } = await run('nats-server', ['-c', file, '-t'], { env: { ...process.env, ...env } });
      expect(stderr).toContain('is valid');
    });

    it("the services reach the chart's client Service for the release the README installs", () => {
      const release = /helm install ([\w-]+) nats\/nats -f deploy\/nats\/values\.yaml/.exec(readme())![1]!;
      // The chart names its Service after the release when the release name contains "nats".
      const service = release.includes('nats') ? release : `${release}-nats`;
      expect(new URL(configData()['NATS_URL']!)).toMatchObject({ protocol: 'nats:', hostname: service, port: '4222' });
      expect(readme()).toContain('helm repo add nats ');
    });
  });
});
