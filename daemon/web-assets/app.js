// The resync dashboard. Served by resyncd; talks to it only (same origin):
// /api/session, /api/status, /api/events (server-sent events), and the
// POSTs that carry the session's CSRF token. Text only ever goes into the
// page as text (textContent), never as markup.
'use strict';

const $ = (id) => document.getElementById(id);

const S = {
  dash: null,        // /api/session or /api/status's dashboard facts
  csrf: null,
  status: null,      // the last status result
  es: null,          // the EventSource
  planId: null,      // the dialog's plan action
  runId: null,       // the resync action shown in #run
  lastResult: {},    // node -> {result, time}
  statusBusy: false,
  statusAgain: false,
  results: {},       // action id -> its result line (the stream may beat the POST's reply)
};

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k);
  return e;
}

function bytes(n) {
  if (n === null || n === undefined) return 'unknown';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0, v = Number(n);
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return (i ? v.toFixed(v < 10 ? 2 : 1) : String(v)) + ' ' + u[i];
}

function secs(s) {
  if (!isFinite(s) || s <= 0) return '—';
  if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + ' s';
  const m = Math.floor(s / 60);
  return m + ' min ' + Math.round(s % 60) + ' s';
}

function stateBadge(state) {
  const s = state || 'Unknown';
  return el('span', { class: 'state st-' + s.replace(/[^A-Za-z]/g, ''), text: s });
}

async function getJSON(path) {
  const r = await fetch(path, { credentials: 'same-origin', cache: 'no-store' });
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  return { status: r.status, body };
}

async function post(path, body) {
  const r = await fetch(path, {
    method: 'POST',
    credentials: 'same-origin',
    cache: 'no-store',
    headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': S.csrf || '' },
    body: JSON.stringify(body || {}),
  });
  let out = null;
  try { out = await r.json(); } catch (e) { out = null; }
  return { status: r.status, body: out };
}

function show(id, on) { $(id).hidden = !on; }

function secondaries() {
  const d = S.dash;
  return (d.nodes || []).filter((n) => n !== d.primary);
}

// ---- login ----

async function login(ev) {
  ev.preventDefault();
  $('login-error').textContent = '';
  $('login-btn').disabled = true;
  const r = await fetch('/api/login', {
    method: 'POST', credentials: 'same-origin', cache: 'no-store',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ token: $('token').value }),
  });
  $('login-btn').disabled = false;
  let b = null;
  try { b = await r.json(); } catch (e) { b = null; }
  if (r.status !== 200 || !b || !b.csrf) {
    $('login-error').textContent = (b && b.error) || ('login failed (' + r.status + ')');
    $('token').focus();
    return;
  }
  $('token').value = '';
  S.csrf = b.csrf;
  await start();
}

async function logout() {
  await post('/api/logout');
  S.csrf = null;
  if (S.es) { S.es.close(); S.es = null; }
  await start();
}

// ---- overview ----

function renderDash() {
  const d = S.dash;
  $('h-cluster').textContent = '· cluster ' + d.cluster;
  $('h-node').textContent = 'node ' + d.node;
  $('c-name').textContent = d.cluster;
  document.title = 'resync · ' + d.cluster;
  const slot = $('resync-slot');
  const canAct = d.logged_in && d.actions;
  if (d.resync_offered && canAct) {
    // Made once and kept (a refresh must not take a keyboard's focus).
    let b = $('resync-btn');
    if (!b) {
      b = el('button', { id: 'resync-btn', type: 'button', class: 'danger', text: 'Resync Cluster' });
      b.addEventListener('click', openDialog);
      slot.append(b);
    }
    if (S.runId === null) b.disabled = d.action_running;
  } else {
    slot.replaceChildren();
  }
  if (d.resync_offered) {
    show('resync-absent', false);
  } else {
    // No button at all: the reason in its place.
    $('resync-absent').textContent = 'No Resync Cluster button: ' + d.resync_absent_reason;
    show('resync-absent', true);
  }
  $('verify-btn').hidden = !canAct || !(d.nodes || []).length || d.nodes.length < 2;
  if (S.runId === null) $('verify-btn').disabled = d.action_running;
  let note = '';
  if (!d.actions) note = 'Read-only: this dashboard has no web_token_file, so it offers no actions.';
  else if (!d.logged_in) note = 'Read-only view: log in to act.';
  $('actions-note').textContent = note;
  show('actions-note', !!note);
  show('logout', d.logged_in);
}

