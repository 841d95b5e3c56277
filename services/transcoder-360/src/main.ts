/** transcoder-360: encodes the 360p rung (or RENDITIONS). All the logic is shared with every transcoder. */
import { runTranscoder } from '@mesh/transcoder';

await runTranscoder({ name: 'transcoder-360', defaults: ['360p'] });
