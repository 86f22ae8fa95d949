// The Concord operator console: one page, hash routes, the JSON API under
// /ui/api/. Every value that comes from the coordinator (gids, metadata,
// participant errors, reasons, notes) is put in the page as text nodes by
// el() below and never parsed as HTML: this file does not use innerHTML.
'use strict';

const POLL_MS = 3000;

// ---- small helpers --------------------------------------------------------

/** An element with attributes and children; strings become text nodes. */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
}

const $ = (id) => document.getElementById(id);

function announce(text) {
  $('live').textContent = text;
}

/** "3m ago" / "in 40s" / "now". */
function rel(iso) {
  if (!iso) return '—';
  const s = Math.round((Date.parse(iso) - Date.now()) / 1000);
  const a = Math.abs(s);
  const span = a < 60 ? a + 's' : a < 3600 ? Math.floor(a / 60) + 'm'
    : a < 86400 ? Math.floor(a / 3600) + 'h' : Math.floor(a / 86400) + 'd';
  if (a < 1) return 'now';
  return s < 0 ? span + ' ago' : 'in ' + span;
}

/** A time shown relative, with the exact UTC time on hover. */
function when(iso) {
  if (!iso) return el('span', { class: 'muted' }, '—');
  return el('time', { datetime: iso, title: iso }, rel(iso));
}

function txHref(gid) {
  return '#/tx/' + encodeURIComponent(gid);
}

function badge(status) {
  return el('span', { class: 'badge s-' + status }, status);
}

function flags(t) {
  return [
    t.needs_attention ? el('span', { class: 'flag attention' }, 'needs attention') : null,
    t.paused ? el('span', { class: 'flag paused' }, 'paused') : null,
    t.resolution ? el('span', { class: 'flag resolved' }, 'resolved') : null,
  ];
}

function table(headers, rows, caption) {
  return el('div', { class: 'scroll' },
    el('table', {},
      caption ? el('caption', {}, caption) : null,
      el('thead', {}, el('tr', {}, headers.map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, rows)));
}

// ---- the API ----------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// True while the page refreshes itself: such requests say so, and the
// server does not count them as activity (the idle timeout still applies).
let background = false;

async function api(method, path, body) {
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
  if (background) init.headers['X-Concord-Background'] = '1';
  if (method !== 'GET') {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body || {});
  }
  const reply = await fetch('/ui/api' + path, init);
  let data = null;
  if (reply.status !== 204) {
    try { data = await reply.json(); } catch (_) { data = null; }
  }
  if (!reply.ok) {
    const message = (data && data.error) || reply.statusText;
    if (reply.status === 401 && path !== '/session') signedOut('Your session ended: ' + message);
    throw new ApiError(reply.status, message);
  }
  return data;
}

// ---- sign-in ----------------------------------------------------------------

let pollTimer = null;
let current = null; // the view on screen: { refresh() }

function signedOut(message) {
  clearInterval(pollTimer);
  current = null;
  $('top').hidden = true;
  $('view').hidden = true;
  $('sign-in').hidden = false;
  $('sign-in-error').textContent = message || '';
  $('token').value = '';
  $('token').focus();
}

function signedIn(me) {
  $('whoami').textContent = me.actor;
  $('sign-in').hidden = true;
  $('top').hidden = false;
  $('view').hidden = false;
  route();
}

async function signIn(event) {
  event.preventDefault();
  const token = $('token').value;
  $('sign-in-error').textContent = '';
  try {
    const me = await api('POST', '/session', { token });
    $('token').value = '';
    signedIn(me);
  } catch (e) {
    $('token').value = '';
    $('sign-in-error').textContent = 'Sign-in refused: ' + e.message;
    $('token').focus();
  }
}

async function signOut() {
  try { await api('DELETE', '/session'); } catch (_) { /* signed out either way */ }
  location.hash = '';
  signedOut('Signed out.');
}

