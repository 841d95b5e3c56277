/**
 * transcoder: encodes the rungs named in RENDITIONS (required), e.g. `RENDITIONS=1080p` for a
 * transcoder-1080 beside the default two. All the logic is shared with every transcoder.
 */
import { transcoderOf } from '@mesh/common';
import { runTranscoder } from '@mesh/transcoder';

// Named after its rung when it has one (transcoder-1080), as its consumer is.
const rungs = (process.env['RENDITIONS'] ?? '').split(',').map((r) => r.trim()).filter(Boolean);
await runTranscoder({ name: rungs.length === 1 ? transcoderOf(rungs[0]!) : 'transcoder', defaults: [] });
