// graphformer's model viewer: pan/zoom over Graphviz's SVG, repeated blocks expanded in place by
// swapping precomputed layouts, a side panel fed by the IR data embedded in the page. No network.
(function () {
  'use strict';
  const started = performance.now();
  const D = JSON.parse(document.getElementById('gf-data').textContent);
  const $ = (id) => document.getElementById(id);
  const canvas = $('canvas'), stage = $('stage'), panel = $('panel');
  const S = { expanded: new Set(D.initial), view: null, scale: 1, tx: 0, ty: 0, selected: null,
              nodes: new Map(), edges: [], clusters: new Map(), members: new Map() };

  // IR consumers of every node, for the panel
  const consumers = {};
  for (const [name, n] of Object.entries(D.nodes)) for (const [, src] of n.in) (consumers[src] = consumers[src] || []).push(name);
  for (const [out, src] of Object.entries(D.outputs)) (consumers[src] = consumers[src] || []).push('output:' + out);

  // ------------------------------------------------------------ helpers
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
  const fmtInt = (v) => (v === null || v === undefined) ? '' : Number(v).toLocaleString('en-US');
  const compact = (v) => {
    if (v === null || v === undefined) return '';
    const units = [[1e15, 'P'], [1e12, 'T'], [1e9, 'G'], [1e6, 'M'], [1e3, 'k']];
    for (const [u, s] of units) if (Math.abs(v) >= u) return (v / u).toFixed(v / u >= 100 ? 0 : 1) + ' ' + s;
    return String(v);
  };
  const bytes = (v) => {
    for (const [u, s] of [[2 ** 40, 'TiB'], [2 ** 30, 'GiB'], [2 ** 20, 'MiB'], [2 ** 10, 'KiB']]) if (v >= u) return (v / u).toFixed(1) + ' ' + s;
    return v + ' B';
  };
  const keyOf = (set) => [...set].sort().join('|');
  const views = new Map(D.views.map((v) => [keyOf(v.expanded), v]));
  const titleOf = (g) => { const t = g.querySelector(':scope > title'); return t ? t.textContent : ''; };
  const drawnAs = (ir) => (S.view.drawnAs[ir] || ir);

  // The precomputed view for a set of expanded calls, or the smallest one that expands them all.
  function pickView(set) {
    const exact = views.get(keyOf(set));
    if (exact) return exact;
    let best = null;
    for (const v of D.views) {
      if ([...set].every((c) => v.expanded.includes(c)) && (!best || v.expanded.length < best.expanded.length)) best = v;
    }
    return best;
  }

  // ------------------------------------------------------------ drawing a view
  async function unpack(view) {
    if (view.svg === undefined) {
      const bytes = Uint8Array.from(atob(view.svgz), (c) => c.charCodeAt(0));
      const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'));
      view.svg = await new Response(stream).text();
    }
    return view;
  }

  // Show a view once it is unpacked; the body has class gf-busy meanwhile (tests wait on it), and
  // graphformerViewer.lastShowMs says how long it took, to the frame after the new view is drawn.
  async function showAsync(view, anchor, then) {
    const t0 = performance.now();
    document.body.classList.add('gf-busy');
    try {
      show(await unpack(view), anchor);
      if (then) then();
    } finally {
      requestAnimationFrame(() => requestAnimationFrame(() => {
        if (window.graphformerViewer) window.graphformerViewer.lastShowMs = performance.now() - t0;
        document.body.classList.remove('gf-busy');
      }));
    }
  }

  function show(view, anchor) {
    const before = new Set(S.nodes.keys());
    let oldPos = null;
    if (anchor && S.clusters.get(anchor.before)) oldPos = S.clusters.get(anchor.before).getBoundingClientRect();
    S.view = view;
    S.expanded = new Set(view.expanded);
    stage.innerHTML = view.svg;
    const svg = stage.querySelector('svg');
    const vb = svg.viewBox.baseVal;
    svg.setAttribute('width', vb.width); svg.setAttribute('height', vb.height);
    index(svg, before.size ? before : null);
    if (oldPos && S.clusters.get(anchor.after)) {
      const now = S.clusters.get(anchor.after).getBoundingClientRect();
      S.tx += oldPos.left - now.left; S.ty += oldPos.top - now.top;
      apply();
    }
    if (S.selected) select(S.selected, false);
  }

  function index(svg, before) {
    S.nodes.clear(); S.edges = []; S.clusters.clear(); S.members.clear();
    const fresh = [];
    for (const g of svg.querySelectorAll('g.node')) {
      const id = titleOf(g);
      if (/\.<(in|out)\d+>$|:slot$/.test(id)) continue;   // where a composed block's arrows enter or leave, its box
      if (id.endsWith(':title')) {
        const cid = id.slice(0, -6);
        if (S.view.clusters[cid]) { g.classList.add('gf-header'); g.dataset.cluster = cid; }
        continue;
      }
      S.nodes.set(id, g);
      g.dataset.id = id;
      if (before && !before.has(id)) fresh.push(g);
    }
    for (const g of svg.querySelectorAll('g.edge')) {
      const [src, dst] = titleOf(g).split('->').map((end) => end.replace(/:[io]\d+:[nsew]$/, ''));
      S.edges.push({ src, dst, g });
    }
    if (fresh.length <= 400) for (const g of fresh) g.classList.add('gf-new');   // fade in what expanding added
    for (const g of svg.querySelectorAll('g.cluster')) S.clusters.set(titleOf(g).replace(/^cluster_/, ''), g);
    for (const [ir, rep] of Object.entries(S.view.drawnAs)) S.members.set(rep, (S.members.get(rep) || 1) + 1);
  }

  // Expand or collapse the repeated block whose title was clicked, keeping it where it is on screen.
  function toggle(cid) {
    const call = S.view.clusters[cid];
    const set = new Set(S.expanded);
    let anchor;
    if (set.has(call)) {          // an expanded repetition `x.3`: its collapsed block is `x`
      set.delete(call);
      const base = cid.replace(/\.\d+$/, '');
      anchor = { before: base + '.0', after: base };
    } else {
      set.add(call);
      anchor = { before: cid, after: cid + '.0' };
    }
    const view = pickView(set);
    if (!view) {
      status(`${D.calls[call] ? D.calls[call].label : call} with the blocks expanded now is too large to draw in the page: ` +
             'collapse some first, or draw it with `graphformer draw --expand --expand-experts`');
      return;
    }
    showAsync(view, anchor);
  }

  // ------------------------------------------------------------ pan and zoom
  function apply() { stage.style.transform = `translate(${S.tx}px, ${S.ty}px) scale(${S.scale})`; }

  // Fit the model to the window; unless `whole`, never below READABLE: a model too big to read whole
  // opens at its top (its inputs), fitting the width where it can, centred where it can't.
  const READABLE = 0.55;
  function fit(whole) {
    const svg = stage.querySelector('svg');
    const w = svg.viewBox.baseVal.width, h = svg.viewBox.baseVal.height;
    const W = canvas.clientWidth, H = canvas.clientHeight;
    let s = Math.min(W / w, H / h, 1.5) * 0.96;
    if (whole !== true && s < READABLE) s = Math.max(READABLE, Math.min(1, (W / w) * 0.96));
    S.scale = s;
    S.tx = (W - w * s) / 2;
    S.ty = h * s < H ? (H - h * s) / 2 : 8;
    apply();
  }

  function zoomAt(factor, x, y) {
    const s = Math.max(0.02, Math.min(8, S.scale * factor));
    S.tx = x - (x - S.tx) * (s / S.scale); S.ty = y - (y - S.ty) * (s / S.scale); S.scale = s;
    apply();
  }

  function centerOn(g) {
    const r = g.getBoundingClientRect(), st = stage.getBoundingClientRect();
    const x = (r.left + r.width / 2 - st.left) / S.scale, y = (r.top + r.height / 2 - st.top) / S.scale;
    if (S.scale < 0.6) S.scale = 0.9;   // close enough to read
    S.tx = canvas.clientWidth / 2 - x * S.scale; S.ty = canvas.clientHeight / 2 - y * S.scale;
    apply();
  }

  let drag = null;
  canvas.addEventListener('pointerdown', (e) => {
    if (e.button !== 0) return;
    drag = { x: e.clientX, y: e.clientY, tx: S.tx, ty: S.ty, moved: false };
  });
  window.addEventListener('pointermove', (e) => {
    if (!drag) return;
    const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    if (!drag.moved && Math.hypot(dx, dy) < 4) return;
    drag.moved = true; canvas.classList.add('panning');
    S.tx = drag.tx + dx; S.ty = drag.ty + dy; apply();
  });
  window.addEventListener('pointerup', (e) => {
    if (!drag) return;
    const wasDrag = drag.moved; drag = null; canvas.classList.remove('panning');
    if (!wasDrag) onClick(e);
  });
  canvas.addEventListener('wheel', (e) => {
    e.preventDefault();
    const r = canvas.getBoundingClientRect();
    zoomAt(Math.exp(-e.deltaY * (e.ctrlKey ? 0.01 : 0.0015)), e.clientX - r.left, e.clientY - r.top);
  }, { passive: false });

  function onClick(e) {
    const el = document.elementFromPoint(e.clientX, e.clientY);
    const g = el && el.closest ? el.closest('g.node') : null;
    if (!g || !canvas.contains(g)) { if (el && canvas.contains(el)) select(null); return; }
    if (g.dataset.cluster) toggle(g.dataset.cluster);
    else if (g.dataset.id) select(g.dataset.id);
  }

  // ------------------------------------------------------------ selection and the side panel
  function select(id, center) {
    for (const el of stage.querySelectorAll('.gf-sel, .gf-in, .gf-out, .gf-in-edge, .gf-out-edge')) {
      el.classList.remove('gf-sel', 'gf-in', 'gf-out', 'gf-in-edge', 'gf-out-edge');
    }
    S.selected = id;
    if (!id) { summaryPanel(); return; }
    const shown = S.nodes.has(id) ? id : drawnAs(id);
    const g = S.nodes.get(shown);
    if (g) {
      g.classList.add('gf-sel');
      for (const e of S.edges) {
        if (e.dst === shown) { e.g.classList.add('gf-in-edge'); S.nodes.get(e.src) && S.nodes.get(e.src).classList.add('gf-in'); }
        if (e.src === shown) { e.g.classList.add('gf-out-edge'); S.nodes.get(e.dst) && S.nodes.get(e.dst).classList.add('gf-out'); }
      }
      if (center) centerOn(g);
    }
    nodePanel(id, shown);
  }

  const link = (name) => `<a data-go="${esc(name)}"><code>${esc(name)}</code></a>`;
  const row = (k, v) => `<tr><td>${esc(k)}</td><td>${v}</td></tr>`;
  const shapeCell = (sym, conc) => `<span class="shape">${esc(sym)}</span>` +
    (conc && conc !== sym ? `<br><span class="shape" title="at the example sizes">= ${esc(conc)}</span>` : '');

  function nodePanel(id, shown) {
    if (id.startsWith('output:')) {
      const src = D.outputs[id.slice(7)], n = D.nodes[src];
      panel.innerHTML = `<h2>${esc(id)}</h2><div class="doc">graph output</div><table>` +
        row('from', link(src)) + row('shape', shapeCell(n.shape, n.concrete)) + '</table>' + backLink();
      return;
    }
    let n = D.nodes[id], part = '';
    if (!n) {   // a box drawn for part of a node (a mixture of experts' router and expert): show the node
      const owner = id.split('.').map((_, i, a) => a.slice(0, a.length - i).join('.')).find((p) => D.nodes[p]);
      if (!owner) { summaryPanel(); return; }
      part = `<div class="note"><code>${esc(id)}</code> is drawn as part of ${link(owner)}</div>`;
      id = shown = owner; n = D.nodes[id];
    }
    const reps = S.members.get(shown) || 1;
    let h = `<h2>${esc(id)}</h2><div><b>${esc(n.op)}</b></div>` + part;
    if (n.doc) h += `<div class="doc">${esc(n.doc)}</div>`;
    if (shown !== id) h += `<div class="note">drawn as ${link(shown)}: its block is collapsed. <a data-reveal="${esc(id)}">Expand to show it</a></div>`;
    else if (reps > 1) h += `<div class="note">stands for ${reps} repetitions (this one is the first); expand its block to see each</div>`;
    h += '<h3>Shapes</h3><table>';
    for (const [port, src] of n.in) { const s = D.nodes[src]; h += row('in ' + port, link(src) + '<br>' + shapeCell(s.shape, s.concrete)); }
    h += row('out', shapeCell(n.shape, n.concrete)) + '</table>';
    const env = Object.entries(D.summary.env).map(([k, v]) => `${k}=${v}`).join(', ');
    if (env) h += `<div class="doc" style="font-size:11px">= shapes at ${esc(env)}</div>`;
    const attrRows = (o) => Object.entries(o || {}).map(([k, v]) => row(k, `<code>${esc(JSON.stringify(v))}</code>`)).join('');
    const nDefaults = Object.keys(n.defaults || {}).length;
    if (n.attrs) {
      h += `<h3>Attributes</h3><table>${attrRows(n.attrs)}</table>`;
      if (nDefaults) h += `<details><summary>${nDefaults} at their defaults</summary><table>${attrRows(n.defaults)}</table></details>`;
    }
    if (n.params !== undefined) {
      h += '<h3>Cost</h3><table>' + row('parameters', fmtInt(n.params) + (reps > 1 ? ` (× ${reps} = ${fmtInt(n.params * reps)})` : ''));
      h += row('FLOPs', `<code>${esc(n.flops)}</code>` + (n.flopsAt !== null && n.flops !== String(n.flopsAt) ? `<br>= ${fmtInt(n.flopsAt)} (${compact(n.flopsAt)})` : '')) + '</table>';
    }
    const outs = consumers[id] || [];
    h += `<h3>Consumers</h3>${outs.length ? outs.map(link).join('<br>') : '<span class="doc">none</span>'}`;
    if (n.at) h += `<h3>Defined at</h3><code>${esc(n.at)}</code>`;
    panel.innerHTML = h + backLink();
  }

  const backLink = () => '<h3></h3><a data-go="">← model summary</a>';

  function summaryPanel() {
    const s = D.summary;
    let h = `<h2>${esc(D.name)}</h2><div class="doc">${esc(s.doc)}</div>`;
    h += '<table>' + row('parameters', `<span class="big">${fmtInt(s.paramCount)}</span> (${compact(s.paramCount)})`);
    if (s.activeCount && s.activeCount !== s.paramCount) h += row('active', `${fmtInt(s.activeCount)} (${compact(s.activeCount)}) per token`);
    h += row('FLOPs', `<code>${esc(s.flops)}</code>` + (s.flopsAt !== null ? `<br>= <b>${fmtInt(s.flopsAt)}</b> (${compact(s.flopsAt)})` : ''));
    h += row('at', esc(Object.entries(s.env).map(([k, v]) => `${k}=${v}`).join(', ') || '—'));
    h += row('nodes', fmtInt(s.nodeCount)) + row('spec', `<code>${esc(s.file)}</code>`) + '</table>';
    h += '<h3>Inputs</h3><table>' + Object.entries(s.inputs).map(([k, v]) => row(k, `<span class="shape">${esc(v)}</span>`)).join('') + '</table>';
    h += '<h3>Outputs</h3><table>' + Object.entries(s.outputs).map(([k, v]) => row(k, `<span class="shape">${esc(v)}</span>`)).join('') + '</table>';
    const mem = Object.entries(s.memory || {});
    if (mem.length) {
      const what = { weights: 'weights', kv_cache: 'KV cache', inference_peak: 'inference peak', activations: 'activations (training)', training_peak: 'training peak (AdamW)' };
      h += '<h3>Memory (fp32)</h3><table>' + mem.map(([k, v]) => row(what[k] || k, bytes(v))).join('') + '</table>';
    }
    h += '<h3>Params</h3><table>' + Object.entries(s.params).map(([k, v]) => row(k, `<code>${esc(v)}</code>`)).join('') + '</table>';
    h += '<h3>Highlight</h3><div class="legend"><span><i style="border-color:#d0312d"></i>selected</span>' +
         '<span><i style="border-color:#1f6fd1"></i>inputs</span><span><i style="border-color:#1d9a4a"></i>consumers</span></div>';
    panel.innerHTML = h;
  }

  function status(msg) { panel.insertAdjacentHTML('afterbegin', `<div class="note">${esc(msg)}</div>`); }

  // Expand every collapsed call around an IR node so that it is drawn as itself.
  function reveal(id) {
    const set = new Set(S.expanded);
    for (const [cid, call] of Object.entries(S.view.clusters)) {
      if (id.startsWith(cid + '.') && !/\.\d+$/.test(cid)) set.add(call);
    }
    let view = pickView(set), guard = 0;
    while (view && view.drawnAs[id] && guard++ < 8) {   // nested calls appear once their parent is expanded
      for (const [cid, call] of Object.entries(view.clusters)) if (id.startsWith(cid + '.')) set.add(call);
      view = pickView(set);
    }
    if (!view) { status('too large to lay out expanded in the page'); return; }
    showAsync(view, null, () => select(id, true));
  }

  panel.addEventListener('click', (e) => {
    const a = e.target.closest('a');
    if (!a) return;
    if (a.dataset.reveal) reveal(a.dataset.reveal);
    else if (a.dataset.go !== undefined) select(a.dataset.go || null, !!a.dataset.go);
  });

  // ------------------------------------------------------------ search
  const search = $('search'), results = $('results');
  const allNames = Object.keys(D.nodes).concat(Object.keys(D.outputs).map((o) => 'output:' + o));
  let hits = [], active = 0;
  function runSearch() {
    const q = search.value.trim().toLowerCase();
    hits = [];
    if (q) {
      for (const name of allNames) {
        const op = (D.nodes[name] || {}).op || '';
        if (name.toLowerCase().includes(q) || op.toLowerCase() === q) hits.push(name);
        if (hits.length >= 200) break;
      }
    }
    active = 0;
    results.innerHTML = hits.length ? hits.map((n, i) => `<li data-i="${i}" class="${i ? '' : 'active'}">${esc(n)}<span class="op">${esc((D.nodes[n] || {}).op || 'output')}</span></li>`).join('')
      : (q ? '<li class="none">no node matches</li>' : '');
    results.hidden = !q;
  }
  function pick(i) {
    const name = hits[i];
    if (!name) return;
    results.hidden = true;
    select(name, true);
  }
  search.addEventListener('input', runSearch);
  search.addEventListener('keydown', (e) => {
    if (e.key === 'Enter') { pick(active); e.preventDefault(); }
    else if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      active = Math.max(0, Math.min(hits.length - 1, active + (e.key === 'ArrowDown' ? 1 : -1)));
      [...results.children].forEach((li, i) => li.classList.toggle('active', i === active));
      e.preventDefault();
    } else if (e.key === 'Escape') { search.value = ''; runSearch(); search.blur(); }
  });
  results.addEventListener('click', (e) => { const li = e.target.closest('li[data-i]'); if (li) pick(+li.dataset.i); });
  document.addEventListener('keydown', (e) => {
    if (e.target === search) return;
    if (e.key === '/') { search.focus(); e.preventDefault(); }
    else if (e.key === '0') fit(true);
    else if (e.key === 'Escape') select(null);
  });

  // ------------------------------------------------------------ toolbar and start
  $('fit').addEventListener('click', () => fit(true));
  $('expand-all').addEventListener('click', () => {
    // every repeated block; a mixture's experts stay one expert × E until their own title is clicked
    const blocks = Object.keys(D.calls).filter((c) => !D.calls[c].experts);
    const v = pickView(new Set([...S.expanded].filter((c) => D.calls[c].experts).concat(blocks))) || pickView(new Set(blocks)) || D.views[0];
    showAsync(v, null, () => fit());
  });
  $('collapse-all').addEventListener('click', () => showAsync(pickView(new Set()), null, () => fit()));
  $('title').textContent = D.name;
  $('expand-all').disabled = $('collapse-all').disabled = !Object.keys(D.calls).length;

  show(D.views[0]);   // the page's first view is the one stored unpacked
  fit();
  summaryPanel();
  requestAnimationFrame(() => requestAnimationFrame(() => {
    // time since navigation began: parsing the page and its data, drawing the first view
    window.graphformerViewer = { ready: true, firstRenderMs: performance.now(), scriptMs: performance.now() - started, select, toggle, reveal };
  }));
})();
