/**
 * Writes the NATS users of the deployments from libs/bus/src/permissions.ts: deploy/nats/users.conf
 * (Compose) and the `config.merge.authorization` and `container.env` of deploy/nats/values.yaml (Helm),
 * the rest of that file and its comments kept. `--check` writes nothing and exits 1 when either is stale.
 *
 * The transcoder user gets one consumer per rung (a consumer name is one subject token, so no wildcard
 * could stand for "every rung"), for the union of the rungs of every preset in ladders/*.json, so a mesh
 * runs any preset (LADDER_FILE=ladders/web.json) with the files as committed, plus the rungs of LADDER or
 * LADDER_FILE when set in this script's environment: for a ladder of your own, render with it set
 * (libs/common/src/ladder.ts deployedRungs).
 *
 *   npm run nats:users [-- --check]
 *   LADDER_FILE=my-ladder.json npm run nats:users
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseDocument } from 'yaml';
import { natsHelmValues, renderUsersConf } from '@mesh/bus';
import { deployedRungs } from '@mesh/common';
import { REPO_ROOT } from '@mesh/testkit';

const check = process.argv.includes('--check');
const usersConf = join(REPO_ROOT, 'deploy/nats/users.conf');
const valuesYaml = join(REPO_ROOT, 'deploy/nats/values.yaml');
const ladder = deployedRungs(join(REPO_ROOT, 'ladders'), process.env);

const values = parseDocument(await readFile(valuesYaml, 'utf8'));
const helm = natsHelmValues(ladder);
values.setIn(['config', 'merge', 'authorization'], values.createNode(helm.authorization));
values.setIn(['container', 'env'], values.createNode(helm.env));

const wanted: [string, string][] = [
  [usersConf, renderUsersConf(ladder)],
  [valuesYaml, values.toString({ lineWidth: 0 })],
];
let stale = 0;
for (const [file, text] of wanted) {
  const now = await readFile(file, 'utf8').catch(() => '');
  if (now === text) continue;
  stale++;
  if (check) console.error(`${file} is not what libs/bus/src/permissions.ts renders for the rungs ${ladder.map((r) => r.name).join(', ')}: run npm run nats:users`);
  else await writeFile(file, text);
}
if (check && stale > 0) process.exit(1);
if (!check) console.log(`${stale > 0 ? `wrote ${stale} file(s)` : 'up to date'}: the transcoder may consume ${ladder.map((r) => r.name).join(', ')}`);
