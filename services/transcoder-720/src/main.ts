/** transcoder-720: encodes the 720p rung (or RENDITIONS). All the logic is shared with every transcoder. */
import { runTranscoder } from '@mesh/transcoder';

await runTranscoder({ name: 'transcoder-720', defaults: ['720p'] });
