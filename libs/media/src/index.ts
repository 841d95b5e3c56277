export * from './profiles.ts';
export * from './geometry.ts';
export * from './guard.ts';
export * from './probe.ts';
export * from './ffmpeg.ts';
export * from './packager.ts';
export * from './run.ts';
export * from './limits.ts';