function renderStatus() {
  const st = S.status;
  const d = S.dash;
  const tb = $('nodes').querySelector('tbody');
  tb.replaceChildren();
  if (!st) return;
  const view = st.view === st.node ? 'this node' : st.view;
  let sum = 'Primary: ' + (st.primary || 'none defined') + '. States as seen from ' +
    (st.primary && st.view === st.primary ? 'the primary (' + st.view + ')' : view) + '.';
  if (st.primary_error) sum += ' The primary did not answer: ' + st.primary_error;
  $('c-summary').textContent = sum;
  for (const n of st.nodes || []) {
    const lr = S.lastResult[n.name];
    const tr = el('tr', { 'data-node': n.name },
      el('th', { scope: 'row', text: n.name + (n.name === d.node ? ' (this node)' : '') }),
      el('td', { text: n.role, class: n.promotion_refused ? 'error' : '',
        title: n.promotion_refused || '' },
        n.promotion_refused ? ' — named primary, refused the role' : ''),
      el('td', {}, stateBadge(n.state)),
      el('td', { class: 'mono', text: n.generation ? n.generation.slice(0, 8) : '—', title: n.generation || '' }),
      el('td', { class: 'num', text: n.dirty_bytes === null || n.dirty_bytes === undefined ? '—' : bytes(n.dirty_bytes) }),
      el('td', { class: 'num', text: n.role === 'primary' ? '—' : (n.lacks_bytes === null || n.lacks_bytes === undefined ? 'unknown' : bytes(n.lacks_bytes)) }),
      el('td', { text: n.connected ? 'yes' : 'no' + (n.error ? ': ' + n.error : '') }),
      el('td', { text: n.last_resync || 'never' }),
      el('td', { text: lr ? lr.result : '—' }));
    tb.append(tr);
  }
}

async function loadStatus() {
  if (S.statusBusy) { S.statusAgain = true; return; }
  S.statusBusy = true;
  try {
    const r = await getJSON('/api/status');
    if (r.status === 401) { await start(); return; }
    if (r.body) {
      const csrf = S.csrf;
      S.dash = r.body;
      S.csrf = csrf;
      S.status = r.body.status || null;
      $('status-error').textContent = r.body.status_error || '';
      show('status-error', !!r.body.status_error);
      renderDash();
      renderStatus();
    }
  } finally {
    S.statusBusy = false;
    if (S.statusAgain) { S.statusAgain = false; loadStatus(); }
  }
}

// ---- the dialog ----

function dialogRow(name, p) {
  const tr = el('tr', { 'data-node': name });
  tr.append(el('th', { scope: 'row', text: name }));
  if (!p) {
    tr.append(el('td', { text: '…' }), el('td', { text: '…' }), el('td', { text: '…' }), el('td', { text: '…' }));
  } else if (p.error) {
    tr.append(el('td', {}, stateBadge(p.state)), el('td', { colspan: '3', class: 'error', text: 'unreachable: ' + p.error }));
  } else {
    tr.append(el('td', {}, stateBadge(p.state)),
      el('td', { class: 'num', text: bytes(p.differing_bytes) }),
      el('td', { class: 'num', text: p.lacking_bytes === null || p.lacking_bytes === undefined ? 'unknown' : bytes(p.lacking_bytes) }),
      el('td', { text: (p.mode || 'full') + (p.resume_offset ? ', resumes at ' + bytes(p.resume_offset) : '') }));
  }
  return tr;
}

async function openDialog() {
  const d = S.dash;
  $('dlg-cluster').textContent = d.cluster;
  $('dlg-name').textContent = d.cluster;
  $('dlg-primary').textContent = d.primary;
  $('dlg-undo').textContent = d.undo
    ? 'Undo is on: what the resync overwrites is kept in each secondary\'s undo journal and can be rolled back.'
    : 'Undo is off: the erased data cannot be brought back.';
  $('dlg-undo').className = d.undo ? 'banner info' : 'banner warn';
  const tb = $('dlg-nodes').querySelector('tbody');
  tb.replaceChildren(...secondaries().map((n) => dialogRow(n, null)));
  $('dlg-plan').textContent = 'Computing the plan (what differs on each secondary)…';
  $('dlg-error').textContent = '';
  $('dlg-confirm').value = '';
  $('dlg-go').disabled = true;
  $('dialog').showModal();
  $('dlg-confirm').focus();
  S.planId = null;
  const r = await post('/api/plan');
  if (r.status === 202 && r.body) {
    S.planId = r.body.action;
    if (S.results[S.planId]) planResult(S.results[S.planId]);
  } else $('dlg-plan').textContent = 'No plan: ' + ((r.body && r.body.error) || r.status) + ' (the resync still compares everything before it writes).';
}

