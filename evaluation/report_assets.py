"""The stylesheet and script inlined into ``report.html`` and ``compare.html``.

They are Python strings rather than files so the report stays a single file that
opens from ``file://`` with no server and no network, and so they ship with the
package whatever its data-file settings.
"""

CSS = """
:root { --bg:#f6f7fb; --card:#fff; --ink:#1d2230; --muted:#6b7285; --line:#e3e6ee;
        --accent:#4f5bd5; --accent-soft:#e8eafc; --good:#1a9c6b; --bad:#d0463b; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--ink); background:var(--bg); }
header { background:linear-gradient(120deg,#2b2f77,#4f5bd5 60%,#7b61d9); color:#fff; padding:28px 40px 22px; }
header h1 { margin:0 0 4px; font-size:26px; font-weight:650; letter-spacing:.2px; }
header .sub { opacity:.85; font-size:14px; }
header .chips { margin-top:12px; display:flex; flex-wrap:wrap; gap:8px; }
header .chip { background:rgba(255,255,255,.16); border-radius:999px; padding:3px 12px; font-size:13px; }
main { max-width:1280px; margin:0 auto; padding:24px 32px 60px; }
section { margin-top:28px; }
h2 { font-size:19px; margin:0 0 12px; }
.panel { background:var(--card); border:1px solid var(--line); border-radius:12px; padding:16px 20px;
         box-shadow:0 1px 2px rgba(20,25,60,.04); }
table { border-collapse:collapse; width:100%; }
th, td { text-align:left; padding:8px 10px; border-bottom:1px solid var(--line); vertical-align:top; }
th { font-size:12px; text-transform:uppercase; letter-spacing:.5px; color:var(--muted); font-weight:600; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
td.big { font-size:20px; font-weight:650; }
.dir { font-size:12px; color:var(--muted); }
.muted { color:var(--muted); }
.best { font-weight:700; color:var(--good); }
.paper td { color:var(--muted); font-style:italic; }
.hists { display:grid; grid-template-columns:repeat(auto-fill,minmax(300px,1fr)); gap:16px; }
.hist h3 { margin:0 0 4px; font-size:15px; }
.hist svg { width:100%; height:auto; display:block; }
.controls { display:flex; flex-wrap:wrap; align-items:center; gap:10px; margin-bottom:14px; }
.controls select, .controls button { font:inherit; padding:5px 10px; border:1px solid var(--line); border-radius:8px; background:#fff; cursor:pointer; }
.controls .count { margin-left:auto; color:var(--muted); font-size:13px; }
.cards { display:grid; grid-template-columns:repeat(auto-fill,minmax(380px,1fr)); gap:18px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:12px; overflow:hidden; box-shadow:0 1px 3px rgba(20,25,60,.06); }
.card .media { display:grid; grid-template-columns:1fr 1fr; gap:2px; background:#111; }
.card figure { margin:0; position:relative; }
.card figure video, .card figure img { width:100%; display:block; aspect-ratio:var(--aspect,1); object-fit:contain; background:#000; }
.card figcaption { position:absolute; left:6px; top:6px; background:rgba(0,0,0,.55); color:#fff; font-size:11px; padding:1px 7px; border-radius:6px; }
.card .body { padding:10px 14px 12px; }
.card .key { font-size:12px; color:var(--muted); font-family:ui-monospace,Menlo,monospace; }
.card .prompt { margin:2px 0 8px; font-size:14px; }
.values { display:flex; flex-wrap:wrap; gap:6px; }
.value { background:var(--accent-soft); color:#2b2f77; border-radius:7px; padding:2px 8px; font-size:12px; font-variant-numeric:tabular-nums; }
.value b { font-weight:650; }
.value.skip { background:#fdecea; color:var(--bad); }
th.sortable { cursor:pointer; user-select:none; }
th.sortable:hover { color:var(--accent); }
th.sorted-asc::after { content:" \\25B2"; } th.sorted-desc::after { content:" \\25BC"; }
.scroll { max-height:420px; overflow:auto; }
.warn { background:#fff6e0; border:1px solid #f3d27a; border-radius:10px; padding:10px 14px; margin-top:12px; }
code { font-family:ui-monospace,Menlo,monospace; font-size:13px; }
footer { color:var(--muted); font-size:12px; text-align:center; padding:20px; }
"""

JS = """
(function () {
  const cards = document.getElementById('cards');
  const table = document.getElementById('videotable');
  const select = document.getElementById('sortkey');
  const button = document.getElementById('sortdir');
  if (!cards || !select) return;
  let direction = 'desc';
  function keyOf(el, key) {
    const v = el.getAttribute('data-' + key);
    if (key === 'key') return v;
    return (v === null || v === '') ? null : parseFloat(v);
  }
  function compare(key) {
    return function (a, b) {
      const x = keyOf(a, key), y = keyOf(b, key);
      if (x === y) return 0;
      if (x === null) return 1;
      if (y === null) return -1;
      const order = (typeof x === 'string') ? x.localeCompare(y) : x - y;
      return direction === 'asc' ? order : -order;
    };
  }
  function apply(key) {
    const sorter = compare(key);
    Array.from(cards.children).sort(sorter).forEach(el => cards.appendChild(el));
    if (table) {
      const body = table.tBodies[0];
      Array.from(body.rows).sort(sorter).forEach(row => body.appendChild(row));
      table.querySelectorAll('th.sortable').forEach(th => {
        th.classList.remove('sorted-asc', 'sorted-desc');
        if (th.dataset.sort === key) th.classList.add('sorted-' + direction);
      });
    }
    select.value = key;
    button.textContent = direction === 'asc' ? 'ascending \\u2191' : 'descending \\u2193';
    document.body.dataset.sortedBy = key + ':' + direction;
  }
  select.addEventListener('change', () => apply(select.value));
  button.addEventListener('click', () => { direction = direction === 'asc' ? 'desc' : 'asc'; apply(select.value); });
  if (table) table.querySelectorAll('th.sortable').forEach(th => th.addEventListener('click', () => {
    direction = (select.value === th.dataset.sort && direction === 'desc') ? 'asc' : 'desc';
    apply(th.dataset.sort);
  }));
  document.querySelectorAll('video').forEach(video => {
    const fallback = () => {
      const img = document.createElement('img');
      img.src = video.dataset.gif; img.alt = video.getAttribute('aria-label') || '';
      video.replaceWith(img);
    };
    const source = video.querySelector('source');
    if (source) source.addEventListener('error', fallback);
    if (video.canPlayType('video/mp4; codecs="avc1.42E01E"') === '') fallback();
  });
  // play only the videos on screen: a report of a thousand videos must not decode them all at once
  const videos = document.querySelectorAll('video');
  if ('IntersectionObserver' in window) {
    const watcher = new IntersectionObserver(entries => entries.forEach(entry => {
      const video = entry.target;
      if (entry.isIntersecting) { const p = video.play(); if (p) p.catch(() => {}); } else { video.pause(); }
    }), { rootMargin: '200px' });
    videos.forEach(video => watcher.observe(video));
  } else {
    videos.forEach(video => { video.autoplay = true; });
  }
  const params = new URLSearchParams(location.hash.slice(1));
  if (params.get('dir') === 'asc' || params.get('dir') === 'desc') direction = params.get('dir');
  apply(params.get('sort') || select.value);
})();
"""
