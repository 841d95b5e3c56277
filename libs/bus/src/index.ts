export * from './connect.ts';
export * from './topology.ts';
export * from './publish.ts';
export * from './worker.ts';
export * from './service.ts';
export * from './dead-letters.ts';
export * from './queues.ts';
export * from './follow.ts';
