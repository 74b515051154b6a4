// userpipe status page. Draws everything from this server's JSON endpoints, every REFRESH_MS:
//   /api/readiness  Kafka, PostgreSQL and the roles, as /readyz reports them
//   /api/timeline   the schedule files and one mark per job run of the last 24 hours or 7 days
//   /api/pipeline   per stage: messages per second and consumer lag over the last hour; dead letters
//   /api/postgres   base backups, the last restore drill, the WAL archiver, the archiving settings
// and, when a run is opened, /api/jobs/{run_id} (its attempts) and /api/jobs/{run_id}/logs (its log).
// No library: the timeline and the charts are SVG made here. Status is never told by colour alone: every
// coloured mark has a symbol or a word beside it (the legend, the row summaries, the tooltip).
'use strict';

const REFRESH_MS = 5000;

// Statuses of a job run: symbol, words, and how much it matters (drawn on top, listed as a problem).
const STATUS = {
  succeeded: { sym: '✓', label: 'succeeded', rank: 0 },
  skipped: { sym: '↷', label: 'skipped', rank: 1 },
  running: { sym: '▶', label: 'running', rank: 2 },
  abandoned: { sym: '⚠', label: 'abandoned', rank: 3 },
  timed_out: { sym: '◷', label: 'timed out', rank: 4 },
  failed: { sym: '✗', label: 'failed', rank: 5 },
};
const PROBLEMS = new Set(['failed', 'timed_out', 'abandoned']);

const page = {
  range: new URLSearchParams(window.location.search).get('range') === '7d' ? '7d' : '24h',
  paused: false,
  timeline: null, // the last /api/timeline answer
  rows: [], // per schedule: { schedule, runs }
  runs: new Map(), // run_id -> mark
  refreshes: 0,
  ranNow: new Map(), // schedule -> { text, until }: what "Run now" answered, kept across redraws for a while
  drawn: new Set(), // sections drawn at least once
  rendered: false,
  timer: null,
};

const $ = (id) => document.getElementById(id);

function esc(text) {
  return String(text ?? '').replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  })[c]);
}

function statusOf(name) {
  return STATUS[name] || { sym: '?', label: name, rank: 1 };
}

function badge(status) {
  const s = statusOf(status);
  return `<span class="sym st-${esc(status)}" aria-hidden="true">${s.sym}</span>${esc(s.label)}`;
}

// ---- formatting --------------------------------------------------------------------------------------

const timeFormat = new Intl.DateTimeFormat(undefined, {
  weekday: 'short', hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false,
});
const dateFormat = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: '2-digit', hour: '2-digit', minute: '2-digit', hour12: false,
});

const clockFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', hour12: false });
const dayFormat = new Intl.DateTimeFormat(undefined, {
  weekday: 'short', day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit', hour12: false,
});

function fmtTime(ms) { return ms == null || Number.isNaN(ms) ? '—' : timeFormat.format(new Date(ms)); }
// A fire time: the time of day when it is within a day, else the day too.
function fmtWhen(ms) {
  if (ms == null || Number.isNaN(ms)) return '—';
  return Math.abs(ms - Date.now()) < 86400000 ? timeFormat.format(new Date(ms)) : dayFormat.format(new Date(ms));
}
function fmtDate(ms) { return ms == null || Number.isNaN(ms) ? '—' : dateFormat.format(new Date(ms)); }

function fmtDuration(ms) {
  if (ms == null) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${m % 60} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

function fmtAgo(ms, now = Date.now()) {
  const d = now - ms;
  const word = (v) => (d >= 0 ? `${v} ago` : `in ${v}`);
  const a = Math.abs(d);
  if (a < 5000) return d >= 0 ? 'just now' : 'now';
  if (a < 90000) return word(`${Math.round(a / 1000)} s`);
  if (a < 5400000) return word(`${Math.round(a / 60000)} min`);
  if (a < 172800000) return word(`${Math.round(a / 3600000)} h`);
  return word(`${Math.round(a / 86400000)} d`);
}

function fmtBytes(n) {
  if (n == null) return '—';
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let i = 0;
  let v = n;
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i += 1; }
  return `${v.toFixed(v < 10 && i > 0 ? 1 : 0)} ${units[i]}`;
}

function fmtNum(n, digits = 0) {
  if (n == null) return '—';
  return Number(n).toLocaleString('en', { maximumFractionDigits: digits });
}

