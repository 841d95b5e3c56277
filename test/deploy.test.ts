/**
 * Container deployment: docker-compose.yml validates with docker-compose 1.29 (Debian's) and runs every
 * service of the mesh from the one image, with its own command and OTEL_SERVICE_NAME; the transcoders
 * scale from the environment; the collector sends traces to Jaeger; the image is Node 24. The Kubernetes
 * manifests in deploy/k8s validate against the Kubernetes and KEDA schemas (kubernetes-models) and run
 * the same services the same way.
 *
 * Compose is checked on the text `docker-compose config` renders: one block per service under `services:`.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parseAllDocuments } from 'yaml';
import { ConfigMap, Service } from 'kubernetes-models/v1';
import { Deployment } from 'kubernetes-models/apps/v1';
import { ScaledObject } from '@kubernetes-models/keda/keda.sh/v1alpha1';
import { STREAMS } from '@mesh/bus';
import { WORK } from '@mesh/common';
import { REPO_ROOT, SERVICES } from '@mesh/testkit';

const run = promisify(execFile);
const INFRA = ['nats', 'mongodb', 'minio', 'minio-init', 'otel-collector', 'jaeger'];

let dir: string;
let envFile: string;

/** `docker-compose -f docker-compose.yml <args>` from the repo root, with only `env` added to a clean environment. */
async function compose(args: string[], env: Record<string, string> = {}): Promise<string> {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(TRANSCODER_\d+_REPLICAS|COMPOSE_.*)$/.test(k)));
  // An empty env file, so a developer's ./.env does not change what is rendered.
  const { stdout } = await run('docker-compose', ['-f', 'docker-compose.yml', '--env-file', envFile, ...args], {
    cwd: REPO_ROOT,
    env: { ...base, ...env },
    timeout: 20_000,
  });
  return stdout;
}

/** The rendered block of each service: from `  <name>:` to the next service or top-level key. */
function serviceBlocks(config: string): Map<string, string> {
  const blocks = new Map<string, string>();
  const lines = config.split('\n');
  const start = lines.indexOf('services:');
  expect(start).toBeGreaterThanOrEqual(0);
  let name: string | undefined;
  let body: string[] = [];
  const flush = () => name !== undefined && blocks.set(name, body.join('\n'));
  for (const line of lines.slice(start + 1)) {
    if (/^\S/.test(line)) break;
    const m = /^ {2}([\w.-]+):$/.exec(line);
    if (m) {
      flush();
      name = m[1];
      body = [];
    } else body.push(line);
  }
  flush();
  return blocks;
}

let services: string[];
let blocks: Map<string, string>;
let scaled: Map<string, string>;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'deploy-'));
  envFile = join(dir, 'empty.env');
  await writeFile(envFile, '');
  const [list, config, scaledConfig] = await Promise.all([
    compose(['config', '--services']),
    compose(['config']),
    compose(['config'], { TRANSCODER_720_REPLICAS: '3' }),
  ]);
  services = list.split('\n').filter(Boolean);
  blocks = serviceBlocks(config);
  scaled = serviceBlocks(scaledConfig);
}, 60_000);

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('docker-compose.yml', () => {
  it('has the eight services and the infrastructure', () => {
    expect(new Set(services)).toEqual(new Set([...SERVICES, ...INFRA]));
    expect(new Set(blocks.keys())).toEqual(new Set(services));
  });

  it.each(SERVICES)('%s runs its main.ts from the shared image, named for tracing', (name) => {
    const block = blocks.get(name)!;
    const entry = `services/${name}/src/main.ts`;
    expect(block).toMatch(new RegExp(`^ {4}command:\\n {4}- node\\n {4}- ${entry}$`, 'm'));
    expect(existsSync(join(REPO_ROOT, entry))).toBe(true);
    expect(block).toMatch(new RegExp(`^ {6}OTEL_SERVICE_NAME: ${name}$`, 'm'));
    expect(block).toMatch(/^ {4}image: video-mesh:latest$/m);
    expect(block).toMatch(/^ {6}NATS_URL: nats:\/\/nats:4222$/m);
  });

  it('publishes the API and the Jaeger UI', () => {
    expect(blocks.get('ingest-api')).toMatch(/- published: 8000\n\s+target: 8000/);
    expect(blocks.get('jaeger')).toMatch(/- published: 16686\n\s+target: 16686/);
  });

  it('scales transcoder-720 from TRANSCODER_720_REPLICAS', () => {
    expect(blocks.get('transcoder-720')).toMatch(/^ {6}replicas: 1$/m);
    expect(scaled.get('transcoder-720')).toMatch(/^ {6}replicas: 3$/m);
    expect(scaled.get('transcoder-360')).toMatch(/^ {6}replicas: 1$/m);
  });
});

describe('image and collector', () => {
  it('builds on node:24-slim with every workspace manifest copied before npm ci', async () => {
    const dockerfile = await readFile(join(REPO_ROOT, 'Dockerfile'), 'utf8');
    expect(dockerfile.match(/^FROM .*$/gm)).toEqual(['FROM node:24-slim']);
    // A workspace missing here makes `npm ci` in the image fail (the lockfile names it).
    for (const root of ['libs', 'services']) {
      for (const ws of readdirSync(join(REPO_ROOT, root))) {
        if (!existsSync(join(REPO_ROOT, root, ws, 'package.json'))) continue;
        expect(dockerfile).toContain(`COPY ${root}/${ws}/package.json ${root}/${ws}/\n`);
      }
    }
  });

  it('receives OTLP and exports traces to Jaeger', async () => {
    const collector = await readFile(join(REPO_ROOT, 'otel', 'collector.yaml'), 'utf8');
    expect(collector).toMatch(/^receivers:\n(?:\s*#.*\n)*\s+otlp:\n/m);
    expect(collector).toMatch(/^ {2}otlp\/jaeger:\n\s+endpoint: jaeger:4317$/m);
    const traces = /^ {4}traces:\n((?: {6}.*\n?)+)/m.exec(collector)?.[1] ?? '';
    expect(traces).toMatch(/receivers: \[otlp\]/);
    expect(traces).toMatch(/exporters: \[[^\]]*otlp\/jaeger[^\]]*\]/);
  });
});