// ---- routing and live updates -----------------------------------------------

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, query] = raw.split('?');
  return { parts: path.split('/').filter(Boolean), params: new URLSearchParams(query || '') };
}

function route() {
  const { parts, params } = parseHash();
  const view = $('view');
  clear(view);
  clearInterval(pollTimer);
  let name = parts[0] || 'overview';
  if (name === 'tx' && parts[1]) current = detailView(decodeURIComponent(parts.slice(1).join('/')));
  else if (name === 'transactions') current = listView(params);
  else if (name === 'participants') current = participantsView();
  else { name = 'overview'; current = overviewView(); }
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === (name === 'tx' ? 'transactions' : name)) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  view.append(current.root);
  const heading = view.querySelector('h1');
  if (heading) { heading.tabIndex = -1; heading.focus(); }
  refresh();
  pollTimer = setInterval(() => {
    // Not while a confirmation is open, nor in a hidden tab.
    if (document.hidden || $('confirm').open) return;
    background = true;
    refresh().finally(() => { background = false; });
  }, POLL_MS);
}

async function refresh() {
  const view = current;
  if (!view) return;
  try {
    await view.refresh();
    if (view.problem) view.problem.textContent = '';
  } catch (e) {
    if (e.status !== 401 && view.problem) view.problem.textContent = 'Could not load: ' + e.message;
  }
}

function problemLine() {
  return el('p', { class: 'error', role: 'alert' });
}

// ---- overview ---------------------------------------------------------------

function overviewView() {
  const problem = problemLine();
  const root = el('div', {}, el('h1', {}, 'Overview'), problem, el('div'));
  return {
    root,
    problem,
    async refresh() {
      const o = await api('GET', '/overview');
      const s = o.stats;
      const card = (label, value, href, id) => el('div', { class: 'card', id },
        el('div', { class: 'value' }, href ? el('a', { href }, String(value)) : String(value)),
        el('div', { class: 'label' }, label));
      const statusRows = Object.entries(s.by_status).map(([st, n]) => el('tr', {},
        el('td', {}, el('a', { href: '#/transactions?status=' + st }, badge(st))),
        el('td', { class: 'num' }, String(n))));
      const oldest = s.oldest_unfinished;
      const next = el('div', {},
        el('div', { class: 'cards' },
          card('unfinished', s.unfinished, '#/transactions?stuck=1s', 'card-unfinished'),
          card('need attention', s.needs_attention, '#/transactions?needs_attention=true', 'card-attention'),
          card('retry backlog', s.retry_backlog + ' (' + s.retry_due + ' due)', null, 'card-backlog'),
          card('paused', s.paused, null, 'card-paused'),
          card('resolved by hand', s.resolved, null, 'card-resolved'),
          card('total kept', s.total, '#/transactions', 'card-total')),
        el('h2', {}, 'Oldest unfinished'),
        oldest
          ? el('p', { id: 'oldest' }, el('a', { href: txHref(oldest.gid) }, oldest.gid), ' ',
            badge(oldest.status), ' ', flags(oldest), ' created ', when(oldest.created_at))
          : el('p', { id: 'oldest', class: 'muted' }, 'Nothing is unfinished.'),
        el('h2', {}, 'Finished per minute, last hour'),
        chart(o.per_minute),
        el('h2', {}, 'By status'),
        table(['status', 'count'], statusRows));
      root.replaceChild(next, root.lastChild);
    },
  };
}

