/**
 * The command line (commander): global options, the commands, and one exit code per outcome (errors.ts
 * EXIT). A usage error is commander's one line; every other error is one `error: ...` line on stderr.
 */
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import pkg from '../package.json' with { type: 'json' };
import { createApi, DEFAULT_URL, resolveEndpoint } from './api.ts';
import { cancel, deadLetters, queues, retry, status, submit, watch, type Context } from './commands.ts';
import { chooseMode, createDisplay, type Display } from './display.ts';
import { CliError, EXIT } from './errors.ts';
import { askCancel, canAsk, trapInterrupts } from './interrupts.ts';

export interface Io {
  env: NodeJS.ProcessEnv;
  stdin: NodeJS.ReadStream;
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WriteStream;
}

interface GlobalOptions {
  url?: string;
  apiKey?: string;
  json?: boolean;
}

/** Unexpected failures (a bug): not one of the documented outcomes. */
const EXIT_SOFTWARE = 70;

function positiveInt(value: string): number {
  if (!/^\d{1,15}$/.test(value) || Number(value) < 1) throw new InvalidArgumentError('must be a dead letter\'s sequence number (a whole number, from `video-mesh dead-letters`)');
  return Number(value);
}

/** Runs the command line `argv` (as process.argv: node, script, args...) and answers the exit code. */
export async function run(argv: string[], io: Io = { env: process.env, stdin: process.stdin, stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  let code: number = EXIT.ok;
  let display: Display | undefined;
  const interrupts = trapInterrupts();

  const context = (cmd: Command): Context => {
    const opts = cmd.optsWithGlobals<GlobalOptions>();
    const json = opts.json === true;
    display = createDisplay(chooseMode({ json, isTTY: io.stdout.isTTY }), io.stdout);
    return {
      api: createApi(resolveEndpoint({ url: opts.url, apiKey: opts.apiKey }, io.env)),
      display,
      json,
      print: (text) => io.stdout.write(`${text}\n`),
      interrupts,
      // The question goes where the person looks: the terminal the bars are on, else stderr.
      ask: canAsk(io.stdin) ? (taskId, signal) => askCancel(taskId, { signal, output: io.stdout.isTTY ? io.stdout : io.stderr }) : null,
    };
  };
  /** A command's action: its exit code is the run's. */
  const act =
    <A extends unknown[]>(fn: (ctx: Context, ...args: A) => Promise<number>) =>
    async (...args: [...A, Command]) => {
      const cmd = args.at(-1) as Command;
      code = await fn(context(cmd), ...(args.slice(0, -1) as A));
    };

  const program = new Command('video-mesh')
    .description('Command-line client of the video-mesh API: convert a video into DASH and HLS with live progress, and manage jobs.')
    .version(pkg.version, '-V, --version')
    .option('--url <url>', `the API's address (or VIDEO_MESH_URL; default ${DEFAULT_URL})`)
    .option('--api-key <key>', 'the API key (or VIDEO_MESH_API_KEY, better: a flag shows in the process list)')
    .option('--json', 'print the result as one JSON document, for scripts (nothing else on stdout)')
    .showSuggestionAfterError()
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) })
    .addHelpText(
      'after',
      `
Exit codes: 0 done (submit/watch: the job succeeded), 1 the job failed or was cancelled (reason printed),
2 bad usage or input (a missing file, an unknown task, a request the API refused), 3 the API could not be
reached, refused the key or failed, 130 interrupted (Ctrl-C; the job keeps running unless you cancelled it).`,
    );

  program
    .command('submit')
    .description('upload a video file, convert it, and show each stage\'s progress until the job ends')
    .argument('<file>', 'the video file to upload')
    .option('--video-id <id>', "the video's id, the thumbnail's name (default: a new UUID)")
    .option('--base-url <url>', "the manifest's BaseURL, where the package will be served (default: where the mesh writes it)")
    .option('--no-wait', 'print the task id once submitted, without following the job')
    .action(act((ctx, file: string, o: { videoId?: string; baseUrl?: string; wait: boolean }) => submit(ctx, file, o)));
  program
    .command('status')
    .description("a task's status, stages and links")
    .argument('<id>', 'the task id')
    .action(act((ctx, id: string) => status(ctx, id)));
  program
    .command('watch')
    .description("a task's live progress until it ends")
    .argument('<id>', 'the task id')
    .action(act((ctx, id: string) => watch(ctx, id)));
  program
    .command('retry')
    .description('run a failed or cancelled task again')
    .argument('<id>', 'the task id')
    .action(act((ctx, id: string) => retry(ctx, id)));
  program
    .command('cancel')
    .description('cancel a running task')
    .argument('<id>', 'the task id')
    .action(act((ctx, id: string) => cancel(ctx, id)));
  program
    .command('queues')
    .description("each stage's queue: work waiting, work held, idle replicas, stalled stages (operators' key when ADMIN_API_KEY is set)")
    .action(act((ctx) => queues(ctx)));
  program
    .command('dead-letters')
    .description('messages a stage gave up on; --redrive sends one back to its stage')
    .option('--redrive <seq>', "the dead letter's sequence number", positiveInt)
    .action(act((ctx, o: { redrive?: number }) => deadLetters(ctx, o)));

  try {
    await program.parseAsync(argv);
    return code;
  } catch (err) {
    // commander has printed its one line (or the help, or the version).
    if (err instanceof CommanderError) return err.exitCode === 0 ? EXIT.ok : EXIT.usage;
    display?.stop();
    io.stderr.write(`error: ${err instanceof Error ? err.message : String(err)}\n`);
    return err instanceof CliError ? err.exitCode : EXIT_SOFTWARE;
  } finally {
    interrupts.release();
  }
}
