/**
 * The rendition ladder: which renditions a video becomes, from config. Every service that plans, encodes,
 * validates or watches renditions reads the same `LADDER` (JSON) or `LADDER_FILE` (a path to it); a bad
 * ladder stops the service at start naming the field (`LADDER[2].maxKbps: ...`).
 *
 * A rung is named (`1080p`), has a target short side (height of a landscape video, width of a portrait
 * one) and its encoder settings. Each rung is its own work subject (`work.transcode.<name>`) and durable
 * consumer (`transcoder-<name without the p>`), so each scales on its own.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { ConfigError } from './errors.ts';
import { optional, type Env } from './config.ts';

/** A rung's name: also a subject token, a consumer name, a file name and an HLS playlist name. */
export const RUNG_NAME = /^[a-z0-9][a-z0-9_-]{0,23}$/;

const X264_PRESETS = ['ultrafast', 'superfast', 'veryfast', 'faster', 'fast', 'medium', 'slow', 'slower', 'veryslow'] as const;

export const Rung = z
  .strictObject({
    name: z.string().regex(RUNG_NAME, 'must be 1 to 24 lowercase letters, digits, _ or -, e.g. 1080p'),
    /** Target short side in pixels, even (H.264 4:2:0). */
    shortSide: z.number().int().min(64).max(4320).refine((n) => n % 2 === 0, 'must be even'),
    videoKbps: z.number().int().min(50).max(100_000),
    /** VBV limits keep segment sizes near the nominal bitrate, so players' bandwidth estimates hold. */
    maxKbps: z.number().int().min(50).max(200_000),
    bufKbps: z.number().int().min(50).max(400_000),
    /** x264 preset: speed against compression. */
    preset: z.enum(X264_PRESETS),
    profile: z.enum(['baseline', 'main', 'high']),
    audioKbps: z.number().int().min(32).max(512),
  })
  .refine((r) => r.maxKbps >= r.videoKbps, { message: 'must be at least videoKbps', path: ['maxKbps'] });
export type Rung = z.infer<typeof Rung>;

export const Ladder = z
  .array(Rung)
  .min(1)
  .max(12)
  .superRefine((rungs, ctx) => {
    const names = new Set<string>();
    const sides = new Set<number>();
    rungs.forEach((r, i) => {
      if (names.has(r.name)) ctx.addIssue({ code: 'custom', message: `${r.name} is named twice`, path: [i, 'name'] });
      if (sides.has(r.shortSide)) ctx.addIssue({ code: 'custom', message: `two rungs are ${r.shortSide} pixels`, path: [i, 'shortSide'] });
      names.add(r.name);
      sides.add(r.shortSide);
    });
  })
  // Largest first: the order of the manifest and of the status.
  .transform((rungs) => [...rungs].sort((a, b) => b.shortSide - a.shortSide));
export type Ladder = z.infer<typeof Ladder>;

/** What the mesh makes by default: the two renditions of the service it replaces. */
export const DEFAULT_LADDER: Ladder = [
  { name: '720p', shortSide: 720, videoKbps: 2800, maxKbps: 3000, bufKbps: 6000, preset: 'veryfast', profile: 'high', audioKbps: 128 },
  { name: '360p', shortSide: 360, videoKbps: 800, maxKbps: 900, bufKbps: 1800, preset: 'veryfast', profile: 'main', audioKbps: 128 },
];

