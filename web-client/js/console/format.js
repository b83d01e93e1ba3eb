// Times for people: everything in WIB (Asia/Jakarta), whatever the browser's own zone is.
import { getLang } from '../i18n.js';

const fmt = () => new Intl.DateTimeFormat(getLang() === 'id' ? 'id-ID' : 'en-GB', {
  timeZone: 'Asia/Jakarta', weekday: 'short', day: 'numeric', month: 'short', year: 'numeric',
  hour: '2-digit', minute: '2-digit',
});

/** "Kam, 1 Mei 2030 09.00 WIB" from a UTC ISO string. */
export function wib(iso) {
  if (!iso) return '–';
  return `${fmt().format(new Date(iso))} WIB`;
}

/** Clock time only ("09.00") in WIB. */
export function wibTime(iso) {
  if (!iso) return '–';
  return new Intl.DateTimeFormat(getLang() === 'id' ? 'id-ID' : 'en-GB', {
    timeZone: 'Asia/Jakarta', hour: '2-digit', minute: '2-digit', second: '2-digit',
  }).format(new Date(iso));
}

/** Make an element with text and attributes. */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'text') e.textContent = v;
    else if (k === 'onclick') e.addEventListener('click', v);
    else if (k.startsWith('data-')) e.setAttribute(k, v);
    else if (k in e) e[k] = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c) e.append(c);
  return e;
}
