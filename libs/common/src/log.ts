import { trace } from '@opentelemetry/api';
import { pino, type Logger } from 'pino';

export type { Logger };

/** Keys whose values never reach a log line. */
const REDACT = ['apiKey', 'ApiKey', 'headers.apikey', 'headers.ApiKey', 'req.headers.apikey', '*.apiKey', '*.secretAccessKey', 'secretAccessKey', 'uploadUrl', '*.uploadUrl'];

const LEVELS = new Set(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

/** A logger for `service`. An unknown level falls back to info: config validation then names the bad LOG_LEVEL. */
export function createLogger(service: string, level = process.env['LOG_LEVEL'] ?? 'info', destination?: pino.DestinationStream): Logger {
  const options = {
    name: service,
    level: LEVELS.has(level) ? level : 'info',
    base: { service },
    redact: { paths: REDACT, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
    // Every line written inside a span (a job's work) carries its trace, to find it in Jaeger.
    mixin() {
      const span = trace.getActiveSpan();
      if (!span) return {};
      const { traceId, spanId } = span.spanContext();
      return { trace_id: traceId, span_id: spanId };
    },
  };
  return destination ? pino(options, destination) : pino(options);
}

/** Quote one argument for a POSIX shell, so a logged command can be pasted as is. */
export function shellQuote(arg: string): string {
  if (arg !== '' && /^[\w@%+=:,./-]+$/.test(arg)) return arg;
  return `'${arg.replaceAll("'", `'\\''`)}'`;
}

export function shellCommand(cmd: string, args: readonly string[]): string {
  return [cmd, ...args].map(shellQuote).join(' ');
}
