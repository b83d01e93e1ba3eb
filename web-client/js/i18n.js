// Translations: Bahasa Indonesia by default, English by a toggle. All UI strings live in
// i18n/id.js and i18n/en.js. Elements carry `data-i18n` (text) or `data-i18n-title` /
// `data-i18n-aria-label` / `data-i18n-placeholder` (attributes) with optional JSON
// `data-i18n-vars`, so a language switch re-renders everything in place.
import id from '../i18n/id.js';
import en from '../i18n/en.js';

const TABLES = { id, en };
const STORAGE_KEY = 'rakor.lang';
const listeners = new Set();
let lang = initialLang();

function initialLang() {
  const fromUrl = new URLSearchParams(window.location.search).get('lang');
  if (fromUrl && TABLES[fromUrl]) return fromUrl;
  try {
    const saved = window.localStorage.getItem(STORAGE_KEY);
    if (saved && TABLES[saved]) return saved;
  } catch { /* storage blocked */ }
  return 'id';
}

export const getLang = () => lang;
export const hasKey = (key) => key in TABLES.id;
export const languages = () => Object.keys(TABLES);

/** Translate `key`, replacing `{name}` placeholders from `vars`. Falls back to Indonesian, then the key. */
export function t(key, vars) {
  let s = TABLES[lang][key] ?? TABLES.id[key] ?? key;
  if (vars) s = s.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m));
  return s;
}

/** Format a number for the current language (e.g. 1,5 in Indonesian). */
export function formatNumber(n, digits = 0) {
  return new Intl.NumberFormat(lang === 'id' ? 'id-ID' : 'en-GB', {
    minimumFractionDigits: digits, maximumFractionDigits: digits,
  }).format(n);
}

/** Format a time of day for the current language. */
export function formatTime(date) {
  return new Intl.DateTimeFormat(lang === 'id' ? 'id-ID' : 'en-GB', {
    hour: '2-digit', minute: '2-digit', day: 'numeric', month: 'short', timeZoneName: 'short',
  }).format(date);
}

/** Set an element's text to a translated string and remember the key for language switches. */
export function setText(el, key, vars) {
  if (!el) return;
  el.dataset.i18n = key;
  if (vars) el.dataset.i18nVars = JSON.stringify(vars); else delete el.dataset.i18nVars;
  el.textContent = t(key, vars);
}

/** Set a translated attribute (title, aria-label, placeholder) and remember the key. */
export function setAttr(el, attr, key, vars) {
  if (!el) return;
  el.dataset[`i18n${attr.replace(/(^|-)(\w)/g, (m, d, c) => c.toUpperCase())}`] = key;
  if (vars) el.dataset.i18nVars = JSON.stringify(vars);
  el.setAttribute(attr, t(key, vars));
}

const ATTRS = ['title', 'aria-label', 'placeholder'];

/** Re-render every translated element under `root`. */
export function applyI18n(root = document) {
  const all = root.querySelectorAll('[data-i18n], [data-i18n-title], [data-i18n-aria-label], [data-i18n-placeholder]');
  for (const el of all) {
    let vars;
    try { vars = el.dataset.i18nVars ? JSON.parse(el.dataset.i18nVars) : undefined; } catch { vars = undefined; }
    if (el.dataset.i18n) el.textContent = t(el.dataset.i18n, vars);
    for (const attr of ATTRS) {
      const key = el.getAttribute(`data-i18n-${attr}`);
      if (key) el.setAttribute(attr, t(key, vars));
    }
  }
  document.documentElement.lang = lang;
}

export function setLang(next) {
  if (!TABLES[next] || next === lang) return;
  lang = next;
  try { window.localStorage.setItem(STORAGE_KEY, next); } catch { /* storage blocked */ }
  applyI18n();
  for (const fn of listeners) fn(lang);
}

export function onLangChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

/** Wire a button that toggles between the two languages; its label names the other language. */
export function bindLangToggle(button) {
  const render = () => {
    const other = lang === 'id' ? 'en' : 'id';
    button.textContent = TABLES[other]['lang.self'];
    button.setAttribute('lang', other);
    button.title = t('lang.switch');
  };
  button.addEventListener('click', () => setLang(lang === 'id' ? 'en' : 'id'));
  onLangChange(render);
  render();
}