/** Bars of finished (and, darker, failed) transactions per minute. */
function chart(minutes) {
  const NS = 'http://www.w3.org/2000/svg';
  const svgEl = (tag, attrs, text) => {
    const n = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
    if (text) n.textContent = text;
    return n;
  };
  const finished = minutes.reduce((a, m) => a + m.finished, 0);
  const failed = minutes.reduce((a, m) => a + m.failed, 0);
  const top = Math.max(1, ...minutes.map((m) => m.finished));
  const W = 600, H = 120, bw = W / Math.max(1, minutes.length);
  const summary = finished + ' finished, ' + failed + ' failed (rolled back) in the last hour; busiest minute ' + top;
  const svg = svgEl('svg', { viewBox: `0 0 ${W} ${H + 16}`, role: 'img', class: 'chart', 'aria-label': summary });
  minutes.forEach((m, i) => {
    const h = (m.finished / top) * H;
    const hf = (m.failed / top) * H;
    const g = svgEl('g', {});
    g.append(svgEl('title', {}, m.minute.slice(11, 16) + ' UTC: ' + m.finished + ' finished, ' + m.failed + ' failed'));
    g.append(svgEl('rect', { x: i * bw + 1, y: H - h, width: Math.max(1, bw - 2), height: h, class: 'ok' }));
    g.append(svgEl('rect', { x: i * bw + 1, y: H - hf, width: Math.max(1, bw - 2), height: hf, class: 'failed' }));
    svg.append(g);
  });
  svg.append(svgEl('text', { x: 0, y: H + 14, class: 'axis' }, '−60m'));
  svg.append(svgEl('text', { x: W, y: H + 14, class: 'axis end' }, 'now'));
  return el('figure', { id: 'chart' }, svg,
    el('figcaption', {}, el('span', { class: 'key ok' }), ' finished ', el('span', { class: 'key failed' }),
      ' failed (rolled back) — ', summary));
}

// ---- transactions -----------------------------------------------------------

const STATUSES = ['trying', 'confirming', 'confirmed', 'cancelling', 'cancelled',
  'running', 'succeeded', 'compensating', 'compensated'];

/** One checkbox per status in a disclosure; none checked is "any". */
function statusPicker(chosen) {
  const picked = new Set((chosen || '').split(',').filter(Boolean));
  const summary = el('summary', {}, 'Status: ' + (picked.size ? [...picked].join(', ') : 'any'));
  return el('details', { class: 'statuses', id: 'filter-status' }, summary,
    el('div', { class: 'options' }, STATUSES.map((s) => {
      const box = el('input', { type: 'checkbox', name: 'status', value: s, id: 'status-' + s });
      box.checked = picked.has(s);
      return el('label', { class: 'check' }, box, ' ', s);
    })));
}