// ---- fetching ----------------------------------------------------------------------------------------

// The first drawing takes the answers the page preloaded (index.html); later ones always ask again.
async function getJson(url) {
  const response = await fetch(url, page.refreshes === 0 ? {} : { cache: 'no-store' });
  if (!response.ok) {
    const text = await response.text();
    const error = new Error(`${url} answered ${response.status}: ${text.trim()}`);
    error.status = response.status;
    throw error;
  }
  return response.json();
}

// Fetches one section and draws it; a section that fails shows its error and leaves the others alone.
async function section(name, url, draw) {
  try {
    const data = await getJson(url);
    const start = performance.now();
    draw(data);
    // How long each section takes to draw, for anyone profiling the page (Performance panel, tests).
    performance.measure(`draw ${name}`, { start, end: performance.now() });
    return true;
  } catch (error) {
    if (error instanceof TypeError) throw error; // the server is unreachable: said once, in the banner
    drawError(name, error.message);
    return true;
  } finally {
    page.drawn.add(name);
  }
}

function drawError(name, message) {
  const where = { readiness: 'checks', timeline: 'timeline', pipeline: 'stages', postgres: 'backups' }[name];
  $(where).innerHTML = `<p class="bad"><span class="sym">✗</span>cannot read ${esc(name)}: ${esc(message)}</p>`;
}

async function refresh() {
  try {
    await Promise.all([
      section('readiness', '/api/readiness', drawReadiness),
      section('timeline', `/api/timeline?range=${page.range}`, drawTimeline),
      section('pipeline', '/api/pipeline', drawPipeline),
      section('postgres', '/api/postgres', drawPostgres),
    ]);
    $('offline').hidden = true;
  } catch (error) {
    $('offline').hidden = false;
    $('offline').textContent = `✗ cannot reach userpipe (${error.message}); showing what it last said`;
  }
  page.refreshes += 1;
  document.documentElement.dataset.refreshes = String(page.refreshes);
  if (page.drawn.size === 4 && !page.rendered) {
    // Rendered: once the frame with every section drawn has been laid out and painted.
    page.rendered = true;
    requestAnimationFrame(() => setTimeout(() => {
      performance.mark('rendered');
      document.documentElement.dataset.rendered = 'true';
    }, 0));
  }
  $('updated').textContent = `updated ${fmtTime(Date.now())} · every ${REFRESH_MS / 1000} s`;
  schedule();
}

function schedule() {
  clearTimeout(page.timer);
  if (!page.paused) page.timer = setTimeout(refresh, REFRESH_MS);
}

// ---- readiness ---------------------------------------------------------------------------------------

function drawReadiness(r) {
  const chip = (ok, name, text) => `<li class="${ok ? 'ok' : 'bad'}" title="${esc(text)}">`
    + `<span class="sym">${ok ? '✓' : '✗'}</span>${esc(name)}: ${esc(text)}</li>`;
  const items = [
    chip(r.kafka === 'ok', 'Kafka', r.kafka),
    chip(!String(r.postgresql).startsWith('unreachable'), 'PostgreSQL', r.postgresql),
  ];
  for (const [role, state] of Object.entries(r.roles || {})) {
    items.push(chip(state === 'running', `role ${role}`, state));
  }
  $('checks').innerHTML = items.join('');
  const verdict = $('verdict');
  verdict.className = `verdict ${r.ready ? 'ok' : 'bad'}`;
  verdict.textContent = r.ready ? '✓ ready: Kafka, PostgreSQL and every role answer'
    : '✗ not ready: see Readiness below';
}

// ---- jobs: the timeline ------------------------------------------------------------------------------

