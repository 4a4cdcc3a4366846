// fp8d's live dashboard: polls the daemon's JSON API (server/dashboard_api.h) and draws plain SVG.
// Loss with eval and the run's events, learning rate, tokens/s, MFU, and a heatmap of every FP8
// tensor's amax, saturation or underflow over steps. Pages of the logs are fetched from a cursor,
// so each poll transfers only what is new; what the page keeps is bounded (kMaxPoints points per
// series, kMaxColumns heatmap columns), so a long run costs no more than a short one.
'use strict';

const kPollMs = 1000;
const kMaxPoints = 4000;     // per chart series; beyond it every other point is dropped
const kMaxColumns = 600;     // amax records kept: the API is asked for every ceil(steps/600)th step
const kHeatmapBins = 160;    // drawn columns; records are merged (max) into bins
const kSvgNs = 'http://www.w3.org/2000/svg';
const kTerminal = new Set(['SUCCEEDED', 'FAILED', 'CANCELLED']);

// ---- errors: anything that goes wrong shows on the page (and fails the browser test) ----
function showError(message) {
  const box = document.getElementById('errors');
  box.hidden = false;
  box.textContent += message + '\n';
}
window.addEventListener('error', (e) => showError(`error: ${e.message}`));
window.addEventListener('unhandledrejection', (e) => showError(`error: ${e.reason}`));

