export * from './servers.ts';
export * from './mesh.ts';
export * from './webhook.ts';
export * from './fixtures.ts';
export * from './otlp.ts';
export * from './sse.ts';
export * from './api.ts';