function drawTimeline(t) {
  page.timeline = t;
  const since = Date.parse(t.since);
  const now = Date.parse(t.now);
  const rows = new Map();
  for (const s of t.schedules) rows.set(s.name, { schedule: s, runs: [] });
  page.runs = new Map();
  // Each run comes as an array of values in the order of `run_fields`; made into an object here, once
  // (a redraw of the same answer, after a resize, finds objects already).
  const fields = t.run_fields;
  t.runs = t.runs.map((values) => {
    if (!Array.isArray(values)) return values;
    const run = {};
    fields.forEach((field, i) => { run[field] = values[i]; });
    return run;
  });
  for (const run of t.runs) {
    run.t = run.started_at_ms;
    page.runs.set(run.run_id, run);
    if (!rows.has(run.schedule)) {
      rows.set(run.schedule, { schedule: { name: run.schedule, removed: true, next: [] }, runs: [] });
    }
    rows.get(run.schedule).runs.push(run);
  }
  page.rows = [...rows.values()];

  const notes = [t.schedules_error, t.runs_error].filter(Boolean);
  $('jobs-note').hidden = notes.length === 0;
  $('jobs-note').textContent = notes.map((n) => `✗ ${n}`).join(' · ');
  $('token-field').hidden = !t.writable;

  const container = $('timeline');
  if (page.rows.length === 0) {
    container.innerHTML = '<p class="muted">no schedules and no runs in this range</p>';
  } else {
    container.innerHTML = page.rows.map((row, i) => rowHtml(row, i, t, now)).join('');
    const lane = container.querySelector('.lane');
    const width = Math.max(100, Math.round(lane.getBoundingClientRect().width));
    container.querySelectorAll('.lane svg').forEach((svg, i) => {
      svg.setAttribute('viewBox', `0 0 ${width} 40`);
      svg.innerHTML = marksSvg(page.rows[i].runs, since, now, width);
    });
  }
  drawAxis(since, now);
  drawProblems(t.runs);
}

function rowHtml(row, i, t, now) {
  const s = row.schedule;
  let state = '';
  if (s.error) state = '<span class="badge bad">✗ invalid file</span>';
  else if (s.removed) state = '<span class="badge muted">removed</span>';
  else if (!s.enabled) state = '<span class="badge muted">⊘ disabled</span>';
  const what = s.job ? `${esc(s.job)} · <span class="mono">${esc(s.cron)}</span> ${esc(s.timezone)}` : '';
  let next = '';
  if (s.error) next = `<div class="error">${esc(s.error)}</div>`;
  else if (s.enabled && s.next.length) {
    next = `<div class="sub">next ${s.next.map((n) => esc(fmtWhen(Date.parse(n)))).join(', ')}</div>`;
  } else if (!s.removed) next = '<div class="sub">no firing planned</div>';

  const counts = {};
  for (const run of row.runs) counts[run.status] = (counts[run.status] || 0) + 1;
  const countText = Object.keys(STATUS).filter((k) => counts[k])
    .map((k) => `<span class="st-${k}" title="${esc(STATUS[k].label)}">${STATUS[k].sym}</span> ${fmtNum(counts[k])}`)
    .join(' · ') || '<span class="muted">no runs in range</span>';
  const last = row.runs[row.runs.length - 1];
  const lastHtml = last
    ? `<button type="button" class="last" data-run="${esc(last.run_id)}">last: ${badge(last.status)}, ${esc(fmtAgo(last.t, now))}</button>`
    : '';
  const runNow = t.writable && !s.error && !s.removed
    ? `<button type="button" class="run-now" data-schedule="${esc(s.name)}">${esc(ranNowText(s.name))}</button>` : '';
  return `<div class="row${s.enabled === false ? ' disabled' : ''}" data-schedule="${esc(s.name)}" data-row="${i}" data-marks="${row.runs.length}">
    <div class="info"><div class="name">${esc(s.name)} ${state}</div><div class="sub">${what}</div>${next}</div>
    <div class="lane"><svg role="img" aria-label="runs of ${esc(s.name)}" preserveAspectRatio="none"></svg></div>
    <div class="summary"><div>${countText}</div>${lastHtml} ${runNow}</div>
  </div>`;
}

// Geometry per status: problems are tall, successes short, skips low; a symbol lane above for problems.
const SHAPE = {
  succeeded: [20, 18], skipped: [30, 8], running: [14, 24], abandoned: [14, 24], timed_out: [14, 24], failed: [14, 24],
};
// The many (successes, skips) are drawn as one path per status, a rectangle per run; each run that needs
// attention is an element of its own, on top, that can be pointed at. Every run is a mark of its own.
const MERGED = new Set(['succeeded', 'skipped']);

