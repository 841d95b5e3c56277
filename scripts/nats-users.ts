/**
 * Writes the NATS users of the deployments from libs/bus/src/permissions.ts: deploy/nats/users.conf
 * (Compose) and the `config.merge.authorization` and `container.env` of deploy/nats/values.yaml (Helm),
 * the rest of that file and its comments kept. `--check` writes nothing and exits 1 when either is stale.
 *
 *   npm run nats:users [-- --check]
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseDocument } from 'yaml';
import { natsHelmValues, renderUsersConf } from '@mesh/bus';
import { REPO_ROOT } from '@mesh/testkit';

const check = process.argv.includes('--check');
const usersConf = join(REPO_ROOT, 'deploy/nats/users.conf');
const valuesYaml = join(REPO_ROOT, 'deploy/nats/values.yaml');

const values = parseDocument(await readFile(valuesYaml, 'utf8'));
const helm = natsHelmValues();
values.setIn(['config', 'merge', 'authorization'], values.createNode(helm.authorization));
values.setIn(['container', 'env'], values.createNode(helm.env));

const wanted: [string, string][] = [
  [usersConf, renderUsersConf()],
  [valuesYaml, values.toString({ lineWidth: 0 })],
];
let stale = 0;
for (const [file, text] of wanted) {
  const now = await readFile(file, 'utf8').catch(() => '');
  if (now === text) continue;
  stale++;
  if (check) console.error(`${file} is not what libs/bus/src/permissions.ts renders: run npm run nats:users`);
  else await writeFile(file, text);
}
if (check && stale > 0) process.exit(1);
if (!check) console.log(stale > 0 ? `wrote ${stale} file(s)` : 'up to date');