function listView(params) {
  const field = (label, input) => el('label', { class: 'field' }, el('span', {}, label), input);
  const select = (name, options) => {
    const s = el('select', { name, id: 'filter-' + name });
    for (const [value, text] of options) s.append(el('option', { value }, text));
    s.value = params.get(name) || '';
    return s;
  };
  const text = (name, placeholder) => el('input', {
    name, id: 'filter-' + name, type: 'search', placeholder, value: params.get(name) || '',
    autocomplete: 'off', spellcheck: 'false',
  });
  const attention = el('input', { type: 'checkbox', name: 'needs_attention', id: 'filter-needs_attention' });
  attention.checked = params.get('needs_attention') === 'true';
  const form = el('form', { class: 'filters', id: 'filters', role: 'search' },
    statusPicker(params.get('status')),
    field('Mode', select('mode', [['', 'any'], ['tcc', 'tcc'], ['saga', 'saga']])),
    field('Participant', text('participant', 'bank-a')),
    field('Unfinished for', select('stuck', [['', 'any'], ['1s', 'any time'], ['1m', '≥ 1 min'],
      ['5m', '≥ 5 min'], ['1h', '≥ 1 hour'], ['1d', '≥ 1 day']])),
    field('Created within', select('created_after', [['', 'any'], ['5m', '5 min'], ['1h', '1 hour'],
      ['1d', '1 day'], ['7d', '7 days']])),
    field('Gid starts with', text('gid_prefix', 'order-')),
    el('label', { class: 'check' }, attention, ' needs attention'),
    el('button', { type: 'submit' }, 'Apply'));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form)) {
      if (!v) continue;
      // Several statuses go as one comma-separated value, as the CLI's --status.
      if (k === 'status' && q.has('status')) q.set(k, q.get(k) + ',' + v);
      else q.set(k, v === 'on' ? 'true' : v);
    }
    location.hash = '#/transactions' + (q.toString() ? '?' + q : '');
  });
  const problem = problemLine();
  const results = el('div', { id: 'results' });
  const updated = el('p', { class: 'muted', id: 'updated' });
  const root = el('div', {}, el('h1', {}, 'Transactions'), form, problem, updated, results);
  // Pages by cursor: the list is newest first; `pages` holds the cursors of
  // the pages before this one, for "Newer".
  const pages = [];
  let cursor = params.get('cursor') || '';
  const query = () => {
    const q = new URLSearchParams(params);
    q.delete('cursor');
    if (cursor) q.set('cursor', cursor);
    return q.toString();
  };
  const view = {
    root,
    problem,
    async refresh() {
      const list = await api('GET', '/transactions' + (query() ? '?' + query() : ''));
      const rows = list.transactions.map((t) => el('tr', { 'data-gid': t.gid },
        el('td', {}, el('a', { href: txHref(t.gid), class: 'gid' }, t.gid)),
        el('td', {}, badge(t.status), ' ', flags(t)),
        el('td', {}, t.mode),
        el('td', {}, t.participants.join(', ')),
        el('td', { class: 'num' }, String(t.attempts)),
        el('td', {}, when(t.created_at)),
        el('td', {}, t.paused || t.resolution ? '—' : when(t.next_attempt_at))));
      const pager = el('div', { class: 'pager' },
        el('button', {
          type: 'button', id: 'newer', disabled: pages.length === 0,
          onclick: () => { cursor = pages.pop() || ''; refresh(); },
        }, '← Newer'),
        el('button', {
          type: 'button', id: 'older', disabled: !list.next_cursor,
          onclick: () => { pages.push(cursor); cursor = list.next_cursor; refresh(); },
        }, 'Older →'));
      const next = list.transactions.length
        ? el('div', { id: 'results' }, table(['gid', 'status', 'mode', 'participants', 'rounds',
          'created', 'next retry'], rows), pager)
        : el('div', { id: 'results' }, el('p', { class: 'muted' }, 'No transaction matches.'), pager);
      root.replaceChild(next, root.querySelector('#results'));
      updated.textContent = 'Updated ' + new Date().toLocaleTimeString() + '; refreshes every '
        + POLL_MS / 1000 + ' s.';
    },
  };
  return view;
}

// ---- one transaction --------------------------------------------------------

const COMMANDS = {
  retry: {
    label: 'Retry now',
    text: (gid) => `Drive ${gid} now instead of at its next scheduled retry: every phase-2 call it still owes is sent again.`,
    field: 'Note (optional)', required: false, key: 'note',
  },
  pause: {
    label: 'Pause',
    text: (gid) => `Stop retrying ${gid} until someone resumes it. Nothing is sent to its participants meanwhile.`,
    field: 'Note (optional)', required: false, key: 'note',
  },
  resume: {
    label: 'Resume',
    text: (gid) => `Retry ${gid} again on its schedule.`,
    field: 'Note (optional)', required: false, key: 'note',
  },
  rollback: {
    label: 'Roll back',
    text: (gid) => `Roll back ${gid}: the decision becomes "cancel" and every branch is cancelled. This cannot be undone.`,
    field: 'Reason (required, recorded in the history)', required: true, key: 'reason',
  },
  resolve: {
    label: 'Resolve by hand',
    text: (gid) => `Mark ${gid} as resolved by hand: the coordinator will never retry it again. Say what you did about it.`,
    field: 'Note (required, recorded in the history)', required: true, key: 'note',
  },
};