function planResult(line) {
  if (!line.ok) {
    $('dlg-plan').textContent = 'No plan: ' + line.error;
    return;
  }
  const by = {};
  for (const n of line.nodes || []) by[n.name] = n;
  const tb = $('dlg-nodes').querySelector('tbody');
  tb.replaceChildren(...secondaries().map((n) => dialogRow(n, by[n] || { error: 'not in the plan' })));
  const total = (line.nodes || []).reduce((a, n) => a + (n.differing_bytes || 0), 0);
  $('dlg-plan').textContent = 'Plan from the primary: ' + bytes(total) + ' differ in all.';
  showStrips(line, 'the plan');
}

function confirmInput() {
  $('dlg-go').disabled = $('dlg-confirm').value !== S.dash.cluster;
}

async function confirmResync(ev) {
  ev.preventDefault();
  if ($('dlg-confirm').value !== S.dash.cluster) return;
  $('dlg-go').disabled = true;
  const r = await post('/api/resync', { confirm: $('dlg-confirm').value });
  if (r.status !== 202 || !r.body) {
    $('dlg-error').textContent = (r.body && r.body.error) || ('refused (' + r.status + ')');
    $('dlg-go').disabled = false;
    return;
  }
  $('dialog').close();
  beginRun(r.body.action);
}

// ---- a running resync ----

function bar(name) {
  let b = $('bar-' + name);
  if (b) return b;
  b = el('div', { class: 'bar', id: 'bar-' + name, 'data-node': name },
    el('div', { class: 'head' }, el('span', { text: name }), el('span', { class: 'pct', text: '0 %' })),
    el('progress', { max: '100', value: '0', 'aria-label': 'resync of ' + name }),
    el('div', { class: 'facts', text: 'waiting for the primary…' }));
  $('bars').append(b);
  return b;
}

function setBar(name, pct, facts) {
  const b = bar(name);
  const p = Math.max(0, Math.min(100, Math.floor(pct)));
  b.querySelector('progress').value = p;
  b.querySelector('.pct').textContent = p + ' %';
  b.dataset.pct = String(p);
  if (facts !== undefined) b.querySelector('.facts').textContent = facts;
}

function beginRun(id) {
  if ((S.runId === id && id !== -1) || S.results[id]) return;
  S.runId = id;
  $('bars').replaceChildren();
  for (const n of secondaries()) bar(n);
  $('run-title').textContent = 'Resync in progress';
  show('fence', true);
  show('run', true);
  show('results', false);
  $('cancel-btn').hidden = false;
  $('cancel-btn').disabled = false;
  const rb = $('resync-btn');
  if (rb) rb.disabled = true;
  $('verify-btn').disabled = true;
}

function progress(p) {
  // A resync's line or the bus's progress event: compared, then sent.
  const total = Number(p.bytes_total) || 0;
  const done = Number(p.bytes_done) || 0;
  const pct = total ? (100 * done) / total : 0;
  const phase = p.phase === 'transfer' ? 'sending' : p.phase === 'dirty' ? 'dirty blocks' : 'comparing';
  const eta = p.eta !== undefined ? p.eta : (p.rate > 0 ? (total - done) / p.rate : 0);
  setBar(p.node, pct, phase + ' — compared ' + bytes(p.bytes_compared) + ', sent ' + bytes(p.bytes_sent) +
    ', ' + bytes(p.rate || 0) + '/s, ETA ' + secs(eta));
}