// ---- small helpers ----
function el(tag, attrs = {}, text) {
  const e = document.createElementNS(kSvgNs, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function html(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}
async function getJson(url) {
  const res = await fetch(url, { cache: 'no-store', credentials: 'same-origin' });
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status} ${(await res.text()).trim()}`);
  return res.json();
}
function fmt(v) {
  if (v === null || v === undefined || !isFinite(v)) return '-';
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
  return String(+v.toPrecision(4));
}
function rate(v) {
  if (v >= 1e6) return (v / 1e6).toFixed(2) + 'M';
  if (v >= 1e3) return (v / 1e3).toFixed(1) + 'k';
  return v.toFixed(0);
}
function duration(seconds) {
  if (!(seconds >= 0)) return '-';
  const s = Math.round(seconds);
  const two = (n) => String(n).padStart(2, '0');
  return s >= 3600 ? `${Math.floor(s / 3600)}:${two(Math.floor(s / 60) % 60)}:${two(s % 60)}`
                   : `${Math.floor(s / 60)}:${two(s % 60)}`;
}
// Drops every other element (keeping the last) once `list` holds more than `max`.
function bound(list, max) {
  if (list.length <= max) return list;
  return list.filter((_, i) => i % 2 === 0 || i === list.length - 1);
}
function niceTicks(lo, hi, count) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(t);
  return ticks;
}

// ---- charts ----
// A line chart over steps: `series` [{points: [[step, value]], cls, dots}], vertical `markers`
// [{step, kind, label}]. The SVG carries data-* counts so tests can read what was drawn.
function lineChart(svg, { series, markers = [], xMax, yFormat = fmt, emptyText = 'no data yet' }) {
  const W = 640, H = 220, L = 56, R = 12, T = 14, B = 24;
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.replaceChildren();
  const all = series.flatMap((s) => s.points).filter((p) => p[1] !== null && isFinite(p[1]));
  svg.dataset.points = series.length ? series[0].points.length : 0;
  svg.dataset.markers = markers.length;
  if (!all.length) {
    svg.append(el('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'empty' },
                  emptyText));
    return;
  }
  const xs = all.map((p) => p[0]);
  const x0 = Math.min(...xs, ...markers.map((m) => m.step));
  const x1 = Math.max(xMax || 0, ...xs, ...markers.map((m) => m.step), x0 + 1);
  let y0 = Math.min(...all.map((p) => p[1])), y1 = Math.max(...all.map((p) => p[1]));
  if (y1 === y0) { y0 -= Math.abs(y0) * 0.1 + 1e-9; y1 += Math.abs(y1) * 0.1 + 1e-9; }
  const pad = (y1 - y0) * 0.05;
  y0 -= pad; y1 += pad;
  const sx = (x) => L + (x - x0) / (x1 - x0) * (W - L - R);
  const sy = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  const grid = el('g', { class: 'grid' });
  for (const t of niceTicks(y0, y1, 4)) {
    grid.append(el('line', { x1: L, x2: W - R, y1: sy(t), y2: sy(t) }));
    grid.append(el('text', { x: L - 4, y: sy(t) + 4, 'text-anchor': 'end' }, yFormat(t)));
  }
  for (const t of niceTicks(x0, x1, 6)) {
    grid.append(el('text', { x: sx(t), y: H - 6, 'text-anchor': 'middle' }, String(Math.round(t))));
  }
  svg.append(grid);
  for (const m of markers) {
    const g = el('g', { class: `marker ${m.kind}`, 'data-kind': m.kind, 'data-step': m.step });
    g.append(el('line', { x1: sx(m.step), x2: sx(m.step), y1: T, y2: H - B }));
    if (m.label) g.append(el('text', { x: sx(m.step) + 3, y: T + 9 }, m.label));
    g.append(el('title', {}, `step ${m.step}: ${m.title || m.kind}`));
    svg.append(g);
  }
  for (const s of series) {
    const pts = s.points.filter((p) => p[1] !== null && isFinite(p[1]));
    if (pts.length > 1) {
      const d = pts.map((p, i) => `${i ? 'L' : 'M'}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`);
      svg.append(el('path', { class: s.cls, d: d.join('') }));
    }
    if (s.dots || pts.length === 1) {
      for (const p of pts) {
        const dot = el('circle', { class: `${s.cls}-dot`, cx: sx(p[0]), cy: sy(p[1]), r: 3 });
        dot.append(el('title', {}, `step ${p[0]}: ${fmt(p[1])}`));
        svg.append(dot);
      }
    }
  }
}

// Five-stop sequential palette (dark blue -> teal -> yellow), t in [0, 1].
const kPalette = [[13, 8, 135], [84, 2, 163], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
function color(t) {
  t = Math.min(1, Math.max(0, t)) * (kPalette.length - 1);
  const i = Math.min(kPalette.length - 2, Math.floor(t)), f = t - i;
  const c = kPalette[i].map((v, k) => Math.round(v + (kPalette[i + 1][k] - v) * f));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

// Rows: FP8 tensors in model order; columns: steps 1..total in at most kHeatmapBins bins (the max
// of the records in a bin), on the same step axis as the charts, so the steps before FP8 started
// stay empty. Cells of one row that fall in the same colour band are drawn as one rectangle.
function heatmap(svg, job, mode) {
  const names = job.tensors, cols = job.columns;
  svg.dataset.rows = names.length;
  svg.dataset.columns = cols.length;
  svg.dataset.firstStep = cols.length ? cols[0].step : '';
  svg.dataset.lastStep = cols.length ? cols[cols.length - 1].step : '';
  svg.replaceChildren();
  const legend = document.getElementById('heatmap-legend');
  if (!cols.length || !names.length) {
    svg.setAttribute('viewBox', '0 0 640 40');
    svg.append(el('text', { x: 320, y: 24, 'text-anchor': 'middle', class: 'empty' },
                  'no FP8 tensors yet (the recipe is bf16, or no FP8 step has run)'));
    legend.textContent = '';
    return;
  }
  const rowH = 12, L = 230, R = 16, T = 4, W = 940, B = 22;
  const H = T + names.length * rowH + B;
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  const total = Math.max(job.totalSteps, cols[cols.length - 1].step, 1);
  const binSteps = Math.ceil(total / kHeatmapBins);
  const bins = Math.ceil(total / binSteps), span = bins * binSteps;
  const binOf = (step) => Math.min(bins - 1, Math.floor((step - 1) / binSteps));
  const sx = (steps) => L + steps / span * (W - L - R);  // x after `steps` completed steps
  // value(row, bin): max over the bin's records.
  const values = names.map(() => new Array(bins).fill(null));
  for (const col of cols) {
    const b = binOf(col.step), v = col[mode];
    for (let k = 0; k < col.tensor.length; ++k) {
      if (v[k] === null) continue;
      const cur = values[col.tensor[k]][b];
      values[col.tensor[k]][b] = cur === null ? v[k] : Math.max(cur, v[k]);
    }
  }
  // amax on a log2 scale; the fractions on a linear one from 0.
  const transform = mode === 'amax' ? (v) => (v > 0 ? Math.log2(v) : null) : (v) => v;
  let lo = Infinity, hi = -Infinity;
  for (const row of values) {
    for (const v of row) {
      const t = v === null ? null : transform(v);
      if (t !== null && isFinite(t)) { lo = Math.min(lo, t); hi = Math.max(hi, t); }
    }
  }
  if (mode !== 'amax') lo = 0;
  if (!(hi > lo)) hi = lo + 1;
  const bands = 24;
  const band = (v) => {
    const t = v === null ? null : transform(v);
    if (t === null || !isFinite(t)) return -1;
    if (mode !== 'amax' && t === 0) return -2;  // exactly zero: nothing saturated or flushed
    return Math.min(bands - 1, Math.floor((t - lo) / (hi - lo) * bands));
  };
  names.forEach((name, r) => {
    const y = T + r * rowH;
    svg.append(el('text', { x: L - 4, y: y + rowH - 3, 'text-anchor': 'end' }, name));
    let start = 0;
    for (let b = 1; b <= bins; ++b) {
      if (b < bins && band(values[r][b]) === band(values[r][start])) continue;
      const bd = band(values[r][start]);
      if (bd !== -1) {
        const rect = el('rect', { x: sx(start * binSteps), y,
                                  width: sx(b * binSteps) - sx(start * binSteps) + 0.3,
                                  height: rowH - 1,
                                  fill: bd === -2 ? 'rgb(40,40,48)' : color((bd + 0.5) / bands) });
        rect.append(el('title', {}, `${name}, steps ${start * binSteps + 1}-${b * binSteps}: ` +
                                    `${mode} up to ${fmt(values[r][start])}`));
        svg.append(rect);
      }
      start = b;
    }
  });
  for (const t of niceTicks(1, total, 8)) {
    svg.append(el('text', { x: sx(t - 0.5), y: H - 6, 'text-anchor': 'middle' },
                  String(Math.round(t))));
  }
  // A recipe change after step N takes effect from step N + 1: the line sits between them.
  for (const m of job.markers.filter((m) => m.kind === 'recipe_changed')) {
    const g = el('g', { class: 'marker recipe_changed', 'data-kind': m.kind, 'data-step': m.step });
    g.append(el('line', { x1: sx(m.step), x2: sx(m.step), y1: T, y2: H - B }));
    g.append(el('title', {}, `step ${m.step}: ${m.label}`));
    svg.append(g);
  }
  legend.textContent = mode === 'amax'
      ? `log2 amax from ${lo.toFixed(1)} (dark) to ${hi.toFixed(1)} (yellow)`
      : `fraction from 0 (dark grey: none) to ${fmt(hi)} (yellow)`;
}

// ---- state ----
const state = { server: null, jobs: [], selected: null, job: null, mode: 'amax' };

function newJobView(id, totalSteps) {
  return {
    id, totalSteps,
    cursor: 0, amaxCursor: 0,
    every: Math.max(1, Math.ceil(totalSteps / kMaxColumns)),
    steps: [], evals: [], events: [], markers: [],
    tensors: [], tensorIndex: new Map(), columns: [],
    done: false,
  };
}

function markerFor(e) {
  const label = e.kind === 'recipe_changed' ? `${e.recipe} v${e.recipe_version}` : '';
  return { step: e.step, kind: e.kind, label, title: e.message || label };
}

// Fetches every new page of the job's metric and amax logs.
async function pollJob(view) {
  for (let more = true; more;) {
    const api = `/api/jobs/${encodeURIComponent(view.id)}`;
    const page = await getJson(`${api}/metrics?cursor=${view.cursor}`);
    view.cursor = page.cursor;
    more = page.more;
    view.steps = bound(view.steps.concat(page.steps), kMaxPoints);
    view.evals = view.evals.concat(page.evals);
    for (const e of page.events) {
      view.events.push(e);
      if (!['checkpoint_saved', 'started'].includes(e.kind)) view.markers.push(markerFor(e));
    }
    view.events = view.events.slice(-kMaxPoints);
    view.markers = view.markers.slice(-200);
  }
  for (let more = true; more;) {
    const api = `/api/jobs/${encodeURIComponent(view.id)}`;
    const page = await getJson(`${api}/amax?cursor=${view.amaxCursor}&every=${view.every}`);
    view.amaxCursor = page.cursor;
    more = page.more;
    const local = page.tensors.map((name) => {
      if (!view.tensorIndex.has(name)) {
        view.tensorIndex.set(name, view.tensors.length);
        view.tensors.push(name);
      }
      return view.tensorIndex.get(name);
    });
    for (const r of page.records) {
      view.columns.push({ step: r.step, tensor: r.tensor.map((i) => local[i]), amax: r.amax,
                          saturated: r.saturated, underflow: r.underflow });
    }
    view.columns = bound(view.columns, kMaxColumns);
  }
}

// ---- rendering ----
function renderServer() {
  const s = state.server;
  if (!s) return;
  const dl = document.getElementById('server');
  dl.replaceChildren();
  const items = [['version', s.version], ['engine', s.engine], ['device', s.device],
                 ['uptime', duration(s.uptime_seconds)], ['queued', s.queued_jobs],
                 ['streams', s.open_streams], ['running', s.running_job || '-']];
  for (const [k, v] of items) {
    const div = html('div');
    div.append(html('dt', k), html('dd', String(v)));
    dl.append(div);
  }
}

function renderJobs() {
  const tbody = document.querySelector('#jobs tbody');
  tbody.replaceChildren();
  for (const j of [...state.jobs].reverse()) {
    const tr = html('tr');
    tr.dataset.job = j.id;
    if (j.id === state.selected) tr.className = 'selected';
    const bar = html('div', undefined, 'bar');
    const fill = html('div');
    fill.style.width = `${j.total_steps ? 100 * j.step / j.total_steps : 0}%`;
    bar.append(fill);
    const progress = html('td');
    progress.append(bar);
    tr.append(html('td', j.id), html('td', j.state, `state-${j.state}`), progress,
              html('td', fmt(j.last_loss)));
    tr.addEventListener('click', () => { location.hash = `job=${encodeURIComponent(j.id)}`; });
    tbody.append(tr);
  }
}

function renderJob() {
  const view = state.job, section = document.getElementById('job');
  const j = state.jobs.find((x) => x.id === state.selected);
  if (!view || !j) return;
  section.dataset.state = view.done ? 'done' : 'live';
  section.dataset.job = j.id;
  document.getElementById('job-title').textContent = `${j.id} (${j.name || 'unnamed'})`;
  const now = Date.now() * 1000;
  const elapsed =
      j.start_unix_micros ? ((j.end_unix_micros || now) - j.start_unix_micros) / 1e6 : NaN;
  document.getElementById('job-summary').textContent =
      `${j.state}${j.reason ? ` (${j.reason})` : ''} · step ${j.step}/${j.total_steps} · ` +
      `recipe ${j.recipe} v${j.recipe_version} · ` +
      `FP8 ${j.fp8_layers}/${j.total_layers} layers · ` +
      `model ${j.model || 'custom'} · elapsed ${duration(elapsed)}`;
  const steps = view.steps;
  lineChart(document.getElementById('loss-chart'), {
    series: [{ points: steps.map((s) => [s[0], s[1]]), cls: 'train' },
             { points: view.evals.map((e) => [e[0], e[1]]), cls: 'eval', dots: true }],
    markers: view.markers, xMax: view.totalSteps,
  });
  document.getElementById('loss-chart').dataset.evalPoints = view.evals.length;
  document.getElementById('loss-chart').dataset.lastStep =
      steps.length ? steps[steps.length - 1][0] : '';
  const recipeMarkers = view.markers.filter((m) => m.kind === 'recipe_changed');
  lineChart(document.getElementById('lr-chart'), {
    series: [{ points: steps.map((s) => [s[0], s[2]]), cls: 'line' }], markers: recipeMarkers,
    xMax: view.totalSteps, yFormat: (v) => v.toExponential(1),
  });
  lineChart(document.getElementById('throughput-chart'), {
    series: [{ points: steps.map((s) => [s[0], s[3]]), cls: 'line' }], markers: recipeMarkers,
    xMax: view.totalSteps, yFormat: rate,
  });
  const mfuKnown = steps.some((s) => s[4] > 0);
  lineChart(document.getElementById('mfu-chart'), {
    series: [{ points: mfuKnown ? steps.map((s) => [s[0], 100 * s[4]]) : [], cls: 'line' }],
    markers: recipeMarkers, xMax: view.totalSteps, yFormat: (v) => `${fmt(v)}%`,
    emptyText: 'MFU is unknown on this device (no peak FLOP/s, e.g. the CPU engine)',
  });
  heatmap(document.getElementById('heatmap'), view, state.mode);
  const tbody = document.querySelector('#events tbody');
  tbody.replaceChildren();
  for (const e of view.events.slice(-50).reverse()) {
    const detail = e.kind === 'recipe_changed' ? `${e.recipe} v${e.recipe_version}, amax ${e.amax}`
                                               : e.message;
    const tr = html('tr');
    tr.append(html('td', String(e.step)), html('td', e.kind), html('td', detail));
    tbody.append(tr);
  }
}

// ---- the loop ----
function selectedFromHash() {
  const m = /job=([^&]+)/.exec(location.hash);
  return m ? decodeURIComponent(m[1]) : null;
}

async function refresh() {
  [state.server, { jobs: state.jobs }] =
      await Promise.all([getJson('/api/server'), getJson('/api/jobs')]);
  const wanted = selectedFromHash();
  const running = state.jobs.find((j) => j.state === 'RUNNING' || j.state === 'PAUSED');
  const latest = state.jobs[state.jobs.length - 1];
  state.selected = wanted || (running && running.id) || (latest && latest.id) || null;
  renderServer();
  renderJobs();
  const j = state.jobs.find((x) => x.id === state.selected);
  if (!j) {
    if (wanted) showError(`no job ${wanted} on this daemon`);
    return;
  }
  if (!state.job || state.job.id !== j.id) state.job = newJobView(j.id, j.total_steps);
  if (!state.job.done) {
    // A job that has ended gets one last complete read, then is not polled again.
    const ended = kTerminal.has(j.state);
    await pollJob(state.job);
    state.job.done = ended;
  }
  renderJob();
}

async function loop() {
  try {
    await refresh();
  } catch (e) {
    showError(String(e));
  }
  setTimeout(loop, kPollMs);
}

for (const b of document.querySelectorAll('#heatmap-modes button')) {
  b.addEventListener('click', () => {
    state.mode = b.dataset.mode;
    for (const o of document.querySelectorAll('#heatmap-modes button')) {
      o.classList.toggle('active', o === b);
    }
    renderJob();
  });
}
// Another job: the next poll (within kPollMs) loads it from the start.
window.addEventListener('hashchange', () => { state.job = null; });
loop();
