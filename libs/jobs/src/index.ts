export * from './state.ts';
export * from './lifecycle.ts';
export * from './projection.ts';
export * from './store.ts';
export * from './projector.ts';
export * from './stage.ts';
export * from './service.ts';
