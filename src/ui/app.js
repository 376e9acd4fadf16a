// hivelet's web page: run logs, deployments and API keys over the JSON API.
// Plain DOM code, no framework and no build step. Every value from the API is put on the
// page as text (never as HTML).
'use strict';

(() => {
  const KEY_STORE = 'hivelet.adminKey';
  const LIVE_RUN = new Set(['queued', 'running']);
  const LIVE_DELIVERY = new Set(['held', 'pending', 'sending', 'retrying']);
  const PAGE_SIZE = 50;

  // ---------------------------------------------------------------------------------------
  // Small helpers
  // ---------------------------------------------------------------------------------------

  const $ = (sel, root = document) => root.querySelector(sel);

  /** Builds an element: h('a', {href: '#', class: 'x', onclick: fn}, 'text', child, ...). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'testid') el.dataset.testid = v;
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else if (k === 'style') Object.assign(el.style, v);
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (v === true) el.setAttribute(k, '');
      else el.setAttribute(k, String(v));
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : String(c));
    }
    return el;
  }

  const pad = (n, w = 2) => String(n).padStart(w, '0');

  /** `2024-05-01 14:03:22` in local time; the ISO value stays in the title. */
  function fmtTime(iso, withMs = false) {
    if (!iso) return '—';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return iso;
    const base = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    return withMs ? `${base}.${pad(d.getMilliseconds(), 3)}` : base;
  }

  function timeEl(iso, withMs = false) {
    return h('time', { datetime: iso || null, title: iso || null }, fmtTime(iso, withMs));
  }

  function fmtDuration(ms) {
    if (ms === null || ms === undefined) return '—';
    if (ms < 1000) return `${ms} ms`;
    if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
    const m = Math.floor(ms / 60000);
    const s = Math.round((ms % 60000) / 1000);
    if (m < 60) return `${m}m ${s}s`;
    return `${Math.floor(m / 60)}h ${m % 60}m`;
  }

  /** "in 3 s", "2 min ago". */
  function fmtRelative(iso) {
    if (!iso) return '';
    const diff = new Date(iso).getTime() - Date.now();
    const abs = Math.abs(diff);
    let text;
    if (abs < 1000) return 'now';
    if (abs < 60000) text = `${Math.round(abs / 1000)} s`;
    else if (abs < 3600000) text = `${Math.round(abs / 60000)} min`;
    else if (abs < 86400000) text = `${Math.round(abs / 3600000)} h`;
    else text = `${Math.round(abs / 86400000)} d`;
    return diff > 0 ? `in ${text}` : `${text} ago`;
  }

  const pretty = (v) => (typeof v === 'string' ? v : JSON.stringify(v, null, 2));

  function jsonBlock(value, testid) {
    return h('pre', { class: 'json', testid }, pretty(value));
  }

  function badge(text, cls, testid) {
    return h('span', { class: `badge ${cls || ''}`, testid }, text);
  }

  const statusBadge = (s) => badge(s, `st-${s}`, 'run-status');
  const deliveryBadge = (s) => badge(s ? s.replace('_', ' ') : '—', `dl-${s}`, 'delivery-state');
  const asyncBadge = () => badge('Async', 'async', 'async-badge');

  function httpBadge(attempt) {
    if (attempt.status_code !== null && attempt.status_code !== undefined) {
      const code = attempt.status_code;
      const cls = code >= 200 && code < 300 ? 'http-ok' : 'http-bad';
      return badge(String(code), cls, 'attempt-status');
    }
    return badge(attempt.error_kind || 'error', 'http-bad', 'attempt-status');
  }

  function shortId(id) {
    return id && id.length > 16 ? `${id.slice(0, 12)}…${id.slice(-4)}` : id;
  }

  function toast(message, kind = 'info') {
    // A rejected key already explains itself on the key prompt.
    if (kind === 'error' && !$('#login').hidden) return;
    const el = $('#toast');
    el.textContent = message;
    el.className = `toast ${kind}`;
    el.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { el.hidden = true; }, kind === 'error' ? 6000 : 3000);
  }

  async function copyText(text, button) {
    try {
      await navigator.clipboard.writeText(text);
    } catch (_) {
      const area = h('textarea', { style: { position: 'fixed', opacity: '0' } }, text);
      document.body.append(area);
      area.select();
      document.execCommand('copy');
      area.remove();
    }
    if (button) {
      const old = button.textContent;
      button.textContent = 'Copied';
      setTimeout(() => { button.textContent = old; }, 1200);
    }
  }

  function copyButton(getText, label = 'Copy', attrs = {}) {
    const b = h('button', { type: 'button', class: 'small', ...attrs }, label);
    b.addEventListener('click', () => copyText(getText(), b));
    return b;
  }

  // ---------------------------------------------------------------------------------------
  // The key and the API
  // ---------------------------------------------------------------------------------------

  const getKey = () => sessionStorage.getItem(KEY_STORE);

  class ApiError extends Error {
    constructor(status, message, body) {
      super(message);
      this.status = status;
      this.body = body;
    }
  }

  async function rawApi(key, method, path, body) {
    const headers = { Authorization: `Bearer ${key}`, Accept: 'application/json' };
    const init = { method, headers, cache: 'no-store' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, 'Cannot reach the hivelet daemon. Is it running?');
    }
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    if (!res.ok) {
      const msg = (data && (data.message || data.error)) || `HTTP ${res.status}`;
      throw new ApiError(res.status, msg, data);
    }
    return data;
  }

  async function api(method, path, body) {
    try {
      return await rawApi(getKey(), method, path, body);
    } catch (e) {
      if (e.status === 401 || e.status === 403) {
        signOut(e.status === 401
          ? 'The key was not accepted (revoked or rotated?). Enter an admin key.'
          : 'That key is not an admin key. Enter an admin key.');
      }
      throw e;
    }
  }

  function showLogin(message) {
    $('#login').hidden = false;
    $('#sign-out').hidden = true;
    const err = $('#login-error');
    err.hidden = !message;
    err.textContent = message || '';
    $('#main').replaceChildren();
    setTimeout(() => $('#key-input').focus(), 0);
  }

  function signOut(message) {
    sessionStorage.removeItem(KEY_STORE);
    stopTimers();
    closeSnippet();
    showLogin(message);
  }

  async function onLogin(ev) {
    ev.preventDefault();
    const input = $('#key-input');
    const key = input.value.trim();
    const err = $('#login-error');
    if (!key) return;
    $('#key-submit').disabled = true;
    try {
      await rawApi(key, 'GET', '/v1/keys');
      sessionStorage.setItem(KEY_STORE, key);
      input.value = '';
      err.hidden = true;
      $('#login').hidden = true;
      route();
    } catch (e) {
      err.hidden = false;
      err.textContent = e.status === 401 ? 'That key is not valid.'
        : e.status === 403 ? 'That is an invoke key; this page needs an admin key.'
          : e.message;
    } finally {
      $('#key-submit').disabled = false;
    }
  }

  // ---------------------------------------------------------------------------------------
  // Routing: #/runs, #/runs/<id>, #/deployments, #/deployments/<key>, #/keys
  // ---------------------------------------------------------------------------------------

  let routeToken = 0;
  let pollTimer = null;

  function stopTimers() {
    clearTimeout(pollTimer);
    pollTimer = null;
    stopLive();
  }

  // ---------------------------------------------------------------------------------------
  // Live runs: GET /v1/runs/{id}/stream read with fetch() (EventSource cannot send the key)
  // ---------------------------------------------------------------------------------------

  let liveAbort = null;
  /** The text a streamed prompt step has produced so far, shown while the run is live. */
  const liveText = { run: null, step: null, text: '', open: false, running: [] };

  function stopLive() {
    if (liveAbort) liveAbort.abort();
    liveAbort = null;
  }

  /**
   * Reads the run's SSE stream and calls onEvent(name, data) per event. Resolves true when
   * the run's final event came, false when the stream ended or failed before it.
   */
  async function readLive(id, onEvent, onOpen) {
    stopLive();
    const ctrl = new AbortController();
    liveAbort = ctrl;
    try {
      const res = await fetch(`/v1/runs/${encodeURIComponent(id)}/stream`, {
        headers: { Authorization: `Bearer ${getKey()}`, Accept: 'text/event-stream' },
        cache: 'no-store',
        signal: ctrl.signal,
      });
      if (!res.ok || !res.body) return false;
      onOpen();
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return false;
        buf += decoder.decode(value, { stream: true }).replace(/\r\n?/g, '\n');
        let end;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          let name = 'message';
          const data = [];
          for (const line of block.split('\n')) {
            if (line.startsWith('event:')) name = line.slice(6).trim();
            else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
          }
          if (!data.length) continue; // a keep-alive comment
          let parsed = null;
          try { parsed = JSON.parse(data.join('\n')); } catch (_) { parsed = null; }
          onEvent(name, parsed);
          if (/^run\.(completed|failed|cancelled)$/.test(name)) return true;
        }
      }
    } catch (_) {
      return false;
    } finally {
      if (liveAbort === ctrl) liveAbort = null;
    }
  }

  function liveSection(run) {
    if (!LIVE_RUN.has(run.run_status)) return null;
    const mine = liveText.run === run.request_id;
    const panel = section('Live output', 'run-live',
      h('p', { class: 'muted', id: 'live-step', testid: 'live-step' },
        mine && liveText.step ? `Streaming from step ${liveText.step}` : 'Text from streamed prompt steps appears here as it comes.'),
      h('pre', { class: 'json', id: 'live-text', testid: 'live-text' }, mine ? liveText.text : ''));
    panel.dataset.stream = mine && liveText.open ? 'open' : 'closed';
    return panel;
  }

  /** Runs `fn` after `ms` unless the page moved on meanwhile. */
  function schedule(token, ms, fn) {
    clearTimeout(pollTimer);
    pollTimer = setTimeout(() => {
      if (token !== routeToken) return;
      if (document.visibilityState === 'hidden') { schedule(token, ms, fn); return; }
      fn();
    }, ms);
  }

  function parseHash() {
    const raw = location.hash.replace(/^#\/?/, '');
    const q = raw.indexOf('?');
    const path = q >= 0 ? raw.slice(0, q) : raw;
    const query = q >= 0 ? raw.slice(q + 1) : '';
    return {
      parts: path.split('/').filter(Boolean).map(decodeURIComponent),
      params: new URLSearchParams(query),
    };
  }

  function setNav(view) {
    for (const a of document.querySelectorAll('#nav a')) {
      a.classList.toggle('active', a.dataset.nav === view);
    }
  }

  function render(...children) {
    $('#main').replaceChildren(...children.flat(Infinity).filter(Boolean));
  }

  async function route() {
    stopTimers();
    const token = ++routeToken;
    if (!getKey()) { showLogin(); return; }
    $('#login').hidden = true;
    $('#sign-out').hidden = false;
    const { parts, params } = parseHash();
    const view = parts[0] || 'runs';
    setNav(view);
    try {
      if (view === 'runs' && parts[1]) await runView(token, parts[1]);
      else if (view === 'runs') await runsView(token, params);
      else if (view === 'deployments') await deploymentsView(token, parts[1]);
      else if (view === 'keys') await keysView(token);
      else if (view === 'schedules') await schedulesView(token);
      else location.hash = '#/runs';
    } catch (e) {
      if (token === routeToken && e.status !== 401 && e.status !== 403) {
        render(h('div', { class: 'card error-card', testid: 'page-error' },
          h('h2', {}, e.status === 404 ? 'Not found' : 'Something went wrong'),
          h('p', {}, e.message),
          h('p', {}, h('a', { href: '#/runs' }, '← Back to runs'))));
      }
    }
  }

  // ---------------------------------------------------------------------------------------
  // Runs table
  // ---------------------------------------------------------------------------------------

  let deploymentKeys = null;

  async function loadDeploymentKeys() {
    if (!deploymentKeys) {
      const data = await api('GET', '/v1/deployments');
      deploymentKeys = data.deployments.map((d) => d.key).sort();
    }
    return deploymentKeys;
  }

  /** The page's filter params (hash) → the API's query. */
  function apiQuery(params, limit, cursor) {
    const q = new URLSearchParams();
    for (const name of ['deployment', 'variant', 'status', 'delivery', 'source', 'user', 'schedule']) {
      const v = params.get(name);
      if (v) q.set(name, v);
    }
    for (const name of ['since', 'until']) {
      const v = params.get(name);
      if (v) {
        const ms = new Date(v).getTime();
        if (!Number.isNaN(ms)) q.set(name, String(ms));
      }
    }
    const mk = (params.get('meta_key') || '').trim();
    if (mk) q.set(`meta.${mk}`, (params.get('meta_value') || '').trim());
    q.set('limit', String(limit));
    if (cursor) q.set('cursor', cursor);
    return q.toString();
  }

  function select(id, label, options, value) {
    return h('label', { class: 'field' }, h('span', {}, label),
      h('select', { id, name: id.replace('filter-', '') },
        options.map(([v, text]) => h('option', { value: v, selected: v === value }, text))));
  }

  function input(id, label, type, value, placeholder) {
    return h('label', { class: 'field' }, h('span', {}, label),
      h('input', { id, type, value: value || '', placeholder, spellcheck: 'false' }));
  }

  function filtersForm(params, deployments) {
    const form = h('form', { id: 'run-filters', class: 'filters card', autocomplete: 'off' },
      select('filter-deployment', 'Deployment',
        [['', 'All'], ...deployments.map((k) => [k, k])], params.get('deployment') || ''),
      select('filter-status', 'Status',
        [['', 'All'], ...['queued', 'running', 'completed', 'failed', 'cancelled'].map((s) => [s, s])],
        params.get('status') || ''),
      select('filter-delivery', 'Delivery',
        [['', 'All'], ['callback', 'Async (callback)'], ['direct', 'Direct']], params.get('delivery') || ''),
      select('filter-source', 'Source',
        [['', 'All'], ...['api', 'webhook', 'cli', 'ui', 'workflow', 'schedule'].map((s) => [s, s])], params.get('source') || ''),
      input('filter-since', 'From', 'datetime-local', params.get('since')),
      input('filter-until', 'To', 'datetime-local', params.get('until')),
      input('filter-meta-key', 'Metadata key', 'text', params.get('meta_key'), 'e.g. customer'),
      input('filter-meta-value', 'Value', 'text', params.get('meta_value'), 'any'),
      h('div', { class: 'filter-actions' },
        h('button', { type: 'submit', id: 'filter-apply', class: 'primary' }, 'Apply'),
        h('button', { type: 'button', id: 'filter-clear', onclick: () => { location.hash = '#/runs'; } }, 'Clear')));
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const p = new URLSearchParams();
      const fields = {
        deployment: 'filter-deployment', status: 'filter-status', delivery: 'filter-delivery',
        source: 'filter-source', since: 'filter-since', until: 'filter-until',
        meta_key: 'filter-meta-key', meta_value: 'filter-meta-value',
      };
      for (const [name, id] of Object.entries(fields)) {
        const v = $(`#${id}`).value.trim();
        if (v) p.set(name, v);
      }
      const next = p.toString() ? `#/runs?${p}` : '#/runs';
      if (location.hash === next) route(); else location.hash = next;
    });
    return form;
  }

  function runRow(run) {
    const open = () => { location.hash = `#/runs/${run.request_id}`; };
    const delivery = run.async
      ? h('span', { class: 'delivery-cell' }, asyncBadge(), deliveryBadge(run.delivery_state),
        run.attempt_count ? h('span', { class: 'muted' },
          `${run.attempt_count} attempt${run.attempt_count === 1 ? '' : 's'}`) : null)
      : h('span', { class: 'muted' }, 'direct');
    return h('tr', {
      class: 'clickable', tabindex: '0', testid: 'run-row',
      dataset: { requestId: run.request_id, status: run.run_status },
      onclick: open,
      onkeydown: (ev) => { if (ev.key === 'Enter') open(); },
    },
    h('td', { class: 'nowrap' }, timeEl(run.created_at)),
    h('td', {}, h('a', { href: `#/runs/${run.request_id}`, class: 'mono', title: run.request_id }, shortId(run.request_id))),
    h('td', {}, h('strong', {}, run.deployment), h('span', { class: 'muted' }, ` / ${run.variant}`),
      h('span', { class: 'muted small-text' }, ` v${run.version}`)),
    h('td', {}, statusBadge(run.run_status)),
    h('td', { class: 'nowrap num' }, runDuration(run)),
    h('td', {}, run.source),
    h('td', {}, delivery));
  }

  function isLive(run) {
    return LIVE_RUN.has(run.run_status) || (run.async && LIVE_DELIVERY.has(run.delivery_state));
  }

  async function runsView(token, params) {
    const deployments = await loadDeploymentKeys().catch(() => []);
    const state = { runs: [], next: null };
    const tbody = h('tbody', { id: 'runs-body' });
    const more = h('button', { type: 'button', id: 'load-more' }, 'Load more');
    const foot = h('div', { class: 'table-foot', hidden: true }, more);
    const empty = h('p', { class: 'empty muted', id: 'runs-empty', hidden: true }, 'No runs match.');
    const updated = h('span', { class: 'muted small-text', id: 'runs-updated' });

    const draw = () => {
      tbody.replaceChildren(...state.runs.map(runRow));
      foot.hidden = !state.next;
      empty.hidden = state.runs.length > 0;
      updated.textContent = `Updated ${fmtTime(new Date().toISOString())}`;
    };

    const fetchPage = (limit, cursor) => api('GET', `/v1/runs?${apiQuery(params, limit, cursor)}`);

    const refresh = async () => {
      if (state.runs.length > 200) return;
      const data = await fetchPage(Math.min(200, Math.max(PAGE_SIZE, state.runs.length)));
      if (token !== routeToken) return;
      state.runs = data.runs;
      state.next = data.next_cursor;
      draw();
      poll();
    };

    // Live runs refresh every few seconds; otherwise new runs show up within 15 s.
    const poll = () => {
      const live = state.runs.some(isLive);
      schedule(token, live ? 2000 : 15000, () => refresh().catch(() => poll()));
    };

    more.addEventListener('click', async () => {
      more.disabled = true;
      try {
        const data = await fetchPage(PAGE_SIZE, state.next);
        if (token !== routeToken) return;
        state.runs = state.runs.concat(data.runs);
        state.next = data.next_cursor;
        draw();
      } catch (e) {
        toast(e.message, 'error');
      } finally {
        more.disabled = false;
      }
    });

    const first = await fetchPage(PAGE_SIZE);
    if (token !== routeToken) return;
    state.runs = first.runs;
    state.next = first.next_cursor;

    render(
      h('div', { class: 'page-head' },
        h('h1', {}, 'Runs'),
        h('span', { class: 'spacer' }),
        updated,
        h('button', { type: 'button', id: 'runs-refresh', onclick: () => refresh().catch((e) => toast(e.message, 'error')) }, 'Refresh')),
      filtersForm(params, deployments),
      h('div', { class: 'card table-card' },
        h('table', { id: 'runs-table', class: 'table' },
          h('thead', {}, h('tr', {},
            ['Time', 'Run', 'Deployment', 'Status', 'Duration', 'Source', 'Delivery'].map((t) => h('th', {}, t)))),
          tbody),
        empty,
        foot));
    draw();
    poll();
  }

  // ---------------------------------------------------------------------------------------
  // One run
  // ---------------------------------------------------------------------------------------

  function dl(pairs, testid) {
    return h('dl', { class: 'props', testid },
      pairs.filter(Boolean).map(([k, v, id]) => [h('dt', {}, k), h('dd', { id, testid: id }, v)]));
  }

  function section(title, id, ...body) {
    return h('section', { class: 'card', id, testid: id }, h('h2', {}, title), ...body);
  }

  function isEmptyObj(v) {
    return v === null || v === undefined || (typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length === 0);
  }

  // How deep a nested trace line sits: one level per enclosing branch or loop.
  function nestingDepth(steps, step) {
    const parentOf = {};
    steps.forEach((s) => { if (!(s.id in parentOf)) parentOf[s.id] = s.parent || null; });
    let depth = 0;
    for (let p = step.parent; p && depth < 32; p = parentOf[p]) depth += 1;
    return depth;
  }

  function waterfall(run) {
    const steps = (run.steps || []).slice();
    // A live run's running steps, as its stream announced them.
    if (LIVE_RUN.has(run.run_status) && liveText.run === run.request_id) {
      for (const r of liveText.running) {
        if (!steps.some((s) => s.id === r.id && s.status === 'running')) {
          steps.push({ id: r.id, type: r.type, status: 'running', started_at: r.started_at, duration_ms: null, attempts: 1 });
        }
      }
    }
    if (!steps.length) return h('p', { class: 'muted' }, 'No steps ran yet.');
    const now = Date.now();
    const startOf = (s) => new Date(s.started_at).getTime();
    // A step still running or waiting lasts until now.
    const open = (s) => s.status === 'running' || s.status === 'waiting' || s.duration_ms === null || s.duration_ms === undefined;
    const lengthOf = (s) => (open(s) && LIVE_RUN.has(run.run_status) ? Math.max(0, now - startOf(s)) : (s.duration_ms || 0));
    const endOf = (s) => startOf(s) + lengthOf(s);
    const t0 = Math.min(run.started_at ? new Date(run.started_at).getTime() : Infinity, ...steps.map(startOf));
    const t1 = Math.max(...steps.map(endOf), run.ended_at ? new Date(run.ended_at).getTime() : 0);
    const span = Math.max(1, t1 - t0);
    return h('div', { class: 'waterfall', id: 'waterfall', testid: 'waterfall' },
      h('div', { class: 'wf-axis' }, h('span', {}, '0'), h('span', {}, fmtDuration(span))),
      steps.map((s) => {
        const left = ((startOf(s) - t0) / span) * 100;
        const width = Math.max(0.6, ((endOf(s) - startOf(s)) / span) * 100);
        const details = [];
        if (s.error) details.push(h('div', { class: 'error' }, s.error));
        if (s.status === 'waiting' && s.reason === 'provider_capacity') details.push(h('div', { class: 'sub', testid: 'step-waiting-reason' }, 'Waiting for provider capacity (its max_concurrent, requests or tokens per minute).'));
        if (s.child_request_id) details.push(h('div', { class: 'sub' }, 'Child run ', h('a', { href: `#/runs/${s.child_request_id}`, class: 'mono', testid: 'child-run' }, s.child_request_id)));
        if (s.output !== null && s.output !== undefined) details.push(h('div', { class: 'sub' }, 'Output'), jsonBlock(s.output));
        if (s.usage) details.push(h('div', { class: 'sub' }, 'Usage'), jsonBlock(s.usage));
        details.push(h('div', { class: 'muted small-text' }, s.status === 'reused'
          ? `Taken over from ${run.rerun_of || 'the earlier run'} without running (it had ${s.reason || 'completed'}).`
          : `Started ${fmtTime(s.started_at, true)} · ${s.attempts || 1} attempt${(s.attempts || 1) === 1 ? '' : 's'}`));
        return h('details', { class: 'wf-step', testid: 'step', dataset: { key: `step:${s.id}:${s.passes || ''}:${s.started_at}`, step: s.id, status: s.status } },
          h('summary', { class: 'wf-row' },
            h('span', { class: 'wf-label', style: s.parent ? { paddingLeft: `${nestingDepth(steps, s) * 0.9}em` } : {} },
              h('strong', {}, s.id), h('span', { class: 'muted' }, ` ${s.type}`),
              s.parent ? h('span', { class: 'muted', testid: 'step-nesting' }, s.pass !== null && s.pass !== undefined ? ` · in ${s.parent} · pass ${s.passes || s.pass}` : ` · in ${s.parent}`) : null),
            h('span', { class: 'wf-track' },
              h('span', { class: `wf-bar st-${s.status}`, style: { left: `${Math.min(left, 99.4)}%`, width: `${Math.min(width, 100 - Math.min(left, 99.4))}%` } })),
            h('span', { class: 'wf-meta' }, badge(s.status, `st-${s.status}`), h('span', { class: 'num' }, fmtDuration(lengthOf(s))))),
          h('div', { class: 'wf-details' }, details));
      }));
  }

  function approvalBox(run, token, reload) {
    // A `workflow` step waits for its child run, not for a person.
    const waiting = (run.steps || []).filter((s) => s.status === 'waiting' && s.type === 'approval');
    if (!waiting.length || run.run_status !== 'running') return null;
    return waiting.map((step) => {
      const out = step.output || {};
      const choices = Array.isArray(out.choices) ? out.choices : [];
      const err = h('p', { class: 'error', hidden: true });
      const send = async (body, button) => {
        button.disabled = true;
        try {
          await api('POST', `/v1/runs/${run.request_id}/steps/${encodeURIComponent(step.id)}/respond`, body);
          toast('Answer recorded; the run continues.');
          if (token === routeToken) await reload();
        } catch (e) {
          err.hidden = false;
          err.textContent = e.message;
          button.disabled = false;
        }
      };
      let controls;
      if (choices.length) {
        controls = h('div', { class: 'choices' }, choices.map((c) => {
          const value = typeof c === 'string' ? c : c.value;
          const label = typeof c === 'string' ? c : (c.label || c.value);
          const b = h('button', { type: 'button', class: 'primary', testid: 'approval-choice', dataset: { choice: value } }, label);
          b.addEventListener('click', () => send({ choice: value }, b));
          return b;
        }));
      } else {
        const text = h('textarea', { id: 'approval-text', rows: '3', placeholder: 'Your answer', dataset: { preserve: 'approval-text' } });
        const b = h('button', { type: 'button', class: 'primary', id: 'approval-submit' }, 'Send answer');
        b.addEventListener('click', () => send({ text: text.value }, b));
        controls = h('div', { class: 'choices' }, text, b);
      }
      return h('section', { class: 'card approval', id: 'approval', testid: 'approval', dataset: { step: step.id } },
        h('h2', {}, 'Waiting for approval'),
        h('p', { class: 'question', testid: 'approval-question' }, out.question || `Step ${step.id} is waiting for an answer.`),
        out.timeout_at ? h('p', { class: 'muted small-text' }, `Times out ${fmtTime(out.timeout_at)} (${fmtRelative(out.timeout_at)})`) : null,
        controls, err);
    });
  }

  function headersTable(headers) {
    if (!headers || isEmptyObj(headers)) return h('p', { class: 'muted small-text' }, 'none');
    return h('table', { class: 'kv' }, h('tbody', {},
      Object.entries(headers).map(([k, v]) => h('tr', {}, h('th', {}, k), h('td', { class: 'mono' }, Array.isArray(v) ? v.join(', ') : String(v))))));
  }

  /** `eventType`: set when the run posts several events (SPEC §11), to tell them apart. */
  function attemptItem(a, eventType) {
    const ok = a.status_code >= 200 && a.status_code < 300;
    return h('details', {
      class: `attempt ${ok ? 'ok' : 'bad'}`, testid: 'attempt',
      dataset: { key: `attempt:${a.attempt_id}`, attemptId: a.attempt_id, statusCode: a.status_code ?? '', errorKind: a.error_kind ?? '', outcome: a.outcome ?? '', series: a.series },
    },
    h('summary', {},
      h('span', { class: 'att-n' }, `#${a.attempt}`),
      h('span', { class: 'muted small-text' }, `series ${a.series}`),
      eventType ? h('span', { class: 'mono small-text', testid: 'attempt-event' }, eventType) : null,
      h('span', { class: 'nowrap' }, timeEl(a.started_at, true)),
      httpBadge(a),
      h('span', { class: 'num' }, fmtDuration(a.duration_ms)),
      h('span', { class: 'muted' }, a.outcome || ''),
      a.next_attempt_at ? h('span', { class: 'next-retry', testid: 'next-retry' },
        `retry at ${fmtTime(a.next_attempt_at, true)}${new Date(a.next_attempt_at).getTime() > Date.now() ? ` (${fmtRelative(a.next_attempt_at)})` : ''}`) : null),
    h('div', { class: 'attempt-body' },
      dl([
        ['URL', h('span', { class: 'mono break' }, a.url)],
        ['Attempt id', h('span', { class: 'mono' }, a.attempt_id)],
        a.error ? ['Error', h('span', { class: 'error' }, `${a.error_kind ? `${a.error_kind}: ` : ''}${a.error}`)] : null,
      ]),
      h('div', { class: 'two-col' },
        h('div', {}, h('div', { class: 'sub' }, 'Request headers'), headersTable(a.request_headers)),
        h('div', {}, h('div', { class: 'sub' }, 'Response headers'), headersTable(a.response_headers))),
      h('div', { class: 'sub' }, 'Response body'),
      a.response_body === null || a.response_body === undefined
        ? h('p', { class: 'muted small-text' }, 'none')
        : h('pre', { class: 'json', testid: 'response-body' }, a.response_body)));
  }

  function asyncSections(run, token, reload) {
    const a = run.async;
    if (!a) return [];
    const redeliver = h('button', { type: 'button', id: 'redeliver', testid: 'redeliver', disabled: !a.event_id }, 'Redeliver');
    redeliver.addEventListener('click', async () => {
      redeliver.disabled = true;
      try {
        await api('POST', `/v1/runs/${run.request_id}/redeliver`);
        toast('Redelivery queued: a new series of attempts starts now.');
        if (token === routeToken) await reload();
      } catch (e) {
        toast(e.message, 'error');
        redeliver.disabled = false;
      }
    });
    const attempts = a.attempts || [];
    const eventTypes = new Map((a.events || []).map((e) => [e.event_id, e.event_type]));
    const several = eventTypes.size > 1;
    return [
      section('Async Configuration', 'async-config',
        dl([
          ['Callback URL', h('span', { class: 'mono break' }, a.callback_url), 'async-callback-url'],
          ['Event id', a.event_id ? h('span', { class: 'mono' }, a.event_id) : h('span', { class: 'muted' }, 'created when the run ends'), 'async-event-id'],
          a.event_type ? ['Event type', h('span', { class: 'mono' }, a.event_type)] : null,
          a.events_chosen ? ['Events posted', h('span', { class: 'mono' }, a.events_chosen.join(', ')), 'async-events'] : null,
          ['Delivery state', deliveryBadge(a.delivery_state), 'async-delivery-state'],
          ['Attempts', String(a.attempt_count ?? attempts.length)],
          a.series ? ['Series', String(a.series)] : null,
          a.next_attempt_at ? ['Next attempt', `${fmtTime(a.next_attempt_at)} (${fmtRelative(a.next_attempt_at)})`, 'async-next-attempt'] : null,
          a.failure_reason ? ['Failure reason', h('span', { class: 'error' }, a.failure_reason)] : null,
        ])),
      h('section', { class: 'card', id: 'webhook-logs', testid: 'webhook-logs' },
        h('div', { class: 'section-head' }, h('h2', {}, 'Webhook Logs'), h('span', { class: 'spacer' }), redeliver),
        attempts.length
          ? h('div', { class: 'attempts', id: 'attempts' }, attempts.map((att, i) => [
            i > 0 && att.series !== attempts[i - 1].series
              ? h('div', { class: 'series-break', testid: 'series-break' }, `Redelivery · series ${att.series}`) : null,
            attemptItem(att, several ? eventTypes.get(att.event_id) : null),
          ]))
          : h('p', { class: 'muted', id: 'no-attempts' }, a.event_id ? 'No attempt yet; the first one is on its way.' : 'Delivery starts when the run ends.')),
    ];
  }

  /** A run's error: its message first, then the code and step, then the raw JSON. */
  function errorBlock(error) {
    if (!error || typeof error !== 'object' || !error.message) return jsonBlock(error);
    const facts = [error.error_code, error.step ? `step ${error.step}` : null].filter(Boolean).join(' · ');
    return [
      h('p', { class: 'error error-message', testid: 'error-message' }, error.message),
      facts ? h('p', { class: 'muted small-text' }, facts) : null,
      h('details', { class: 'raw', dataset: { key: 'raw-error' } }, h('summary', {}, 'Raw error'), jsonBlock(error)),
    ];
  }

  /** How long a run took, or for a live one how long it has been going. */
  function runDuration(run) {
    if (run.duration_ms !== null && run.duration_ms !== undefined) return fmtDuration(run.duration_ms);
    const since = run.started_at || run.created_at;
    if (LIVE_RUN.has(run.run_status) && since) {
      return h('span', { class: 'muted', title: 'still going' }, `${fmtDuration(Math.max(0, Date.now() - new Date(since).getTime()))}…`);
    }
    return '—';
  }

  function runBody(run, token, reload) {
    const cancel = LIVE_RUN.has(run.run_status)
      ? h('button', { type: 'button', id: 'cancel-run', class: 'danger' }, 'Cancel run') : null;
    if (cancel) {
      cancel.addEventListener('click', async () => {
        if (!window.confirm(`Cancel ${run.request_id}?`)) return;
        cancel.disabled = true;
        try {
          await api('POST', `/v1/runs/${run.request_id}/cancel`);
          toast('Run cancelled.');
          if (token === routeToken) await reload();
        } catch (e) {
          toast(e.message, 'error');
          cancel.disabled = false;
        }
      });
    }
    const rerun = LIVE_RUN.has(run.run_status) ? null : rerunControl(run);
    const result = run.run_status === 'failed' || (run.error !== null && run.error !== undefined)
      ? section('Error', 'run-error', errorBlock(run.error))
      : section('Output', 'run-output', run.output === null || run.output === undefined
        ? h('p', { class: 'muted' }, LIVE_RUN.has(run.run_status) ? 'Not finished yet.' : 'No output.')
        : jsonBlock(run.output, 'output-json'));
    return [
      h('p', { class: 'crumbs' }, h('a', { href: '#/runs', id: 'back-to-runs' }, '← Runs')),
      h('div', { class: 'page-head' },
        h('h1', { class: 'mono', id: 'run-id' }, run.request_id),
        Object.assign(statusBadge(run.run_status), { id: 'run-status' }),
        run.async ? asyncBadge() : null,
        h('span', { class: 'spacer' }),
        copyButton(() => run.request_id, 'Copy id'),
        rerun,
        cancel),
      section('Summary', 'run-summary', dl([
        ['Deployment', h('a', { href: `#/deployments/${encodeURIComponent(run.deployment)}` }, run.deployment)],
        ['Variant', run.variant],
        ['Version', `v${run.version}`],
        ['Source', run.source],
        run.parent_request_id ? ['Parent run', h('a', { href: `#/runs/${run.parent_request_id}`, class: 'mono' }, run.parent_request_id)] : null,
        ['Delivery', run.delivery],
        ['User', run.user || h('span', { class: 'muted' }, '—')],
        ['Priority', String(run.priority ?? 5), 'run-priority'],
        run.concurrency_key ? ['Concurrency key', h('span', { class: 'mono' }, run.concurrency_key), 'run-concurrency-key'] : null,
        ['Created', timeEl(run.created_at, true)],
        ['Started', timeEl(run.started_at, true)],
        ['Ended', timeEl(run.ended_at, true)],
        ['Duration', runDuration(run), 'run-duration'],
        run.rerun_of ? ['Rerun of', h('a', { href: `#/runs/${run.rerun_of}`, class: 'mono' }, run.rerun_of), 'run-rerun-of'] : null,
        ['Usage', usageText(run.usage), 'run-usage'],
      ])),
      approvalBox(run, token, reload),
      liveSection(run),
      result,
      h('div', { class: 'two-col' },
        section('Inputs', 'run-inputs', jsonBlock(run.inputs)),
        section('Metadata', 'run-metadata', isEmptyObj(run.metadata) ? h('p', { class: 'muted' }, 'none') : jsonBlock(run.metadata))),
      section('Steps', 'run-steps', waterfall(run)),
      asyncSections(run, token, reload),
    ];
  }

  /** `31 + 18 = 49 tokens · $0.000042`, or a dash when no prompt step ran. */
  function usageText(usage) {
    if (!usage) return h('span', { class: 'muted' }, '—');
    const cost = usage.cost_usd === undefined ? '' : ` · $${usage.cost_usd}`;
    return `${usage.prompt_tokens} + ${usage.completion_tokens} = ${usage.total_tokens} tokens${cost}`;
  }

  /**
   * Rerun an ended run as a new one: from the start, or from a top-level step (the steps
   * before it are taken over). Opens the new run.
   */
  function rerunControl(run) {
    const tops = [];
    for (const s of run.steps || []) {
      if (!s.parent && !tops.includes(s.id)) tops.push(s.id);
    }
    const picker = h('select', { id: 'rerun-from', 'aria-label': 'Rerun from', dataset: { preserve: 'rerun-from' } },
      h('option', { value: '' }, 'from the start'),
      tops.map((id) => h('option', { value: id }, `from ${id}`)));
    const button = h('button', { type: 'button', id: 'rerun-run' }, 'Rerun');
    button.addEventListener('click', async () => {
      button.disabled = true;
      const body = picker.value ? { from_step: picker.value } : {};
      try {
        const started = await api('POST', `/v1/runs/${run.request_id}/rerun`, body);
        toast(`Rerun started: ${started.request_id}`);
        location.hash = `#/runs/${started.request_id}`;
      } catch (e) {
        toast(e.message, 'error');
        button.disabled = false;
      }
    });
    return h('span', { class: 'rerun', testid: 'rerun' }, picker, button);
  }

  /** Keeps open <details>, typed answers and the scroll position across a refresh. */
  function preservingState(fn) {
    const open = new Set([...document.querySelectorAll('#main details[open]')].map((d) => d.dataset.key));
    const values = Object.fromEntries([...document.querySelectorAll('#main [data-preserve]')].map((el) => [el.dataset.preserve, el.value]));
    const active = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.preserve : null;
    const y = window.scrollY;
    fn();
    for (const d of document.querySelectorAll('#main details')) if (open.has(d.dataset.key)) d.open = true;
    for (const el of document.querySelectorAll('#main [data-preserve]')) {
      if (values[el.dataset.preserve] !== undefined) el.value = values[el.dataset.preserve];
      if (active && el.dataset.preserve === active) el.focus();
    }
    window.scrollTo(0, y);
  }

  async function runView(token, id) {
    if (liveText.run !== id) Object.assign(liveText, { run: id, step: null, text: '', open: false, running: [] });
    // While the run's stream works, it drives the page: steps and status are reloaded when
    // they change, deltas are appended as they come. Polling is the fallback.
    let streaming = false;
    let streamFailed = false;
    let reloadTimer = null;
    const reloadSoon = () => {
      clearTimeout(reloadTimer);
      reloadTimer = setTimeout(() => {
        if (token === routeToken) reload().catch(() => schedule(token, 5000, tick));
      }, 150);
    };
    const onEvent = (name, data) => {
      if (token !== routeToken) { stopLive(); return; }
      if (name === 'output.delta' && data) {
        if (liveText.step !== data.step) Object.assign(liveText, { step: data.step, text: '' });
        liveText.text += data.text || '';
        const pre = document.getElementById('live-text');
        const label = document.getElementById('live-step');
        if (pre) pre.textContent = liveText.text;
        if (label) label.textContent = `Streaming from step ${liveText.step}`;
        return;
      }
      // Steps started but not finished are not in the stored trace yet: shown from here.
      if (name === 'step.started' && data) {
        liveText.running.push({ id: data.step, type: data.type, started_at: data.started_at });
      } else if (name === 'step.completed' && data) {
        const at = liveText.running.map((r) => r.id).lastIndexOf(data.step);
        if (at >= 0) liveText.running.splice(at, 1);
      } else if (name === 'approval.requested' || /^run\./.test(name)) {
        liveText.running = [];
      }
      // The replay at the start of the stream repeats what the page shows: re-rendering for
      // it would only replace the elements under the user's cursor.
      if (changesPage(name, data)) reloadSoon();
    };
    let shown = null;
    let shownRunning = new Set();
    const changesPage = (name, data) => {
      if (!shown || !data) return true;
      const steps = shown.steps || [];
      switch (name) {
        case 'run.status': return data.run_status !== shown.run_status;
        case 'step.started': return !shownRunning.has(data.step);
        case 'step.completed':
          return !steps.some((st) => st.id === data.step && (st.passes || '') === (data.passes || '') && st.status === data.status);
        case 'approval.requested': return !steps.some((st) => st.id === data.step && st.status === 'waiting');
        default: return true;
      }
    };
    const startStream = () => {
      streaming = true;
      const onOpen = () => {
        liveText.open = true;
        const panel = document.getElementById('run-live');
        if (panel) panel.dataset.stream = 'open';
      };
      readLive(id, onEvent, onOpen).then((ended) => {
        streaming = false;
        liveText.open = false;
        if (token !== routeToken) return;
        if (!ended) streamFailed = true;
        reloadSoon();
      });
    };
    const reload = async () => {
      const run = await api('GET', `/v1/runs/${encodeURIComponent(id)}`);
      if (token !== routeToken) return;
      preservingState(() => render(runBody(run, token, reload)));
      shown = run;
      shownRunning = new Set(liveText.running.map((r) => r.id));
      const runLive = LIVE_RUN.has(run.run_status);
      const live = runLive || (run.async && LIVE_DELIVERY.has(run.async.delivery_state));
      if (runLive && !streamFailed) {
        clearTimeout(pollTimer);
        if (!streaming) startStream();
        return;
      }
      // A run paused at an approval can wait for hours: look less often.
      const waiting = (run.steps || []).some((st) => st.status === 'waiting');
      if (live) schedule(token, waiting ? 3000 : 1500, tick);
      else stopTimers();
    };
    // Polling never replaces the page under someone typing an answer.
    const tick = () => {
      const el = document.activeElement;
      if (el && el.closest('#main') && /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName)) {
        schedule(token, 1500, tick);
        return;
      }
      reload().catch(() => schedule(token, 5000, tick));
    };
    await reload();
  }

  // ---------------------------------------------------------------------------------------
  // Deployments
  // ---------------------------------------------------------------------------------------

  const MASK = 'whsec_••••••••••••••••••••••••';

  function secretField(dep) {
    let shown = false;
    const code = h('code', { class: 'secret', testid: 'signing-secret', id: `secret-${dep.key}` }, MASK);
    const reveal = h('button', { type: 'button', class: 'small', testid: 'reveal-secret' }, 'Reveal');
    reveal.addEventListener('click', () => {
      shown = !shown;
      code.textContent = shown ? dep.signing_secret : MASK;
      reveal.textContent = shown ? 'Hide' : 'Reveal';
    });
    const rotate = h('button', { type: 'button', class: 'small danger', testid: 'rotate-secret' }, 'Rotate');
    const note = h('p', { class: 'muted small-text', hidden: true });
    rotate.addEventListener('click', async () => {
      if (!window.confirm(`Rotate the signing secret of ${dep.key}? The old secret keeps working for a grace period.`)) return;
      rotate.disabled = true;
      try {
        const r = await api('POST', `/v1/deployments/${encodeURIComponent(dep.key)}/rotate-secret`);
        dep.signing_secret = r.signing_secret;
        shown = true;
        code.textContent = r.signing_secret;
        reveal.textContent = 'Hide';
        note.hidden = false;
        note.textContent = r.previous_secret_valid_until
          ? `Rotated. The previous secret stays valid until ${fmtTime(r.previous_secret_valid_until)}.`
          : 'Rotated.';
        toast('Signing secret rotated.');
      } catch (e) {
        toast(e.message, 'error');
      } finally {
        rotate.disabled = false;
      }
    });
    if (!dep.signing_secret) return h('span', { class: 'muted' }, 'visible to admin keys only');
    return h('div', { class: 'secret-field' },
      h('div', { class: 'secret-row' }, code, reveal,
        copyButton(() => dep.signing_secret, 'Copy', { testid: 'copy-secret' }), rotate),
      note);
  }

  function versionsList(versions, current) {
    return h('ul', { class: 'versions', testid: 'versions' },
      [...versions].sort((a, b) => b.version - a.version).map((v) =>
        h('li', {}, h('strong', {}, `v${v.version}`), v.version === current ? badge('live', 'st-completed') : null,
          h('span', { class: 'muted' }, ` ${fmtTime(v.created_at)}`))));
  }

  function deploymentCard(dep, detail) {
    const versionsBox = h('details', { class: 'versions-box', dataset: { key: `versions:${dep.key}` } }, h('summary', {}, 'Versions'));
    if (detail) {
      versionsBox.open = true;
      versionsBox.append(versionsList(detail.versions || [], dep.version));
    } else {
      versionsBox.addEventListener('toggle', async () => {
        if (!versionsBox.open || versionsBox.dataset.loaded) return;
        versionsBox.dataset.loaded = '1';
        try {
          const d = await api('GET', `/v1/deployments/${encodeURIComponent(dep.key)}`);
          versionsBox.append(versionsList(d.versions || [], dep.version));
        } catch (e) {
          versionsBox.append(h('p', { class: 'error' }, e.message));
        }
      });
    }
    const snippet = h('button', { type: 'button', class: 'primary', testid: 'open-snippet', id: `snippet-${dep.key}` }, 'Code snippet');
    snippet.addEventListener('click', () => openSnippet(dep));
    return h('section', { class: 'card deployment', testid: 'deployment', dataset: { deployment: dep.key } },
      h('div', { class: 'section-head' },
        h('h2', {}, h('a', { href: `#/deployments/${encodeURIComponent(dep.key)}` }, dep.key)),
        badge(`v${dep.version}`, 'version'),
        dep.async_only ? badge('async only', 'async') : null,
        h('span', { class: 'spacer' }),
        h('a', { class: 'small-link', href: `#/runs?deployment=${encodeURIComponent(dep.key)}` }, 'Runs'),
        snippet),
      dep.description ? h('p', { class: 'muted' }, dep.description) : null,
      dl([
        ['Variants', h('div', { class: 'chips' }, (dep.variants || []).map((v) =>
          h('span', { class: 'chip', title: JSON.stringify(v.vars || {}), testid: 'variant' }, v.name,
            isEmptyObj(v.vars) ? null : h('span', { class: 'muted' }, ` ${JSON.stringify(v.vars)}`))))],
        ['Inputs', (dep.inputs || []).length
          ? h('div', { class: 'chips' }, dep.inputs.map((i) => h('span', { class: 'chip mono' }, `${i.name}: ${i.type}${i.required ? '' : '?'}`)))
          : h('span', { class: 'muted' }, 'none')],
        ['Steps', h('div', { class: 'chips' }, (dep.steps || []).map((s, n) => [n ? h('span', { class: 'muted' }, '→') : null,
          h('span', { class: 'chip' }, s.id, h('span', { class: 'muted' }, ` ${s.type}`))]))],
        ['Signing secret', secretField(dep)],
      ]),
      versionsBox);
  }

  async function deploymentsView(token, key) {
    if (key) {
      const dep = await api('GET', `/v1/deployments/${encodeURIComponent(key)}`);
      if (token !== routeToken) return;
      render(
        h('p', { class: 'crumbs' }, h('a', { href: '#/deployments' }, '← Deployments')),
        deploymentCard(dep, dep),
        dep.definition ? section('Definition', 'definition', jsonBlock(dep.definition)) : null);
      return;
    }
    const data = await api('GET', '/v1/deployments');
    if (token !== routeToken) return;
    deploymentKeys = data.deployments.map((d) => d.key).sort();
    render(
      h('div', { class: 'page-head' }, h('h1', {}, 'Deployments')),
      data.deployments.length
        ? data.deployments.map((d) => deploymentCard(d))
        : h('p', { class: 'card muted' }, 'No deployments yet. Deploy one with `hivelet deploy FILE.toml` or PUT /v1/deployments/{key}.'));
  }

  // The code snippet dialog.
  let snippetDep = null;
  let snippetSeq = 0;
  let snippetTimer = null;
  let snippetData = null;

  function openSnippet(dep) {
    snippetDep = dep;
    snippetData = null;
    $('#snippet-title').textContent = `Code snippet — ${dep.key}`;
    const sel = $('#snippet-variant');
    sel.replaceChildren(...(dep.variants || [{ name: 'default' }]).map((v) =>
      h('option', { value: v.name, selected: v.name === 'default' }, v.name)));
    $('#snippet-async').checked = !!dep.async_only;
    $('#snippet-callback').value = '';
    const dialog = $('#snippet-dialog');
    if (!dialog.open) dialog.showModal();
    updateSnippet();
  }

  function closeSnippet() {
    const dialog = $('#snippet-dialog');
    if (dialog.open) dialog.close();
  }

  async function updateSnippet() {
    if (!snippetDep) return;
    const asyncOn = $('#snippet-async').checked;
    $('#snippet-callback-row').hidden = !asyncOn;
    const q = new URLSearchParams({ variant: $('#snippet-variant').value || 'default', base_url: location.origin });
    if (asyncOn) {
      q.set('async', 'true');
      const cb = $('#snippet-callback').value.trim();
      if (cb) q.set('callback_url', cb);
    }
    const seq = ++snippetSeq;
    const err = $('#snippet-error');
    try {
      const data = await api('GET', `/v1/deployments/${encodeURIComponent(snippetDep.key)}/snippet?${q}`);
      if (seq !== snippetSeq) return;
      snippetData = data;
      err.hidden = true;
      $('#snippet-curl').textContent = data.curl;
      $('#snippet-curl').dataset.async = String(!!data.async);
      const box = $('#snippet-secret-box');
      box.hidden = !(data.async && data.signing_secret);
      $('#snippet-secret').textContent = data.async ? (data.signing_secret || '') : '';
    } catch (e) {
      if (seq !== snippetSeq) return;
      err.hidden = false;
      err.textContent = e.message;
    }
  }

  function initSnippetDialog() {
    $('#snippet-form').addEventListener('submit', (ev) => ev.preventDefault());
    $('#snippet-close').addEventListener('click', closeSnippet);
    $('#snippet-variant').addEventListener('change', updateSnippet);
    $('#snippet-async').addEventListener('change', updateSnippet);
    $('#snippet-callback').addEventListener('input', () => {
      clearTimeout(snippetTimer);
      snippetTimer = setTimeout(updateSnippet, 250);
    });
    $('#snippet-copy').addEventListener('click', (ev) => {
      if (snippetData) copyText(snippetData.curl, ev.currentTarget);
    });
    $('#snippet-secret-copy').addEventListener('click', (ev) => {
      if (snippetData && snippetData.signing_secret) copyText(snippetData.signing_secret, ev.currentTarget);
    });
    // A click on the backdrop closes the dialog.
    $('#snippet-dialog').addEventListener('click', (ev) => {
      if (ev.target === ev.currentTarget) closeSnippet();
    });
  }

  // ---------------------------------------------------------------------------------------
  // API keys
  // ---------------------------------------------------------------------------------------

  function newKeyBanner(title, key) {
    return h('div', { class: 'card new-key', id: 'new-key', testid: 'new-key' },
      h('strong', {}, title),
      h('p', { class: 'muted small-text' }, 'Shown once: store it now. Only its prefix is kept.'),
      h('div', { class: 'secret-row' }, h('code', { class: 'secret', id: 'new-key-value', testid: 'new-key-value' }, key),
        copyButton(() => key, 'Copy', { id: 'new-key-copy' })));
  }

  /** Whether a listed key is the one this page signed in with (by its visible prefix). */
  function isMine(k) {
    const prefix = (k.masked_key || '').replace(/…$/, '');
    return !!prefix && (getKey() || '').startsWith(prefix);
  }

  async function keysView(token, banner) {
    const data = await api('GET', '/v1/keys');
    if (token !== routeToken) return;
    const reload = (b) => keysView(token, b).catch((e) => toast(e.message, 'error'));

    const name = h('input', { id: 'key-name', type: 'text', placeholder: 'e.g. billing-service', required: true, maxlength: '200' });
    const role = h('select', { id: 'key-role' }, h('option', { value: 'invoke' }, 'invoke'), h('option', { value: 'admin' }, 'admin'));
    const form = h('form', { id: 'key-create-form', class: 'card inline-form', autocomplete: 'off' },
      h('label', { class: 'field' }, h('span', {}, 'Name'), name),
      h('label', { class: 'field' }, h('span', {}, 'Role'), role),
      h('button', { type: 'submit', id: 'key-create', class: 'primary' }, 'Create key'),
      h('p', { class: 'muted small-text grow' }, 'invoke: invoke deployments and read the runs it started. admin: everything.'));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      try {
        const r = await api('POST', '/v1/keys', { name: name.value.trim(), role: role.value });
        reload(newKeyBanner(`New ${r.role} key “${r.name}”`, r.key));
      } catch (e) {
        toast(e.message, 'error');
      }
    });

    const rows = data.keys.map((k) => {
      const rotate = h('button', { type: 'button', class: 'small', disabled: k.revoked, testid: 'rotate-key' }, 'Rotate');
      const revoke = h('button', { type: 'button', class: 'small danger', disabled: k.revoked, testid: 'revoke-key' }, 'Revoke');
      rotate.addEventListener('click', async () => {
        if (!window.confirm(`Rotate key “${k.name}”? The current key stops working at once.`)) return;
        try {
          const r = await api('POST', `/v1/keys/${encodeURIComponent(k.id)}/rotate`);
          // Rotating the key this page uses: keep working with the new one.
          if (isMine(k)) sessionStorage.setItem(KEY_STORE, r.key);
          reload(newKeyBanner(`Rotated key “${k.name}”`, r.key));
        } catch (e) {
          toast(e.message, 'error');
        }
      });
      revoke.addEventListener('click', async () => {
        const warning = isMine(k) ? ' This page uses this key: you will be signed out.' : '';
        if (!window.confirm(`Revoke key “${k.name}”? Apps using it get 401 from now on.${warning}`)) return;
        try {
          await api('DELETE', `/v1/keys/${encodeURIComponent(k.id)}`);
          toast('Key revoked.');
          reload(banner);
        } catch (e) {
          toast(e.message, 'error');
        }
      });
      return h('tr', { testid: 'key-row', dataset: { keyId: k.id }, class: k.revoked ? 'revoked' : '' },
        h('td', {}, h('strong', {}, k.name)),
        h('td', {}, badge(k.role, k.role === 'admin' ? 'role-admin' : 'role-invoke')),
        h('td', { class: 'mono' }, k.masked_key),
        h('td', { class: 'nowrap' }, timeEl(k.created_at)),
        h('td', { class: 'nowrap' }, k.last_used_at ? [timeEl(k.last_used_at), h('span', { class: 'muted small-text' }, ` (${fmtRelative(k.last_used_at)})`)] : h('span', { class: 'muted' }, 'never')),
        h('td', {}, k.revoked ? badge('revoked', 'st-failed') : badge('active', 'st-completed')),
        h('td', { class: 'actions' }, rotate, revoke));
    });

    render(
      h('div', { class: 'page-head' }, h('h1', {}, 'API keys')),
      banner || null,
      form,
      h('div', { class: 'card table-card' },
        h('table', { class: 'table', id: 'keys-table' },
          h('thead', {}, h('tr', {}, ['Name', 'Role', 'Key', 'Created', 'Last used', 'Status', ''].map((t) => h('th', {}, t)))),
          h('tbody', {}, rows))));
  }

  // ---------------------------------------------------------------------------------------
  // Schedules
  // ---------------------------------------------------------------------------------------

  async function schedulesView(token) {
    const data = await api('GET', '/v1/schedules');
    if (token !== routeToken) return;
    const reload = () => schedulesView(token).catch((e) => toast(e.message, 'error'));
    const rows = data.schedules.map((s) => {
      const toggle = h('button', { type: 'button', class: 'small', testid: s.active ? 'pause-schedule' : 'resume-schedule' },
        s.active ? 'Pause' : 'Resume');
      const runNow = h('button', { type: 'button', class: 'small primary', testid: 'trigger-schedule' }, 'Run now');
      toggle.addEventListener('click', async () => {
        try {
          await api('PATCH', `/v1/schedules/${encodeURIComponent(s.id)}`, { active: !s.active });
          toast(s.active ? 'Schedule paused.' : 'Schedule resumed.');
          reload();
        } catch (e) {
          toast(e.message, 'error');
        }
      });
      runNow.addEventListener('click', async () => {
        try {
          const r = await api('POST', `/v1/schedules/${encodeURIComponent(s.id)}/trigger`);
          toast(`Started ${r.request_id}.`);
          reload();
        } catch (e) {
          toast(e.message, 'error');
        }
      });
      const when = s.cron ? h('span', { class: 'mono' }, s.cron) : h('span', {}, `every ${s.every}`);
      return h('tr', { testid: 'schedule-row', dataset: { scheduleId: s.id } },
        h('td', { title: s.id, class: 'nowrap' }, s.name ? h('strong', {}, s.name) : h('span', { class: 'mono' }, shortId(s.id))),
        h('td', {}, h('a', { href: `#/deployments/${encodeURIComponent(s.deployment)}` }, s.deployment),
          s.variant !== 'default' ? h('span', { class: 'muted' }, ` / ${s.variant}`) : null),
        h('td', { class: 'nowrap' }, when, h('div', { class: 'muted small-text' }, `${s.timezone} · catch up ${s.catch_up}`)),
        h('td', { class: 'nowrap', testid: 'schedule-next' }, s.next_run_at
          ? [timeEl(s.next_run_at), h('span', { class: 'muted small-text' }, ` (${fmtRelative(s.next_run_at)})`)]
          : h('span', { class: 'muted' }, '—')),
        h('td', { class: 'nowrap', testid: 'schedule-last' }, s.last_run
          ? [h('a', { href: `#/runs/${encodeURIComponent(s.last_run.request_id)}`, class: 'mono' }, shortId(s.last_run.request_id)),
            h('span', { class: 'muted small-text' }, ` ${fmtRelative(s.last_run.at)}`),
            ' · ', h('a', { href: `#/runs?schedule=${encodeURIComponent(s.id)}` }, 'all runs')]
          : h('span', { class: 'muted' }, 'never')),
        h('td', { testid: 'schedule-state' }, s.active ? badge('active', 'st-completed') : badge('paused', 'st-queued')),
        h('td', { class: 'actions' }, toggle, runNow));
    });
    render(
      h('div', { class: 'page-head' }, h('h1', {}, 'Schedules')),
      rows.length === 0
        ? h('div', { class: 'card' }, h('p', { class: 'muted' },
          'No schedules yet. Create one with POST /v1/schedules, `hivelet schedules add`, or [[schedules]] in a workflow file.'))
        : h('div', { class: 'card table-card' },
          h('table', { class: 'table', id: 'schedules-table' },
            h('thead', {}, h('tr', {}, ['Schedule', 'Deployment', 'When', 'Next run', 'Last run', 'State', ''].map((t) => h('th', {}, t)))),
            h('tbody', {}, rows))));
  }

  // ---------------------------------------------------------------------------------------
  // Start
  // ---------------------------------------------------------------------------------------

  function onJump(ev) {
    ev.preventDefault();
    const input = $('#jump-input');
    const m = input.value.match(/req_[0-9a-f]{32}/);
    if (!m) {
      toast('Paste a full request id: req_ followed by 32 hex characters.', 'error');
      return;
    }
    input.value = '';
    location.hash = `#/runs/${m[0]}`;
  }

  function start() {
    $('#login-form').addEventListener('submit', onLogin);
    $('#jump-form').addEventListener('submit', onJump);
    $('#sign-out').addEventListener('click', () => signOut());
    initSnippetDialog();
    window.addEventListener('hashchange', () => {
      closeSnippet();
      $('#toast').hidden = true;
      route();
    });
    route();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