describe('deploy/k8s', () => {
  const K8S = join(REPO_ROOT, 'deploy', 'k8s');
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  type Manifest = Record<string, any>;
  // The models' constructors take what the YAML says; validate() checks it against the schema.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const MODELS: Record<string, (m: any) => { validate(): void }> = {
    'v1/ConfigMap': (m) => new ConfigMap(m),
    'v1/Service': (m) => new Service(m),
    'apps/v1/Deployment': (m) => new Deployment(m),
    'keda.sh/v1alpha1/ScaledObject': (m) => new ScaledObject(m),
  };
  let all: Manifest[];
  const find = (kind: string, name: string) => all.find((m) => m['kind'] === kind && m['metadata']?.name === name);

  beforeAll(async () => {
    all = [];
    for (const file of readdirSync(K8S).filter((f) => f.endsWith('.yaml'))) {
      for (const doc of parseAllDocuments(await readFile(join(K8S, file), 'utf8'))) {
        expect(doc.errors, file).toEqual([]);
        if (doc.contents) all.push(doc.toJS() as Manifest);
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

  it.each(SERVICES)('%s: a Deployment that runs its main.ts from the shared image, drains, and runs unprivileged', (name) => {
    const spec = find('Deployment', name)?.['spec'].template.spec;
    expect(spec, name).toBeDefined();
    const [c] = spec.containers;
    expect(c.command).toEqual(['node', `services/${name}/src/main.ts`]);
    expect(existsSync(join(REPO_ROOT, c.command[1]))).toBe(true);
    expect(c.image).toBe('video-mesh:latest');
    expect(c.env).toContainEqual({ name: 'OTEL_SERVICE_NAME', value: name });
    expect(c.envFrom).toEqual([{ configMapRef: { name: 'video-mesh-config' } }, { secretRef: { name: 'video-mesh-secrets' } }]);
    // SIGTERM drains for DRAIN_MS (25 s) before the kill.
    expect(spec.terminationGracePeriodSeconds).toBeGreaterThanOrEqual(30);
    expect(spec.securityContext).toMatchObject({ runAsNonRoot: true });
    expect(c.securityContext).toMatchObject({ readOnlyRootFilesystem: true, allowPrivilegeEscalation: false });
    // The only place the services write: FFmpeg and Shaka Packager scratch space.
    expect(c.volumeMounts).toContainEqual({ name: 'tmp', mountPath: '/tmp' });
    expect(spec.volumes).toContainEqual(expect.objectContaining({ name: 'tmp', emptyDir: expect.any(Object) }));
    const ports = Object.fromEntries(c.ports.map((p: Manifest) => [p['name'], p['containerPort']]));
    expect(String(ports['metrics'])).toBe(find('ConfigMap', 'video-mesh-config')!['data'].METRICS_PORT);
    expect(c.readinessProbe).toBeDefined();
  });

  it('gives the services every setting they require, secrets apart', () => {
    const data = find('ConfigMap', 'video-mesh-config')!['data'] as Record<string, string>;
    for (const key of ['NATS_URL', 'MONGODB_URI', 'S3_INPUT_BUCKET', 'S3_OUTPUT_BUCKET', 'S3_THUMBNAIL_OUTPUT_BUCKET', 'MAIN_API_ENDPOINT', 'OTEL_EXPORTER_OTLP_ENDPOINT']) {
      expect(data[key], key).toBeTruthy();
    }
    for (const secret of ['APP_API_KEY', 'MAIN_API_KEY', 'AWS_SECRET_ACCESS_KEY']) expect(data[secret], secret).toBeUndefined();
  });

  it('serves the API, probed on /healthz', () => {
    const api = find('Deployment', 'ingest-api')!['spec'].template.spec.containers[0];
    expect(api.readinessProbe.httpGet).toEqual({ path: '/healthz', port: 'http' });
    expect(find('Service', 'ingest-api')!['spec']).toMatchObject({ selector: { 'app.kubernetes.io/name': 'ingest-api' }, ports: [{ port: 8000, targetPort: 'http' }] });
  });

  it.each(['720p', '360p'] as const)('scales transcoder-%s on its own durable consumer of the WORK stream', (rendition) => {
    const { consumer } = WORK[`transcode-${rendition}`];
    const so = find('ScaledObject', consumer)!;
    expect(so['spec'].scaleTargetRef.name).toBe(consumer);
    expect(find('Deployment', consumer)).toBeDefined();
    const natsHost = new URL(find('ConfigMap', 'video-mesh-config')!['data'].NATS_URL).hostname;
    expect(so['spec'].triggers).toEqual([
      { type: 'nats-jetstream', metadata: expect.objectContaining({ stream: STREAMS.work.name, consumer, account: '$G', natsServerMonitoringEndpoint: `${natsHost}:8222` }) },
    ]);
    expect(so['spec'].minReplicaCount).toBeGreaterThanOrEqual(1);
  });
});