function marksSvg(runs, since, now, width) {
  const scale = width / (now - since);
  const parts = [];
  for (let k = 1; k < 4; k += 1) {
    const x = (width * k) / 4;
    parts.push(`<line class="grid-line" x1="${x}" x2="${x}" y1="12" y2="40"/>`);
  }
  const merged = { succeeded: [], skipped: [] };
  const singles = [];
  const glyphs = new Map(); // 10-pixel slot -> the most important run in it
  for (const run of runs) {
    // A run that started at "now" still gets a mark inside the lane, where the pointer can reach it.
    const x = Math.min(width - 2, Math.max(0, (run.t - since) * scale));
    const duration = run.duration_ms ?? (run.status === 'running' ? now - run.t : 0);
    const w = Math.max(2, Math.min(width - x, duration * scale));
    const [y, h] = SHAPE[run.status] || [20, 18];
    if (MERGED.has(run.status)) {
      merged[run.status].push(`M${x.toFixed(1)} ${y}h${w.toFixed(1)}v${h}h${(-w).toFixed(1)}z`);
      continue;
    }
    singles.push({ run, x, w, y, h });
    const slot = Math.round(x / 10);
    const there = glyphs.get(slot);
    if (!there || statusOf(there.run.status).rank < statusOf(run.status).rank) glyphs.set(slot, { run, x });
  }
  for (const [status, d] of Object.entries(merged)) {
    if (d.length) parts.push(`<path class="m st-${status}" d="${d.join('')}"/>`);
  }
  singles.sort((a, b) => statusOf(a.run.status).rank - statusOf(b.run.status).rank);
  for (const { run, x, w, y, h } of singles) {
    parts.push(`<rect class="m st-${run.status}" data-run="${run.run_id}" x="${x.toFixed(1)}" y="${y}" width="${w.toFixed(1)}" height="${h}"/>`);
  }
  for (const { run, x } of glyphs.values()) {
    parts.push(`<text class="g st-${run.status}" x="${Math.min(width - 5, Math.max(5, x + 1)).toFixed(1)}" y="11" text-anchor="middle">${statusOf(run.status).sym}</text>`);
  }
  return parts.join('');
}

function drawAxis(since, now) {
  const format = page.range === '7d' ? dayFormat : clockFormat;
  const ticks = [0, 1, 2, 3, 4].map((k) => format.format(new Date(since + ((now - since) * k) / 4)));
  ticks[4] = 'now';
  $('axis').innerHTML = `<span></span><span class="ticks">${ticks.map((x) => `<span>${esc(x)}</span>`).join('')}</span><span></span>`;
}

function drawProblems(runs) {
  const problems = runs.filter((r) => PROBLEMS.has(r.status)).slice(-8).reverse();
  $('problems').innerHTML = problems.length === 0
    ? `<li class="muted">none in the last ${page.range === '7d' ? '7 days' : '24 hours'}</li>`
    : problems.map((r) => `<li><button type="button" data-run="${esc(r.run_id)}">${badge(r.status)} · ${esc(r.schedule)} · ${esc(fmtTime(r.t))}${r.why ? ` · ${esc(r.why)}` : ''}</button></li>`).join('');
}

// The run under the pointer in a lane: the mark it is on, else the most important mark within 6 px.
function runAt(event) {
  const target = event.target.closest('[data-run]');
  if (target) return page.runs.get(target.dataset.run);
  const svg = event.target.closest('.lane svg');
  if (!svg || !page.timeline) return null;
  const row = page.rows[Number(svg.closest('.row').dataset.row)];
  const box = svg.getBoundingClientRect();
  const since = Date.parse(page.timeline.since);
  const now = Date.parse(page.timeline.now);
  const perPx = (now - since) / box.width;
  const at = since + (event.clientX - box.left) * perPx;
  let best = null;
  for (const run of row.runs) {
    const end = run.t + Math.max(run.duration_ms ?? 0, 2 * perPx);
    const distance = at < run.t ? run.t - at : Math.max(0, at - end);
    if (distance > 6 * perPx) continue;
    const better = !best || statusOf(run.status).rank > statusOf(best.run.status).rank
      || (statusOf(run.status).rank === statusOf(best.run.status).rank && distance < best.distance);
    if (better) best = { run, distance };
  }
  return best && best.run;
}

function tipText(run) {
  const lines = [
    `${statusOf(run.status).sym} ${statusOf(run.status).label} · ${run.schedule}`,
    `${fmtDate(run.t)} (${fmtAgo(run.t)})`,
    `duration ${run.duration_ms == null ? 'still running' : fmtDuration(run.duration_ms)} · ${run.attempts} attempt${run.attempts === 1 ? '' : 's'} · ${run.trigger}`,
  ];
  if (run.why) lines.push(`${run.status === 'skipped' ? 'reason' : 'error'}: ${run.why}`);
  lines.push('click for the run');
  return lines.join('\n');
}

