/**
 * Holds HTTP answers to the OpenAPI 3.1 document that promises them: the route and status must be in the
 * document, the Content-Type one it lists, and the body valid against its schema (JSON Schema 2020-12,
 * with ajv; server-sent events message by message against the media type's x-itemSchema). A path the
 * document does not have must be answered 404, a method its path does not take 405 or 501, both as the
 * document's Problem. Validators are compiled once per schema location, so checking every answer of a
 * test run costs microseconds each.
 */
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';

export class ContractError extends Error {
  override name = 'ContractError';
}

/** What the check needs of an answer. `body` is its text (for a stream: the part read so far). */
export interface Answer {
  status: number;
  headers: Headers;
  body: string;
}

export interface Contract {
  /** Throws ContractError naming what the answer to `method url` breaks. */
  check(method: string, url: string | URL, answer: Answer): void;
  /** `fetch`, with the answer checked (streams: status and Content-Type only); the Response returned can still be read. */
  fetch(url: string | URL, init?: RequestInit): Promise<Response>;
}

type Json = Record<string, unknown>;
interface Route {
  template: string;
  pattern: RegExp;
  params: number;
  item: Record<string, Json>;
}

const DOC = 'urn:contract:openapi';
const PROBLEM = 'application/problem+json';

export function openApiContract(document: Json): Contract {
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  addFormats.default(ajv);
  ajv.addSchema(document, DOC);
  const validators = new Map<string, ValidateFunction>();
  const validatorAt = (pointer: string[]) => {
    const key = pointer.map((p) => p.replaceAll('~', '~0').replaceAll('/', '~1')).join('/');
    let validate = validators.get(key);
    if (!validate) validators.set(key, (validate = ajv.compile({ $ref: `${DOC}#/${key}` })));
    return validate;
  };
  const at = (pointer: string[]): Json => pointer.reduce<Json>((node, part) => node[part] as Json, document);
  const resolve = (pointer: string[]): string[] => {
    const target = at(pointer)['$ref'];
    return typeof target === 'string' ? target.replace(/^#\//, '').split('/').map((p) => p.replaceAll('~1', '/').replaceAll('~0', '~')) : pointer;
  };

  const routes: Route[] = Object.entries(document['paths'] as Record<string, Record<string, Json>>)
    .map(([template, item]) => ({
      template,
      item,
      params: (template.match(/\{/g) ?? []).length,
      pattern: new RegExp(`^${template.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\{[^}]+\}/g, '[^/]+')}$`),
    }))
    // A literal path wins over a template that also matches it.
    .sort((a, b) => a.params - b.params);

  const validate = (pointer: string[], value: unknown, what: string) => {
    const fn = validatorAt(pointer);
    if (!fn(value)) throw new ContractError(`${what}: ${ajv.errorsText(fn.errors, { dataVar: 'body' })}\n${JSON.stringify(value).slice(0, 2000)}`);
  };
  /** A problem says the status it is answered with. */
  const sameStatus = (body: unknown, answer: Answer, what: string) => {
    const status = (body as { status?: unknown }).status;
    if (status !== answer.status) throw new ContractError(`${what}: problem status ${String(status)} in a ${answer.status} answer`);
  };
  /** The answer to a route or method the document does not have: one of `statuses`, as the document's Problem. */
  const checkProblem = (what: string, answer: Answer, statuses: number[]) => {
    if (!statuses.includes(answer.status)) throw new ContractError(`${what}: answered ${answer.status}, which the document does not list`);
    if (mediaType(answer) !== PROBLEM) throw new ContractError(`${what}: ${answer.status} as ${mediaType(answer)}, not ${PROBLEM}`);
    const body = parse(answer.body, what);
    validate(['components', 'schemas', 'Problem'], body, what);
    sameStatus(body, answer, what);
  };

  function check(method: string, url: string | URL, answer: Answer): void {
    const verb = method.toLowerCase();
    const path = new URL(url, 'http://host').pathname;
    const what = `${method.toUpperCase()} ${path} -> ${answer.status}`;
    const route = routes.find((r) => r.pattern.test(path));
    if (!route) return checkProblem(`${what} (no such path in the document)`, answer, [404]);
    const op = route.item[verb === 'head' ? 'get' : verb];
    if (!op) {
      checkProblem(`${what} (${route.template} takes no ${method.toUpperCase()})`, answer, [405, 501]);
      if (answer.status === 405 && !answer.headers.get('allow')) throw new ContractError(`${what}: 405 without Allow`);
      return;
    }
    const opPointer = ['paths', route.template, verb === 'head' ? 'get' : verb];
    const responses = op['responses'] as Record<string, Json>;
    if (!responses[String(answer.status)]) throw new ContractError(`${what}: status ${answer.status} is not documented for ${verb.toUpperCase()} ${route.template} (documented: ${Object.keys(responses).join(', ')})`);
    const responsePointer = resolve([...opPointer, 'responses', String(answer.status)]);
    const content = at(responsePointer)['content'] as Record<string, Json> | undefined;
    if (!content) {
      if (answer.body !== '') throw new ContractError(`${what}: a body where the document has none`);
      return;
    }
    const type = mediaType(answer);
    if (!content[type]) throw new ContractError(`${what}: Content-Type ${type}, documented: ${Object.keys(content).join(', ')}`);
    if (verb === 'head') return;
    const schemaPointer = [...responsePointer, 'content', type, 'schema'];
    if (type === 'application/json' || type.endsWith('+json')) {
      const body = parse(answer.body, what);
      validate(schemaPointer, body, what);
      if (type === PROBLEM) sameStatus(body, answer, what);
    } else if (type === 'text/event-stream') {
      if (!content[type]!['x-itemSchema']) throw new ContractError(`${what}: an event stream without x-itemSchema`);
      const item = resolve([...responsePointer, 'content', type, 'x-itemSchema']);
      for (const message of parseEvents(answer.body)) checkMessage(item, message, what);
    }
  }

  /** A message fits one of the item schema's variants (anyOf/oneOf, or itself), JSON data included. */
  function checkMessage(item: string[], message: Record<string, string>, what: string): void {
    const node = at(item);
    const key = Array.isArray(node['anyOf']) ? 'anyOf' : Array.isArray(node['oneOf']) ? 'oneOf' : undefined;
    const variants = key ? (node[key] as unknown[]).map((_, i) => resolve([...item, key, String(i)])) : [item];
    const failures: string[] = [];
    const fail = (why: string) => {
      failures.push(why);
      return false;
    };
    const fits = (variant: string[]) => {
      const fn = validatorAt(variant);
      if (!fn(message)) return fail(ajv.errorsText(fn.errors, { dataVar: 'event' }));
      const data = (at(variant)['properties'] as Record<string, Json> | undefined)?.['data'];
      if (data?.['contentMediaType'] !== 'application/json' || !data['contentSchema']) return true;
      let value: unknown;
      try {
        value = JSON.parse(message['data'] ?? '');
      } catch {
        return fail('data is not JSON');
      }
      const dataFn = validatorAt([...variant, 'properties', 'data', 'contentSchema']);
      return dataFn(value) || fail(ajv.errorsText(dataFn.errors, { dataVar: 'data' }));
    };
    if (!variants.some(fits)) throw new ContractError(`${what}: the event ${JSON.stringify(message).slice(0, 300)} is no message the document describes: ${failures.join(' | ')}`);
  }

  return {
    check,
    async fetch(url, init = {}) {
      const res = await fetch(url, init);
      const method = init.method ?? 'GET';
      const type = res.headers.get('content-type') ?? '';
      if (type.startsWith('text/event-stream')) {
        check(method, url, { status: res.status, headers: res.headers, body: '' });
        return res;
      }
      const bytes = Buffer.from(await res.arrayBuffer());
      check(method, url, { status: res.status, headers: res.headers, body: bytes.toString('utf8') });
      const empty = method.toUpperCase() === 'HEAD' || res.status === 204 || res.status === 304;
      return new Response(empty ? null : bytes, { status: res.status, statusText: res.statusText, headers: res.headers });
    },
  };
}

function mediaType(answer: Answer): string {
  return (answer.headers.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
}

function parse(text: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new ContractError(`${what}: the body is not JSON: ${text.slice(0, 200)}`);
  }
}

/**
 * The complete messages of a server-sent event stream (text/event-stream as the HTML standard defines
 * it): fields per message, `data` lines joined by newlines; comments and a trailing partial message are
 * left out.
 */
export function parseEvents(text: string): Record<string, string>[] {
  const messages: Record<string, string>[] = [];
  const blocks = text.replace(/\r\n?/g, '\n').split('\n\n');
  blocks.pop(); // what follows the last blank line is not complete yet
  for (const block of blocks) {
    const fields: Record<string, string> = {};
    for (const line of block.split('\n')) {
      if (line === '' || line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const name = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      fields[name] = name === 'data' && 'data' in fields ? `${fields['data']}\n${value}` : value;
    }
    if (Object.keys(fields).length) messages.push(fields);
  }
  return messages;
}
