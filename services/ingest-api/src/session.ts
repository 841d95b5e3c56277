/**
 * Dashboard sessions: the page signs in once with a key (POST /session, the key in the JSON body) and
 * then holds a cookie, which also authenticates its EventSource streams (they cannot send headers).
 *
 * The cookie holds a signed, expiring token, not a session id: nothing is stored, and any API replica
 * accepts it, so a load balancer needs no affinity.
 *   token = v1.<role>.<expires, unix s>.<nonce>.<HMAC-SHA256 of the four before>
 * The HMAC key is derived from both API keys and SESSION_SECRET (optional): every replica has them, and
 * changing any of them ends every session. Forging a token takes both keys, and the operators' key
 * alone is already every power. Signing out removes the cookie; a copy of the token taken before stays
 * valid until it expires, so the lifetime is short (SESSION_TTL_SEC), and changing SESSION_SECRET ends
 * them all at once without touching the keys.
 *
 * The cookie is HttpOnly (no script reads it), SameSite=Strict (no other site's page sends it), Path=/,
 * Secure when the request came over https (directly or through a proxy that says so). A state-changing
 * request made with it must also come from the dashboard's own origin (`sameOriginProblem`).
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type Koa from 'koa';

export type Role = 'client' | 'admin';

export const SESSION_COOKIE = 'mesh_session';

export interface Session {
  role: Role;
  expiresAt: Date;
}

export interface SessionSigner {
  readonly ttlSec: number;
  issue(role: Role, now?: number): { token: string; session: Session };
  /** The session a token stands for; null when it is malformed, forged, signed for other keys, or expired. */
  verify(token: string | undefined, now?: number): Session | null;
}

const ROLES: readonly Role[] = ['client', 'admin'];

export function sessionSigner(o: { secret?: string | undefined; apiKey: string; adminApiKey?: string | undefined; ttlSec: number }): SessionSigner {
  const digest = (s: string) => createHash('sha256').update(s).digest('hex');
  const key = createHmac('sha256', `${digest(o.apiKey)}\0${digest(o.adminApiKey ?? '')}`).update(`video-mesh dashboard session\0${o.secret ?? ''}`).digest();
  const sign = (payload: string) => createHmac('sha256', key).update(payload).digest('base64url');
  return {
    ttlSec: o.ttlSec,
    issue(role, now = Date.now()) {
      const expires = Math.floor(now / 1000) + o.ttlSec;
      const payload = `v1.${role}.${expires}.${randomBytes(12).toString('base64url')}`;
      return { token: `${payload}.${sign(payload)}`, session: { role, expiresAt: new Date(expires * 1000) } };
    },
    verify(token, now = Date.now()) {
      if (!token || token.length > 200) return null;
      const parts = token.split('.');
      if (parts.length !== 5 || parts[0] !== 'v1') return null;
      const [, role, expires, , mac] = parts as [string, string, string, string, string];
      const expected = Buffer.from(sign(parts.slice(0, 4).join('.')));
      const offered = Buffer.from(mac);
      if (offered.length !== expected.length || !timingSafeEqual(offered, expected)) return null;
      if (!ROLES.includes(role as Role) || !/^\d{1,12}$/.test(expires)) return null;
      const expiresAt = new Date(Number(expires) * 1000);
      return expiresAt.getTime() > now ? { role: role as Role, expiresAt } : null;
    },
  };
}

/** Over https, directly or as a proxy in front says (a forged header only makes the cookie stricter). */
function isHttps(ctx: Koa.Context): boolean {
  return ctx.protocol === 'https' || ctx.get('X-Forwarded-Proto').split(',')[0]?.trim().toLowerCase() === 'https';
}

/** The Set-Cookie header holding `token` for `maxAgeSec` (0: removes the cookie). */
export function sessionCookie(ctx: Koa.Context, token: string, maxAgeSec: number): string {
  return `${SESSION_COOKIE}=${token}; Path=/; Max-Age=${maxAgeSec}; HttpOnly; SameSite=Strict${isHttps(ctx) ? '; Secure' : ''}`;
}

/** The session cookie's value, if the request carries one. */
export function sessionToken(ctx: Koa.Context): string | undefined {
  for (const part of (ctx.get('Cookie') || '').split(';')) {
    const [name, ...value] = part.trim().split('=');
    if (name === SESSION_COOKIE) return value.join('=');
  }
  return undefined;
}

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * Why a state-changing request riding on the session cookie is refused as cross-site, or null when it
 * comes from the dashboard's own origin. SameSite=Strict already keeps other sites' pages from sending
 * the cookie; this also refuses a sibling subdomain (same site, other origin) and browsers that ignore
 * SameSite. Sec-Fetch-Site is what browsers send now; Origin is checked where it is missing; a request
 * with neither is not from a browser page, and a program has no business using the dashboard's cookie.
 */
export function sameOriginProblem(ctx: Koa.Context): string | null {
  if (SAFE_METHODS.has(ctx.method)) return null;
  const site = ctx.get('Sec-Fetch-Site');
  if (site) return site === 'same-origin' ? null : `a ${site} request may not use the dashboard's session`;
  const origin = ctx.get('Origin');
  if (!origin) return "a request that uses the dashboard's session must come from its page (no Origin header)";
  let host: string | undefined;
  try {
    host = new URL(origin).host;
  } catch {
    // An opaque origin ("null": a sandboxed frame, a file) is no origin of ours.
  }
  return host === ctx.host ? null : "a request from another origin may not use the dashboard's session";
}