function showTip(event) {
  const run = runAt(event);
  const tip = $('tip');
  if (!run) { tip.hidden = true; return; }
  tip.textContent = tipText(run);
  tip.hidden = false;
  const x = Math.min(event.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
  const y = event.clientY + 18 + tip.offsetHeight > window.innerHeight ? event.clientY - tip.offsetHeight - 10 : event.clientY + 18;
  tip.style.left = `${Math.max(4, x)}px`;
  tip.style.top = `${Math.max(4, y)}px`;
}

// ---- one run -----------------------------------------------------------------------------------------

async function openRun(runId) {
  const mark = page.runs.get(runId);
  $('run-title').textContent = mark ? `${mark.schedule}: run ${runId.slice(0, 8)}` : `run ${runId.slice(0, 8)}`;
  const body = $('run-body');
  body.innerHTML = mark ? markHtml(mark) : '';
  body.insertAdjacentHTML('beforeend', '<h3>Attempts</h3><div id="run-attempts" class="muted">loading…</div><h3>Log</h3><div id="run-log" class="muted">loading…</div>');
  const dialog = $('run');
  if (!dialog.open) dialog.showModal();
  try {
    const answer = await getJson(`/api/jobs/${encodeURIComponent(runId)}`);
    $('run-attempts').outerHTML = attemptsHtml(answer.attempts || []);
  } catch (error) {
    $('run-attempts').textContent = `cannot read the run: ${error.message}`;
  }
  try {
    const log = await getJson(`/api/jobs/${encodeURIComponent(runId)}/logs`);
    $('run-log').outerHTML = logHtml(log);
  } catch (error) {
    $('run-log').textContent = error.status === 404 ? 'no log kept for this run' : `cannot read the log: ${error.message}`;
  }
}

function markHtml(run) {
  return `<dl class="kv">
    <dt>status</dt><dd data-field="status">${badge(run.status)}</dd>
    <dt>started</dt><dd>${esc(fmtDate(run.t))} (${esc(fmtAgo(run.t))})</dd>
    <dt>duration</dt><dd>${run.duration_ms == null ? 'still running' : esc(fmtDuration(run.duration_ms))}</dd>
    <dt>trigger</dt><dd>${esc(run.trigger)}</dd>
    <dt>attempts</dt><dd>${run.attempts}</dd>
    ${run.why ? `<dt>${run.status === 'skipped' ? 'reason' : 'error'}</dt><dd><pre class="error" data-field="why">${esc(run.why)}</pre></dd>` : ''}
  </dl>`;
}

function attemptsHtml(attempts) {
  if (attempts.length === 0) return '<p class="muted">no attempts recorded</p>';
  return attempts.map((a) => {
    const started = Date.parse(a.started_at);
    const detail = a.detail && typeof a.detail === 'object'
      ? `<dl class="kv">${Object.entries(a.detail).map(([k, v]) => `<dt>${esc(k)}</dt><dd class="mono">${esc(typeof v === 'object' ? JSON.stringify(v) : v)}</dd>`).join('')}</dl>` : '';
    return `<div class="attempt" data-attempt="${a.attempt}">
      <p><b>attempt ${a.attempt}</b>: ${badge(a.status)} · ${esc(fmtDate(started))} · ${a.duration_ms == null ? 'running' : esc(fmtDuration(a.duration_ms))} · ${esc(a.instance || '')}</p>
      ${a.reason ? `<p>reason: ${esc(a.reason)}</p>` : ''}
      ${a.error ? `<pre class="error" data-field="error">${esc(a.error)}</pre>` : ''}
      ${detail}</div>`;
  }).join('');
}

// The run's own log (`lines`: at, attempt, level, message, fields; `dropped_before` lines missing before one).
function logHtml(log) {
  const lines = log.lines || [];
  if (lines.length === 0) return '<p class="muted">no log lines kept for this run</p>';
  const text = [];
  for (const l of lines) {
    if (l.dropped_before > 0) text.push(`… ${l.dropped_before} line(s) dropped`);
    const fields = l.fields && typeof l.fields === 'object'
      ? Object.entries(l.fields).map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : v}`).join(' ') : '';
    text.push([fmtTime(Date.parse(l.at)), `#${l.attempt}`, l.level, l.message, fields].filter(Boolean).join(' '));
  }
  return `<pre class="log">${esc(text.join('\n'))}</pre>`;
}