function detailView(gid) {
  const problem = problemLine();
  const result = el('p', { id: 'action-result', role: 'alert' });
  const actions = el('div', { class: 'actions', id: 'actions' },
    Object.entries(COMMANDS).map(([name, c]) => el('button', {
      type: 'button', id: 'do-' + name, onclick: () => confirmCommand(gid, name, result),
    }, c.label)));
  const body = el('div', { id: 'detail' });
  const root = el('div', {},
    el('p', {}, el('a', { href: '#/transactions' }, '← Transactions')),
    el('h1', { class: 'gid' }, gid),
    problem, actions, result, body);
  return {
    root,
    problem,
    async refresh() {
      const d = await api('GET', '/transactions/' + encodeURIComponent(gid));
      root.replaceChild(renderDetail(d), root.querySelector('#detail'));
    },
  };
}

function renderDetail(d) {
  const t = d.transaction;
  const row = (label, ...value) => [el('dt', {}, label), el('dd', {}, ...value)];
  const facts = el('dl', { class: 'facts' },
    row('status', badge(t.status), ' ', flags(t)),
    row('mode', t.mode),
    row('created', when(t.created_at)),
    row('deadline', when(t.deadline)),
    row('decided', when(t.decided_at)),
    row('finished', when(t.finished_at)),
    row('phase-2 rounds', String(t.attempts)),
    row('next retry', t.paused || t.resolution ? '—' : when(t.next_attempt_at)),
    t.lease_owner ? row('driven by', t.lease_owner, ' until ', when(t.lease_until)) : [],
    t.attention_reason ? row('attention', t.attention_reason) : [],
    t.rollback_reason ? row('rollback reason', t.rollback_reason) : [],
    t.resolution ? row('resolved', 'by ', t.resolution.resolved_by, ' ', when(t.resolution.resolved_at), ': ',
      el('span', { class: 'note' }, t.resolution.note)) : [],
    Object.entries(d.metadata).map(([k, v]) => row('metadata ' + k, v)));
  const branchRows = d.branches.flatMap((b) => b.phases.map((p, i) => el('tr', {},
    el('td', {}, i === 0 ? b.branch_id : ''),
    el('td', {}, i === 0 ? b.participant + '.' + b.action : ''),
    el('td', {}, p.phase),
    el('td', {}, el('span', { class: 'call c-' + p.status }, p.status)),
    el('td', { class: 'num' }, String(p.attempts)),
    el('td', { class: 'error-text' }, [p.last_code, p.last_error].filter(Boolean).join(' ')),
    el('td', {}, p.failing_since ? when(p.failing_since) : '—'),
    el('td', {}, i === 0 ? when(b.next_attempt_at) : ''))));
  // The call policy in force of each branch that has one (its request's or
  // its action's, from registration); the others follow the coordinator.
  const policies = d.branches.filter((b) => b.policy).map((b) => el('li', {},
    'branch ' + b.branch_id + ': ' + b.policy));
  const events = d.events.slice().reverse().map((e) => el('li', { class: 'event k-' + e.kind },
    el('div', { class: 'head' }, when(e.at), ' ', el('b', { class: 'kind' }, e.kind),
      e.status ? [' → ', badge(e.status)] : null,
      e.branch_id ? ' branch ' + e.branch_id : null,
      e.phase ? ' ' + e.phase : null,
      e.attempt ? ' attempt ' + e.attempt : null,
      e.actor ? [' by ', el('span', { class: 'actor' }, e.actor)] : null),
    e.code || e.message ? el('div', { class: 'message' }, [e.code, e.message].filter(Boolean).join(' ')) : null));
  return el('div', { id: 'detail' },
    d.blocked_by
      ? el('p', { id: 'why', class: 'why' }, el('b', {}, 'Why it is not finished: '), d.blocked_by)
      : el('p', { id: 'why', class: 'why done' }, 'Finished.'),
    facts,
    el('h2', {}, 'Branches'),
    d.branches.length
      ? table(['branch', 'participant.action', 'phase', 'status', 'attempts', 'last error',
        'failing since', 'next retry'], branchRows)
      : el('p', { class: 'muted' }, 'No branch.'),
    policies.length
      ? [el('h3', {}, 'Call policies in force'), el('ul', { id: 'policies' }, policies)]
      : null,
    el('h2', {}, 'History (newest first)'),
    el('ol', { class: 'timeline', id: 'timeline' }, events));
}