/** A ladder for the web, from phones to 1080p screens (`LADDER_FILE=ladders/web.json`). */
export const WEB_LADDER: Ladder = [
  { name: '1080p', shortSide: 1080, videoKbps: 5000, maxKbps: 5350, bufKbps: 10700, preset: 'veryfast', profile: 'high', audioKbps: 128 },
  { name: '720p', shortSide: 720, videoKbps: 2800, maxKbps: 3000, bufKbps: 6000, preset: 'veryfast', profile: 'high', audioKbps: 128 },
  { name: '480p', shortSide: 480, videoKbps: 1400, maxKbps: 1500, bufKbps: 3000, preset: 'veryfast', profile: 'main', audioKbps: 128 },
  { name: '360p', shortSide: 360, videoKbps: 800, maxKbps: 900, bufKbps: 1800, preset: 'veryfast', profile: 'main', audioKbps: 96 },
  { name: '240p', shortSide: 240, videoKbps: 400, maxKbps: 450, bufKbps: 900, preset: 'veryfast', profile: 'baseline', audioKbps: 64 },
];

export interface LadderConfig {
  rungs: Ladder;
  /**
   * The rung on the way to the first playable manifest: on a shared host its encode has the CPU and the
   * others pause (yield.ts). Default 720p (as the original service published first), else the largest.
   */
  first: string;
}

/** LADDER (JSON) or LADDER_FILE (a JSON file), else the default; FIRST_RENDITION. */
export function ladderConfig(env: Env): LadderConfig {
  const inline = optional(env, 'LADDER');
  const file = optional(env, 'LADDER_FILE');
  if (inline && file) throw new ConfigError('set LADDER or LADDER_FILE, not both');
  let rungs = DEFAULT_LADDER;
  if (inline || file) {
    const name = inline ? 'LADDER' : 'LADDER_FILE';
    let text: string;
    try {
      text = inline ?? readFileSync(file!, 'utf8');
    } catch (err) {
      throw new ConfigError(`LADDER_FILE ${JSON.stringify(file)} cannot be read: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new ConfigError(`${name} is not JSON (a list of rungs, see the README)`);
    }
    rungs = parseLadder(json, inline ? 'LADDER' : `LADDER (from ${file})`);
  }
  const names = rungs.map((r) => r.name);
  const first = optional(env, 'FIRST_RENDITION') ?? (names.includes('720p') ? '720p' : names[0]!);
  if (!names.includes(first)) throw new ConfigError(`FIRST_RENDITION must be one of the ladder's rungs (${names.join(', ')}), got ${JSON.stringify(first)}`);
  return { rungs, first };
}

/** Checks a ladder, or throws a ConfigError naming the first bad field (`LADDER[1].videoKbps: ...`). */
export function parseLadder(json: unknown, name = 'LADDER'): Ladder {
  const result = Ladder.safeParse(json);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const path = issue.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('');
  throw new ConfigError(`${name}${path}: ${issue.message}`);
}

/** The preset ladders: every `*.json` in `dir` (the repo's `ladders/`), each checked as LADDER_FILE is, by file name. */
export function presetLadders(dir: string): { file: string; rungs: Ladder }[] {
  const files = readdirSync(dir).filter((f) => f.endsWith('.json')).sort();
  return files.map((file) => ({ file, rungs: ladderConfig({ LADDER_FILE: join(dir, file) }).rungs }));
}

/**
 * Every rung a deployment must be ready for: the rungs of each preset in `dir` and of the ladder `env` sets
 * (LADDER or LADDER_FILE; the default when neither), each name once, largest first. Not a ladder to encode
 * (two presets may set one name differently: the first seen is kept), but what the deployment files allow,
 * e.g. the transcoder's NATS consumers (deploy/nats, `npm run nats:users`), so any preset runs unchanged.
 */
export function deployedRungs(dir: string, env: Env): Ladder {
  const byName = new Map<string, Rung>();
  for (const rung of [ladderConfig(env).rungs, ...presetLadders(dir).map((p) => p.rungs)].flat()) if (!byName.has(rung.name)) byName.set(rung.name, rung);
  return [...byName.values()].sort((a, b) => b.shortSide - a.shortSide || a.name.localeCompare(b.name));
}

/** The durable consumer (and service) of a rung: `transcoder-1080` for `1080p`. */
export function transcoderOf(rung: string): string {
  return `transcoder-${rung.replace(/p$/, '')}`;
}
