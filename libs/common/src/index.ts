export * from './errors.ts';
export * from './config.ts';
export * from './log.ts';
export * from './messages.ts';
export * from './async.ts';
export * from './layout.ts';
export * from './keys.ts';
export * from './tempdirs.ts';