/** Asks before a command, names what will happen, then sends it. */
function confirmCommand(gid, name, result) {
  const c = COMMANDS[name];
  const dialog = $('confirm');
  const fieldInput = $('confirm-field');
  $('confirm-title').textContent = c.label + '?';
  $('confirm-text').textContent = c.text(gid);
  $('confirm-field-label').textContent = c.field;
  fieldInput.value = '';
  fieldInput.required = c.required;
  $('confirm-ok').textContent = c.label;
  const form = $('confirm-form');
  const done = () => {
    form.onsubmit = null;
    $('confirm-cancel').onclick = null;
    dialog.close();
    $('do-' + name).focus();
  };
  $('confirm-cancel').onclick = done;
  form.onsubmit = async (event) => {
    event.preventDefault();
    const value = fieldInput.value.trim();
    if (c.required && !value) { fieldInput.focus(); return; }
    done();
    result.className = '';
    result.textContent = 'Sending…';
    try {
      const r = await api('POST', '/transactions/' + encodeURIComponent(gid) + '/' + name, { [c.key]: value });
      result.className = 'ok';
      result.textContent = (r.changed ? 'Done: ' : 'Nothing changed: ') + r.message;
    } catch (e) {
      result.className = 'error';
      result.textContent = 'Refused: ' + e.message;
    }
    announce(result.textContent);
    refresh();
  };
  dialog.showModal();
  fieldInput.focus();
}

// ---- participants -----------------------------------------------------------

function participantsView() {
  const problem = problemLine();
  const root = el('div', {}, el('h1', {}, 'Participants'), problem, el('div', { id: 'participants' }));
  return {
    root,
    problem,
    async refresh() {
      const r = await api('GET', '/participants');
      const body = el('div', { id: 'participants' },
        el('p', { class: 'muted' }, 'Breakers and call statistics as seen by instance ', r.instance_id, '.'),
        r.participants.length ? r.participants.map((p) => el('section', { class: 'participant' },
          el('h2', {}, p.name),
          el('p', {}, 'actions: ', p.actions.join(', ') || '—'),
          table(['endpoint', 'breaker', 'recent failures', 'last success', 'last failure', 'last error',
            'last seen'], p.endpoints.map((e) => el('tr', {},
            el('td', {}, e.url),
            el('td', {}, el('span', { class: 'breaker b-' + e.breaker }, e.breaker)),
            el('td', { class: 'num' }, e.failure_rate === null ? '—'
              : `${e.recent_failures}/${e.recent_calls} (${Math.round(e.failure_rate * 100)}%)`),
            el('td', {}, when(e.last_success_at)),
            el('td', {}, when(e.last_failure_at)),
            el('td', { class: 'error-text' }, e.last_error || ''),
            el('td', {}, when(e.last_seen_at))))))) : el('p', { class: 'muted' }, 'No participant is registered.'));
      root.replaceChild(body, root.querySelector('#participants'));
    },
  };
}

// ---- start ------------------------------------------------------------------

document.addEventListener('DOMContentLoaded', async () => {
  $('sign-in-form').addEventListener('submit', signIn);
  $('sign-out').addEventListener('click', signOut);
  window.addEventListener('hashchange', () => { if (!$('top').hidden) route(); });
  try {
    signedIn(await api('GET', '/session'));
  } catch (e) {
    signedOut(e.status === 401 ? '' : e.message);
  }
});
