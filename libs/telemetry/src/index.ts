export * from './tracing.ts';
export * from './metrics.ts';
