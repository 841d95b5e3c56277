import { describe, expect, it } from 'vitest';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, DEFAULT_LADDER, ladderConfig, transcoderOf, WEB_LADDER, workRoute } from '../src/index.ts';

const rung = (over: Record<string, unknown> = {}) => ({ name: '1080p', shortSide: 1080, videoKbps: 5000, maxKbps: 5350, bufKbps: 10700, preset: 'veryfast', profile: 'high', audioKbps: 128, ...over });

describe('the ladder from config', () => {
  it('defaults to 720p + 360p, 720p first, as the service the mesh replaces', () => {
    expect(ladderConfig({})).toEqual({ rungs: DEFAULT_LADDER, first: '720p' });
  });

  it('reads LADDER as JSON and LADDER_FILE as a file, largest rung first', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ladder-'));
    try {
      const shuffled = [...WEB_LADDER].reverse();
      expect(ladderConfig({ LADDER: JSON.stringify(shuffled) }).rungs.map((r) => r.name)).toEqual(['1080p', '720p', '480p', '360p', '240p']);
      await writeFile(join(dir, 'web.json'), JSON.stringify(WEB_LADDER));
      expect(ladderConfig({ LADDER_FILE: join(dir, 'web.json'), FIRST_RENDITION: '480p' })).toEqual({ rungs: WEB_LADDER, first: '480p' });
      expect(ladderConfig({ LADDER: JSON.stringify([rung()]) }).first).toBe('1080p');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it.each<[string, Record<string, string>, RegExp]>([
    ['not JSON', { LADDER: '720p,360p' }, /^LADDER is not JSON/],
    ['empty', { LADDER: '[]' }, /^LADDER: Too small/],
    ['a bad name', { LADDER: JSON.stringify([rung({ name: '1080 P' })]) }, /^LADDER\[0\]\.name: must be 1 to 24 lowercase letters/],
    ['an odd short side', { LADDER: JSON.stringify([rung({ shortSide: 1081 })]) }, /^LADDER\[0\]\.shortSide: must be even/],
    ['a max rate under the bitrate', { LADDER: JSON.stringify([rung(), rung({ name: '720p', shortSide: 720, maxKbps: 100 })]) }, /^LADDER\[1\]\.maxKbps: must be at least videoKbps/],
    ['an unknown preset', { LADDER: JSON.stringify([rung({ preset: 'turbo' })]) }, /^LADDER\[0\]\.preset: Invalid option/],
    ['an unknown field', { LADDER: JSON.stringify([rung({ crf: 23 })]) }, /^LADDER\[0\]: Unrecognized key: "crf"/],
    ['a missing field', { LADDER: JSON.stringify([{ ...rung(), audioKbps: undefined }]) }, /^LADDER\[0\]\.audioKbps: Invalid input/],
    ['two rungs of one name', { LADDER: JSON.stringify([rung(), rung({ shortSide: 720 })]) }, /^LADDER\[1\]\.name: 1080p is named twice/],
    ['both settings', { LADDER: '[]', LADDER_FILE: '/x.json' }, /set LADDER or LADDER_FILE, not both/],
    ['a file that is not there', { LADDER_FILE: '/nonexistent/ladder.json' }, /LADDER_FILE "\/nonexistent\/ladder.json" cannot be read: ENOENT/],
    ['a first rung not in it', { FIRST_RENDITION: '1080p' }, /FIRST_RENDITION must be one of the ladder's rungs \(720p, 360p\), got "1080p"/],
  ])('refuses %s, naming the field', (_name, env, message) => {
    expect(() => ladderConfig(env)).toThrow(ConfigError);
    expect(() => ladderConfig(env)).toThrow(message);
  });

  it('gives each rung its own subject and consumer', () => {
    expect(workRoute('transcode', '1080p')).toEqual({ subject: 'work.transcode.1080p', consumer: 'transcoder-1080' });
    expect(transcoderOf('720p')).toBe('transcoder-720');
    expect(workRoute('package')).toMatchObject({ subject: 'work.package', consumer: 'packager' });
  });
});
