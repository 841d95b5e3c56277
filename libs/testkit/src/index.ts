export * from './servers.ts';
export * from './mesh.ts';
export * from './supervise.ts';
export * from './local-key.ts';
export * from './webhook.ts';
export * from './fixtures.ts';
export * from './otlp.ts';
