// Access-token helpers. The token is an HS256 JWT minted by `rakor token`; the page only reads
// its payload (name, role, room, expiry) for the pre-join screen. The server verifies it.

/** Decode the JWT payload, or return null when the token is not a readable JWT. */
export function decodeToken(token) {
  if (typeof token !== 'string') return null;
  const parts = token.split('.');
  if (parts.length !== 3 || !parts[1]) return null;
  try {
    const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    const padded = b64 + '='.repeat((4 - (b64.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    if (!claims || typeof claims !== 'object') return null;
    return {
      sub: String(claims.sub ?? ''),
      room: String(claims.room ?? ''),
      name: String(claims.name ?? claims.sub ?? ''),
      role: ['host', 'participant', 'viewer'].includes(claims.role) ? claims.role : 'participant',
      exp: typeof claims.exp === 'number' ? claims.exp : null,
    };
  } catch {
    return null;
  }
}

/** Whether the decoded token's `exp` (seconds) lies in the past at `nowMs`. */
export function isExpired(claims, nowMs = Date.now()) {
  return !!claims && claims.exp !== null && claims.exp * 1000 <= nowMs;
}

/** The token from the page URL (`/join?token=...`), or '' when there is none. */
export function tokenFromLocation(loc = window.location) {
  return new URLSearchParams(loc.search).get('token')?.trim() ?? '';
}