// The label of a schedule's "Run now" button: what the last click got for 10 s (through the redraws that
// follow it), then "Run now" again.
function ranNowText(name) {
  const ran = page.ranNow.get(name);
  return ran && ran.until > Date.now() ? ran.text : 'Run now';
}

async function runNow(button) {
  const name = button.dataset.schedule;
  const token = $('token').value.trim();
  if (!token) { $('token').focus(); button.textContent = 'token?'; return; }
  button.disabled = true;
  try {
    const response = await fetch(`/api/schedules/${encodeURIComponent(name)}/run`, {
      method: 'POST', headers: { Authorization: `Bearer ${token}` },
    });
    button.textContent = response.ok ? '✓ started' : `✗ ${response.status === 401 ? 'wrong token' : response.status}`;
  } catch (error) {
    button.textContent = '✗ unreachable';
  }
  page.ranNow.set(name, { text: button.textContent, until: Date.now() + 10000 });
  setTimeout(refresh, 1000);
}

// ---- pipeline ----------------------------------------------------------------------------------------

const CHART_W = 300;
const CHART_H = 80;

function niceMax(values) {
  const max = Math.max(0, ...values.filter((v) => v != null));
  if (max === 0) return 1;
  const step = 10 ** Math.floor(Math.log10(max));
  return [1, 2, 2.5, 5, 10].map((m) => m * step).find((v) => v >= max);
}

// A line chart of `series` (with an optional dashed `second`) over the window from `start` to `end`.
function chartSvg(at, series, second, start, end) {
  const max = niceMax(series.concat(second || []));
  const x = (t) => (((t - start) / (end - start)) * CHART_W).toFixed(1);
  const y = (v) => (CHART_H - 2 - (v / max) * (CHART_H - 6)).toFixed(1);
  const paths = (values) => {
    const segments = [];
    let current = [];
    values.forEach((v, i) => {
      if (v == null || at[i] < start) { if (current.length) segments.push(current); current = []; return; }
      current.push(`${x(at[i])},${y(v)}`);
    });
    if (current.length) segments.push(current);
    return segments;
  };
  const main = paths(series);
  const parts = [`<line class="base" x1="0" x2="${CHART_W}" y1="${CHART_H - 1}" y2="${CHART_H - 1}" vector-effect="non-scaling-stroke"/>`];
  for (const seg of main) {
    if (seg.length === 1) {
      const [px, py] = seg[0].split(',');
      parts.push(`<rect class="dot" x="${Number(px) - 1.5}" y="${Number(py) - 1.5}" width="3" height="3"/>`);
    }
    if (seg.length > 1) {
      const first = seg[0].split(',')[0];
      const last = seg[seg.length - 1].split(',')[0];
      parts.push(`<polygon class="area" points="${first},${CHART_H - 1} ${seg.join(' ')} ${last},${CHART_H - 1}"/>`);
    }
    parts.push(`<polyline class="line" points="${seg.join(' ')}" vector-effect="non-scaling-stroke"/>`);
  }
  for (const seg of second ? paths(second) : []) {
    parts.push(`<polyline class="line2" points="${seg.join(' ')}" vector-effect="non-scaling-stroke"/>`);
  }
  return { svg: parts.join(''), max };
}

function figureHtml(stage, name, title, unit, at, values, second, start, end) {
  const now = values.length ? values[values.length - 1] : null;
  const { svg, max } = chartSvg(at, values, second, start, end);
  const secondNote = second ? ' · <span class="st-succeeded">- - rows/s</span>' : '';
  return `<figure class="chart" data-stage="${stage}" data-series="${name}" data-now="${now ?? ''}">
    <figcaption><span>${title}${secondNote}</span><span>max ${fmtNum(max, 2)}${unit}</span></figcaption>
    <svg viewBox="0 0 ${CHART_W} ${CHART_H}" preserveAspectRatio="none" role="img" aria-label="${esc(`${stage} ${title}, now ${now ?? 'unknown'}`)}">${svg}</svg>
    <figcaption><span>−${end - start < 120000 ? `${Math.round((end - start) / 1000)} s` : `${Math.round((end - start) / 60000)} min`}</span><span>now</span></figcaption>
  </figure>`;
}

