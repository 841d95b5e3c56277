#!/usr/bin/env node
/**
 * video-mesh: the command-line client. `npx video-mesh --help` from the repo; bin/video-mesh.js is the
 * installed entry, which loads this file.
 */
import { run } from './cli.ts';

const code = await run(process.argv);
// Everything written reaches the terminal or pipe before the process ends; open keep-alive sockets
// and the terminal's input do not hold it up.
await new Promise<void>((resolve) => process.stdout.write('', () => resolve()));
await new Promise<void>((resolve) => process.stderr.write('', () => resolve()));
process.exit(code);