function resyncResult(line) {
  $('cancel-btn').hidden = true;
  show('fence', false);
  const banners = $('banners');
  banners.replaceChildren();
  show('results', true);
  if (!line.ok) {
    $('run-title').textContent = 'Resync not run';
    banners.append(el('p', { class: 'banner bad', id: 'result-banner', text: 'The resync was refused or failed: ' + line.error }));
    return;
  }
  let good = 0;
  const nodes = line.nodes || [];
  const perNode = [];
  for (const n of nodes) {
    const ok = n.result === 'resynced' && n.state === 'UpToDate';
    if (ok) good++;
    S.lastResult[n.name] = { result: n.result, state: n.state };
    if (ok) setBar(n.name, 100, 'done — compared ' + bytes(n.bytes_compared) + ', sent ' + bytes(n.bytes_sent) + ' in ' + secs(n.seconds));
    else bar(n.name).querySelector('.facts').textContent = n.result + (n.error ? ': ' + n.error : '');
    const b = el('p', { class: 'banner ' + (ok ? 'ok' : 'bad'), 'data-node': n.name,
      text: n.name + ': ' + n.result + ' (' + n.state + ') — compared ' + bytes(n.bytes_compared) +
        ', sent ' + bytes(n.bytes_sent) + ', wrote ' + bytes(n.bytes_written) + ' in ' + secs(n.seconds) +
        (n.error ? ': ' + n.error : '') });
    const proof = n.proof || n.root_hash || null;
    if (proof) {
      const text = typeof proof === 'string' ? proof : Object.entries(proof).map(([k, v]) => k + ' ' + v).join(', ');
      b.append(el('span', { class: 'proof mono', text: 'proof: ' + text }));
    }
    perNode.push(b);
  }
  banners.append(...perNode);
  const all = good === nodes.length && nodes.length > 0;
  if (all && !$('diffs').hidden) {
    $('diffs-when').textContent = 'Before the resync of ' + clock(new Date()) +
      ', which made them identical (Verify to look again):';
  }
  $('run-title').textContent = all ? 'Resync complete' : 'Resync finished with failures';
  banners.prepend(el('p', { class: 'banner ' + (all ? 'ok' : 'bad'), id: 'result-banner',
    text: all ? 'Success: every secondary (' + nodes.map((n) => n.name).join(', ') + ') now holds the primary\'s data (generation ' + String(line.generation || '').slice(0, 8) + ').'
      : (nodes.length - good) + ' of ' + nodes.length + ' secondaries did not complete.' }));
}

async function cancelRun() {
  $('cancel-btn').disabled = true;
  const r = await post('/api/cancel');
  if (r.status !== 200) actionError('Cancel: ' + ((r.body && r.body.error) || r.status));
}

async function verify() {
  $('verify-btn').disabled = true;
  const r = await post('/api/verify');
  if (r.status !== 202) {
    actionError('Verify: ' + ((r.body && r.body.error) || r.status));
    $('verify-btn').disabled = false;
    return;
  }
  $('diffs-when').textContent = 'Verifying…';
  show('diffs', true);
}

function actionError(msg) {
  $('action-error').textContent = msg;
  show('action-error', !!msg);
}

// ---- the difference strips ----

function showStrips(line, what) {
  const nodes = (line.nodes || []).filter((n) => n.strip);
  if (!nodes.length) return;
  show('diffs', true);
  $('diffs-when').textContent = 'From ' + what + ' at ' + clock(new Date()) +
    ' (volume ' + bytes(line.volume_size) + '; red: where blocks differ).';
  const box = $('strips');
  box.replaceChildren();
  for (const n of nodes) {
    const c = el('canvas', { width: '512', height: '32', role: 'img',
      'aria-label': n.name + ': ' + bytes(n.differing_bytes) + ' differ in ' + (n.ranges_count || 0) + ' ranges' });
    box.append(el('div', { class: 'strip', 'data-node': n.name },
      el('div', { class: 'head' }, el('span', { text: n.name }),
        el('span', { text: n.error ? 'unreachable' : bytes(n.differing_bytes) + ' differ' + (n.ranges_count ? ' in ' + n.ranges_count + (n.ranges_count === 1 ? ' range' : ' ranges') : '') })), c));
    const g = c.getContext('2d');
    const w = c.width / n.strip.length;
    g.fillStyle = '#e3f4e8';
    g.fillRect(0, 0, c.width, c.height);
    n.strip.forEach((v, i) => {
      if (!v) return;
      g.fillStyle = 'rgba(163, 17, 27, ' + (0.35 + 0.65 * v / 100) + ')';
      g.fillRect(Math.floor(i * w), 0, Math.max(1, Math.ceil(w)), c.height);
    });
  }
}

// ---- the event stream ----

function clock(d) {
  return d.toTimeString().slice(0, 8);
}

function logLine(text, time) {
  const li = el('li', {}, el('time', { text: time || clock(new Date()) }), text);
  const ol = $('events');
  ol.prepend(li);
  while (ol.children.length > 100) ol.lastChild.remove();
  show('log', true);
}