function drawPipeline(p) {
  // The last hour, or the time since the first sample when the process is younger than that.
  const end = p.at.length ? Math.max(p.at[p.at.length - 1], Date.now() - 1000) : Date.now();
  const first = p.at.length ? p.at[0] - p.sample_every_seconds * 1000 : end - 3600000;
  const start = Math.max(end - 3600000, Math.min(first, end - 60000));
  const cards = p.stages.map((s) => {
    const last = (values) => (values.length ? values[values.length - 1] : null);
    const rate = last(s.rate);
    const lag = last(s.lag);
    const rows = s.rows ? last(s.rows) : null;
    const here = s.running_here ? '<span class="ok">✓ runs here</span>' : '<span class="muted">– not running in this process</span>';
    const collecting = p.at.length === 0 ? `<p class="muted">first sample within ${p.sample_every_seconds} s</p>` : '';
    return `<div class="stage" data-stage="${s.stage}">
      <h3>${esc(s.stage)}</h3>
      <div class="flow">${esc(s.input)} · group ${esc(s.group)} · ${here}</div>
      <div class="figures">
        <div class="figure"><b data-now="rate">${rate == null ? '—' : fmtNum(rate, 1)}</b> <span>msg/s</span></div>
        ${s.rows ? `<div class="figure"><b data-now="rows">${rows == null ? '—' : fmtNum(rows, 1)}</b> <span>rows/s</span></div>` : ''}
        <div class="figure"><b data-now="lag">${lag == null ? '—' : fmtNum(lag)}</b> <span>lag</span></div>
      </div>
      ${collecting}
      ${figureHtml(s.stage, 'rate', 'messages per second', '/s', p.at, s.rate, s.rows, start, end)}
      ${figureHtml(s.stage, 'lag', 'consumer lag (messages)', '', p.at, s.lag, null, start, end)}
    </div>`;
  });
  $('stages').innerHTML = cards.join('');
  const setAside = new Map(p.stages.map((s) => [s.dead_letter_topic, s.dead_lettered_total]));
  $('dead-letters').tBodies[0].innerHTML = p.dead_letters.length === 0
    ? '<tr><td colspan="3" class="muted">first reading within the first sample</td></tr>'
    : p.dead_letters.map((d) => `<tr data-topic="${esc(d.topic)}"><td class="mono">${esc(d.topic)}</td>
        <td class="num">${d.messages == null ? `<span class="bad">✗ ${esc(d.error)}</span>` : `${d.messages > 0 ? '<span class="warn">⚠</span> ' : ''}${fmtNum(d.messages)}`}</td>
        <td class="num">${fmtNum(setAside.get(d.topic) ?? 0)}</td></tr>`).join('');
}

// ---- postgresql --------------------------------------------------------------------------------------

function part(value, draw) {
  if (value && 'error' in value) return `<p class="bad"><span class="sym">✗</span>${esc(value.error)}</p>`;
  return draw(value.ok);
}

