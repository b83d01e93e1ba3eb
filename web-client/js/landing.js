// The landing page (`/`): what Rakor is, and a field to open an invitation link or token.
import { applyI18n, bindLangToggle } from './i18n.js';

/** Accept a full invitation URL, a `/join?token=` path, or a bare token; return the join path. */
export function joinPathFrom(input) {
  const text = String(input || '').trim();
  if (!text) return null;
  try {
    const url = new URL(text, window.location.origin);
    const token = url.searchParams.get('token');
    if (token) return `/join?token=${encodeURIComponent(token)}`;
  } catch { /* not a URL */ }
  if (/^[\w-]+\.[\w-]+\.[\w-]+$/.test(text)) return `/join?token=${encodeURIComponent(text)}`;
  return null;
}

bindLangToggle(document.getElementById('lang-toggle'));
applyI18n();
document.getElementById('open-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const path = joinPathFrom(document.getElementById('link').value);
  document.getElementById('link-error').hidden = !!path;
  if (path) window.location.assign(path);
});
