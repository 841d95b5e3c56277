/** transcoder-720: encodes the 720p rendition. All the logic is shared with the other transcoder. */
import { runTranscoder } from '@mesh/transcoder';

await runTranscoder('720p');