function drawPostgres(p) {
  $('backups').innerHTML = `<h3>Base backups <span class="path">${esc(p.backup_dir)}</span></h3>${part(p.backups, (list) => {
    if (list.length === 0) return '<p class="muted">no backups yet</p>';
    const rows = list.slice().reverse().map((b) => `<tr data-backup="${esc(b.id)}">
      <td class="mono">${esc(b.id)}</td><td>${esc(fmtDate(Date.parse(b.started_at)))}</td>
      <td class="num">${fmtBytes(b.bytes)}</td><td class="num">${fmtDuration(b.duration_ms)}</td>
      <td>${b.verified ? '<span class="ok">✓ verified</span>' : `<span class="bad">✗ not verified</span> ${esc(b.problems.join('; '))}`}
        ${b.verified_at ? `<span class="muted">${esc(fmtAgo(Date.parse(b.verified_at)))}</span>` : ''}</td></tr>`);
    return `<div class="scroll"><table><thead><tr><th scope="col">id</th><th scope="col">started</th><th scope="col" class="num">size</th><th scope="col" class="num">duration</th><th scope="col">verified</th></tr></thead>
      <tbody>${rows.join('')}</tbody></table></div>`;
  })}`;

  $('drill').innerHTML = `<h3>Last restore drill</h3>${part(p.drill, (run) => {
    if (!run) return '<p class="muted">no restore drill has run yet</p>';
    const d = run.detail || {};
    const started = Date.parse(run.started_at);
    return `<dl class="kv">
      <dt>result</dt><dd>${badge(run.status)}</dd>
      <dt>when</dt><dd>${esc(fmtDate(started))} (${esc(fmtAgo(started))})</dd>
      <dt>rows restored</dt><dd>${fmtNum(d.rows)}</dd>
      <dt>recovery time</dt><dd>${d.recovery_seconds == null ? '—' : esc(fmtDuration(d.recovery_seconds * 1000))}</dd>
      <dt>backup</dt><dd class="mono">${esc(d.backup_id || '—')}</dd>
      ${run.error ? `<dt>error</dt><dd><pre class="error">${esc(run.error)}</pre></dd>` : ''}
    </dl>`;
  })}`;

  $('archiver').innerHTML = `<h3>WAL archiver</h3>${part(p.archiver, (a) => {
    const age = a.last_archived_age_seconds;
    return `<p>${a.problem ? `<span class="bad">✗ ${esc(a.problem)}</span>` : '<span class="ok">✓ archiving keeps up</span>'}</p>
    <dl class="kv">
      <dt>archive_mode</dt><dd>${esc(a.archive_mode)}</dd>
      <dt>last archived</dt><dd class="mono">${esc(a.last_archived_wal || '—')}</dd>
      <dt>its age</dt><dd>${age == null ? '—' : esc(fmtDuration(age * 1000))}</dd>
      <dt>failures</dt><dd>${fmtNum(a.failed_count)}${a.last_failed_wal ? ` (last: <span class="mono">${esc(a.last_failed_wal)}</span>, ${esc(fmtAgo(Date.parse(a.last_failed_time)))})` : ''}</dd>
      <dt>waiting</dt><dd>${fmtNum(a.waiting_segments)} segment(s)</dd>
    </dl>`;
  })}`;

  $('settings').innerHTML = `<h3>Archiving settings</h3>${part(p.settings, (s) => {
    const verdict = {
      in_force: '<span class="ok">✓ in force</span>',
      restart_needed: '<span class="warn">↻ written, waiting for a PostgreSQL restart</span>',
      drift: '<span class="bad">✗ drift: the server differs from the file</span>',
    }[s.verdict] || esc(s.verdict);
    const symbol = { in_force: '✓', restart_needed: '↻', drift: '✗' };
    return `<p data-verdict="${esc(s.verdict)}">${verdict}</p><p class="muted mono">${esc(s.file)}</p>
      <ul class="legend">${s.settings.map((x) => `<li>${symbol[x.state] || '?'} ${esc(x.name)}: ${esc(x.state.replace('_', ' '))}</li>`).join('')}</ul>`;
  })}`;
}

// ---- wiring ------------------------------------------------------------------------------------------

function wire() {
  document.querySelectorAll('.range button').forEach((b) => b.setAttribute('aria-pressed', String(b.dataset.range === page.range)));
  const timeline = $('timeline');
  timeline.addEventListener('mousemove', showTip);
  timeline.addEventListener('mouseleave', () => { $('tip').hidden = true; });
  document.addEventListener('click', (event) => {
    const runNowButton = event.target.closest('.run-now');
    if (runNowButton) { runNow(runNowButton); return; }
    const opener = event.target.closest('button[data-run]');
    const run = opener ? page.runs.get(opener.dataset.run) : (event.target.closest('.lane svg') && runAt(event));
    if (run) { $('tip').hidden = true; openRun(run.run_id); }
  });
  $('run-close').addEventListener('click', () => $('run').close());
  document.querySelectorAll('.range button').forEach((button) => {
    button.addEventListener('click', () => {
      page.range = button.dataset.range;
      document.querySelectorAll('.range button').forEach((b) => b.setAttribute('aria-pressed', String(b === button)));
      refresh();
    });
  });
  $('pause').addEventListener('click', () => {
    page.paused = !page.paused;
    $('pause').setAttribute('aria-pressed', String(page.paused));
    $('pause').textContent = page.paused ? 'Resume' : 'Pause';
    if (page.paused) clearTimeout(page.timer); else refresh();
  });
  let resizing = null;
  window.addEventListener('resize', () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => { if (page.timeline) drawTimeline(page.timeline); }, 150);
  });
}

wire();
refresh();
