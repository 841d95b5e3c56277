import { describe, expect, it } from 'vitest';
import { commonConfig, ConfigError, flag, int, mongoUri, redactUri, s3Config, shellCommand, url } from '../src/index.ts';

describe('config', () => {
  const base = { S3_INPUT_BUCKET: 'in-bucket', S3_OUTPUT_BUCKET: 'out-bucket', S3_THUMBNAIL_OUTPUT_BUCKET: 'thumbs' };

  it('names a missing variable', () => {
    expect(() => s3Config({ ...base, S3_INPUT_BUCKET: undefined })).toThrow(new ConfigError('S3_INPUT_BUCKET is required but not set'));
  });

  it.each([
    ['S3_OUTPUT_BUCKET', 'ab', /S3_OUTPUT_BUCKET must be an S3 bucket name/],
    ['S3_ENDPOINT', 'not a url', /S3_ENDPOINT must be a URL/],
    ['S3_ENDPOINT', 'ftp://x', /S3_ENDPOINT must use http: or https:/],
  ])('names a malformed %s', (name, value, message) => {
    expect(() => s3Config({ ...base, [name]: value })).toThrow(message);
  });

  it('reads integers within bounds', () => {
    expect(int({ N: '5' }, 'N', 1)).toBe(5);
    expect(int({}, 'N', 1)).toBe(1);
    expect(() => int({ N: '5x' }, 'N', 1)).toThrow(/N must be an integer/);
    expect(() => int({ N: '0' }, 'N', 1, { min: 1 })).toThrow(/between 1/);
  });

  it('reads on/off switches and names a value that is neither', () => {
    expect([flag({ F: '1' }, 'F'), flag({ F: 'TRUE' }, 'F'), flag({ F: '0' }, 'F'), flag({ F: 'false' }, 'F'), flag({}, 'F'), flag({ F: ' ' }, 'F', true)]).toEqual([true, true, false, false, false, true]);
    expect(() => flag({ F: 'yes' }, 'F')).toThrow(new ConfigError('F must be 1, true, 0 or false, got "yes"'));
  });

  it('checks URL schemes', () => {
    expect(url({ U: 'nats://h:4222' }, 'U', undefined, ['nats:'])).toBe('nats://h:4222');
    expect(() => url({ U: 'http://h' }, 'U', undefined, ['nats:'])).toThrow(/U must use nats:/);
  });
});

describe('connection strings', () => {
  it.each([
    'mongodb://127.0.0.1:27017/video_mesh',
    'mongodb://app:pw@db1:27017,db2:27017,db3/video?replicaSet=rs0&authSource=admin',
    'mongodb://[::1]:27017',
    'mongodb+srv://app:pw@cluster0.example.net/video?retryWrites=true',
  ])('accepts the MongoDB URI %s (a replica set names several hosts)', (uri) => {
    expect(mongoUri({ M: uri }, 'M', 'x')).toBe(uri);
  });

  it.each(['http://db', 'mongodb://', 'mongodb://a,,b', 'mongodb+srv://a:27017', 'mongodb://bad host'])('refuses %s', (uri) => {
    expect(() => mongoUri({ M: uri }, 'M', 'x')).toThrow(/M must be a MongoDB URI|one host without a port/);
  });

  it('accepts every node of a NATS cluster in NATS_URL', () => {
    expect(commonConfig({ NATS_URL: 'nats://n1:4222, nats://n2:4222,tls://n3:4222' }).natsUrl).toBe('nats://n1:4222,nats://n2:4222,tls://n3:4222');
  });

  it('hides passwords when it shows a URI', () => {
    expect(redactUri('mongodb://app:s3cr3t@db1,db2/x')).toBe('mongodb://app:***@db1,db2/x');
    expect(redactUri('nats://token@h:4222')).toBe('nats://***@h:4222');
    expect(redactUri('http://h/x')).toBe('http://h/x');
  });
});

describe('shellCommand', () => {
  it('quotes what a shell would interpret, so a logged command pastes as is', () => {
    expect(shellCommand('ffmpeg', ['-i', "it's a file; rm -rf $HOME.mp4", '-vf', 'scale=640:-2', 'out dir/x.mp4'])).toBe(
      `ffmpeg -i 'it'\\''s a file; rm -rf $HOME.mp4' -vf scale=640:-2 'out dir/x.mp4'`,
    );
  });
});
