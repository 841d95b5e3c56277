/**
 * A whole stage service in one call: config, NATS, the S3 client, the job states and the consume loop.
 * What is left in a service's main.ts is what that stage does with its message.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import { runService, type Bus, type WorkContext, type WorkMessage } from '@mesh/bus';
import type { ChunkRef, Env, Logger, S3Config, Stage, WorkKind } from '@mesh/common';
import { createS3 } from '@mesh/storage';
import { openJobStates, type JobStates } from './lifecycle.ts';
import { runStage } from './stage.ts';

export interface StageService<C> {
  bus: Bus;
  states: JobStates;
  s3: S3Client;
  config: C;
  log: Logger;
}

export interface StageServiceOptions<K extends WorkKind, C extends { s3: S3Config; concurrency: number }> {
  name: string;
  kind: K;
  config: (env: Env) => C;
  stage: (message: WorkMessage<K>) => Stage;
  /** What one message is within its job attempt, when a stage takes several (see runStage). */
  item?: (message: WorkMessage<K>) => string;
  /** The part of a chunked rung a message is (see runStage). */
  chunk?: (message: WorkMessage<K>) => ChunkRef | undefined;
  handle: (message: WorkMessage<K>, ctx: WorkContext & { stage: Stage }, service: StageService<C>) => Promise<void>;
  /** For stages whose failure does not fail the job (see runStage). */
  onGiveUp?: (message: WorkMessage<K>, err: unknown, failure: { stage: Stage; code: string; reason: string }, service: StageService<C>) => Promise<void>;
  /** Messages whose failure is not fatal, of a stage whose failures are (see runStage). */
  nonFatal?: (message: WorkMessage<K>) => boolean;
  /** Transcoders: the rungs this process encodes, one consumer (and worker) each. */
  renditions?: (config: C) => string[];
}

export function runStageService<K extends WorkKind, C extends { s3: S3Config; concurrency: number }>(o: StageServiceOptions<K, C>): Promise<void> {
  return runService({
    name: o.name,
    config: o.config,
    async start({ bus, log, config, common }) {
      const service: StageService<C> = { bus, log, config, s3: createS3(config.s3), states: await openJobStates(bus, { replicas: common.natsReplicas }) };
      const onGiveUp = o.onGiveUp;
      const workers = await Promise.all((o.renditions?.(config) ?? [undefined]).map((rendition) => runStage({
        bus,
        states: service.states,
        kind: o.kind,
        ...(rendition ? { rendition } : {}),
        log,
        concurrency: config.concurrency,
        ackWaitMs: common.ackWaitMs,
        drainMs: common.drainMs,
        maxDeliver: common.maxDeliver,
        chaosKillAfterWork: common.chaosKillAfterWork,
        stage: o.stage,
        ...(o.item ? { item: o.item } : {}),
        ...(o.nonFatal ? { nonFatal: o.nonFatal } : {}),
        ...(o.chunk ? { chunk: o.chunk } : {}),
        handle: (message, ctx) => o.handle(message, ctx, service),
        ...(onGiveUp ? { onGiveUp: (message: WorkMessage<K>, err: unknown, failure: { stage: Stage; code: string; reason: string }) => onGiveUp(message, err, failure, service) } : {}),
      })));
      return workers;
    },
  });
}
