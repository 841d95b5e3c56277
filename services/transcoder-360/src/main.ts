/** transcoder-360: encodes the 360p rendition. All the logic is shared with the other transcoder. */
import { runTranscoder } from '@mesh/transcoder';

await runTranscoder('360p');