function eventText(e) {
  switch (e.event) {
    case 'resync_started': return e.node + ': resync started (was ' + e.state + ')';
    case 'progress': return null;
    case 'state_changed': return e.node + ': ' + (e.old_state || '?') + ' → ' + e.state + (e.reason ? ' (' + e.reason + ')' : '');
    case 'resync_finished': return e.node + ': resync finished, ' + e.state + ', sent ' + bytes(e.bytes_sent);
    case 'resync_failed': return e.node + ': resync failed: ' + (e.error || '');
    case 'resync_cancelled': return e.node + ': resync cancelled';
    case 'resync_done': return 'resync done: ' + e.result + ' (' + e.nodes + ' nodes)';
    case 'peer': return e.node + ': ' + e.state;
    case 'notify_delivered': return 'notification delivered (' + e.channel + ')';
    case 'notify_failed': return 'notification failed (' + e.channel + '): ' + (e.error || '');
    default: return e.event;
  }
}

function onEvent(e) {
  const t = e.time ? clock(new Date(e.time)) : undefined;
  if (e.event === 'progress') {
    if (S.runId === null) beginRun(-1); // a resync started elsewhere (resyncctl)
    progress(e);
    return;
  }
  const text = eventText(e);
  if (text) logLine(text, t);
  if (['resync_finished', 'resync_failed', 'resync_cancelled'].includes(e.event)) {
    S.lastResult[e.node] = { result: e.event.slice(7) };
  }
  if (e.event === 'resync_done' && S.runId === -1) {
    $('run-title').textContent = 'Resync ' + e.result;
    $('cancel-btn').hidden = true;
    show('fence', false);
    S.runId = null;
  }
  if (['state_changed', 'resync_done', 'peer', 'resync_finished', 'resync_failed', 'resync_cancelled'].includes(e.event)) loadStatus();
}

function onAction(m) {
  if (m.started) {
    logLine('dashboard: ' + m.action + ' started');
    if (m.action === 'resync' && S.runId !== m.id) beginRun(m.id);
    return;
  }
  const line = m.line || {};
  if (line.type === 'progress') {
    if (m.action === 'resync') progress(line);
    return;
  }
  if (line.type !== 'result') return;
  S.results[m.id] = line;
  logLine('dashboard: ' + m.action + (line.ok ? ' done' : ' refused or failed: ' + line.error));
  if (m.action === 'plan' && m.id === S.planId) planResult(line);
  if (m.action === 'verify') {
    $('verify-btn').disabled = false;
    if (!line.ok) actionError('Verify: ' + line.error);
    else showStrips(line, 'the last verify');
  }
  if (m.action === 'resync') {
    resyncResult(line);
    S.runId = null;
    loadStatus();
  }
}

function openStream() {
  if (S.es) S.es.close();
  const es = new EventSource('/api/events');
  S.es = es;
  es.onopen = () => { $('live').textContent = 'live'; $('live').classList.add('on'); };
  es.onerror = () => { $('live').textContent = 'reconnecting'; $('live').classList.remove('on'); };
  es.onmessage = (ev) => {
    let m;
    try { m = JSON.parse(ev.data); } catch (e) { return; }
    if (m.type === 'event') onEvent(m);
    else if (m.type === 'action') onAction(m);
    else if (m.type === 'dropped') logLine(m.count + ' events dropped (the page fell behind)');
  };
}

// ---- start ----

async function start() {
  const r = await getJSON('/api/session');
  if (!r.body) { $('login-error').textContent = 'the daemon did not answer'; show('login', true); return; }
  S.dash = r.body;
  S.csrf = r.body.csrf || null;
  $('h-cluster').textContent = '· cluster ' + r.body.cluster;
  $('h-node').textContent = 'node ' + r.body.node;
  const needLogin = !r.body.logged_in && r.body.actions;
  show('login', needLogin);
  if (!r.body.logged_in && !r.body.public_status) {
    show('overview', false); show('run', false); show('results', false); show('diffs', false); show('log', false);
    if (S.es) { S.es.close(); S.es = null; }
    $('token').focus();
    return;
  }
  show('overview', true);
  renderDash();
  openStream();
  await loadStatus();
}

document.addEventListener('DOMContentLoaded', () => {
  $('login-form').addEventListener('submit', login);
  $('logout').addEventListener('click', logout);
  $('verify-btn').addEventListener('click', verify);
  $('cancel-btn').addEventListener('click', cancelRun);
  $('dlg-confirm').addEventListener('input', confirmInput);
  $('dlg-form').addEventListener('submit', confirmResync);
  $('dlg-cancel').addEventListener('click', () => $('dialog').close());
  // States stay true without events from elsewhere (a secondary does not
  // see the primary's bus): ask again now and then.
  setInterval(() => { if (S.dash && (S.dash.logged_in || S.dash.public_status)) loadStatus(); }, 15000);
  start();
});
