// report.html's script: draws the figures (plotly, inline) and runs the per-item drill-down over
// window.RADAR_ITEMS (radar_tasks/analysis/drilldown.py says what it holds). Plain DOM, no other library.
(function () {
  "use strict";
  const el = (id) => document.getElementById(id);
  const make = (tag, text, cls) => {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = text;
    if (cls) node.className = cls;
    return node;
  };
  const fmt = (v, d) => (v === null || v === undefined ? "–" : v.toFixed(d === undefined ? 3 : d));

  // ------------------------------------------------------------------------------------------------ figures
  const figures = JSON.parse(el("radar-figures").textContent);
  for (const div of document.querySelectorAll("[data-figure]")) {
    const fig = figures[div.dataset.figure];
    if (fig) Plotly.newPlot(div, fig.data, fig.layout || {}, { responsive: true, displaylogo: false });
  }

  // ------------------------------------------------------------------------------------------------ items
  const D = window.RADAR_ITEMS;
  const note = el("items-note");
  if (!D || !D.items || !D.items.length) {
    note.textContent = D
      ? "No per-item logs in these runs: evaluate with --log_samples (radar-tasks sweep --log_samples) to see items here."
      : "The drill-down data did not load: keep " + (document.querySelector("script[src]") || {}).src + " beside this page.";
    el("items-app").hidden = true;
    return;
  }
  note.textContent = D.items.length + " items of the per-item logs; images: " + D.images.note + ".";
  const PAGE = 200;
  const state = { series: 0, subset: "", category: "", text: "", shown: PAGE, selected: null };
  const runsOf = () => D.series[state.series].runs;

  const fill = (select, values, all) => {
    select.replaceChildren();
    if (all) select.appendChild(new Option(all, ""));
    for (const [value, text] of values) select.appendChild(new Option(text, value));
  };
  fill(el("items-series"), D.series.map((s, i) => [i, s.name + " (" + s.runs.length + " checkpoints)"]));
  el("items-series-label").hidden = D.series.length < 2;
  const subsets = [...new Set(D.items.map((it) => it.subset))];
  fill(el("items-subset"), subsets.map((s) => [s, s]), "all subsets");
  const fillCategories = () => {
    const cats = [...new Set(D.items.filter((it) => !state.subset || it.subset === state.subset).map((it) => it.category))];
    fill(el("items-category"), cats.sort().map((c) => [c, c]), "all categories");
  };
  const fillFlips = () => {
    const runs = runsOf().map((r) => [r, D.runs[r].label]);
    fill(el("flip-a"), runs);
    fill(el("flip-b"), runs);
    el("flip-a").value = String(runsOf()[0]);
    el("flip-b").value = String(runsOf()[runsOf().length - 1]);
  };
  fillCategories();
  fillFlips();

  const matching = () => {
    const text = state.text.trim().toLowerCase();
    return D.items
      .map((it, i) => i)
      .filter((i) => {
        const it = D.items[i];
        if (state.subset && it.subset !== state.subset) return false;
        if (state.category && it.category !== state.category) return false;
        if (!text) return true;
        return (
          it.id.toLowerCase().includes(text) ||
          it.task.toLowerCase().includes(text) ||
          it.q.toLowerCase().includes(text) ||
          it.c.some((c) => c.toLowerCase().includes(text))
        );
      });
  };

  const renderTable = () => {
    const found = matching();
    const runs = runsOf();
    el("items-count").textContent = found.length + " of " + D.items.length + " items";
    const head = el("items-table").tHead;
    head.replaceChildren();
    const hr = head.insertRow();
    for (const h of ["id", "subset / category", ...runs.map((r) => "p " + D.runs[r].label), "correct from"]) {
      hr.appendChild(make("th", h));
    }
    const body = el("items-table").tBodies[0];
    body.replaceChildren();
    for (const i of found.slice(0, state.shown)) {
      const it = D.items[i];
      const tr = body.insertRow();
      tr.className = "item-row" + (state.selected === i ? " selected" : "");
      tr.dataset.index = i;
      tr.appendChild(make("td", it.id));
      tr.appendChild(make("td", it.subset === it.category ? it.subset : it.subset + " / " + it.category));
      for (const r of runs) {
        const p = it.p[r];
        const ok = it.ok[r];
        const cell = make("td", ok === null ? "–" : (p ? fmt(p[it.gold]) : "not scored") + (ok ? " ✓" : " ✗"));
        cell.className = ok ? "ok" : ok === 0 ? "wrong" : "";
        tr.appendChild(cell);
      }
      const learned = it.learned[state.series];
      tr.appendChild(make("td", learned === null ? "–" : D.runs[learned].label));
      tr.addEventListener("click", () => showItem(i));
    }
    el("items-more").hidden = found.length <= state.shown;
    renderFlips(found);
  };

  const itemLink = (i) => {
    const it = D.items[i];
    const li = make("li");
    const a = make("a", it.task + " / " + it.id);
    a.dataset.index = i;
    a.addEventListener("click", () => showItem(i));
    li.appendChild(a);
    return li;
  };

  const renderFlips = (found) => {
    const a = Number(el("flip-a").value);
    const b = Number(el("flip-b").value);
    const gained = found.filter((i) => D.items[i].ok[a] === 0 && D.items[i].ok[b] === 1);
    const lost = found.filter((i) => D.items[i].ok[a] === 1 && D.items[i].ok[b] === 0);
    for (const [id, list] of [["flips-gained", gained], ["flips-lost", lost]]) {
      el(id + "-count").textContent = list.length;
      el(id).replaceChildren(...list.slice(0, 500).map(itemLink));
    }
  };

  const showItem = (i) => {
    state.selected = i;
    for (const tr of document.querySelectorAll("tr.item-row")) {
      tr.classList.toggle("selected", Number(tr.dataset.index) === i);
    }
    const it = D.items[i];
    const runs = runsOf();
    const box = el("item-detail");
    box.replaceChildren();
    box.appendChild(make("h3", it.task + " / " + it.id));
    box.appendChild(make("p", [it.subset, it.category, it.ability].filter(Boolean).join(" · "), "muted"));
    const pics = make("div", null, "detail-images");
    for (const k of it.img) {
      const src = D.srcs[k];
      if (src === null) {
        pics.appendChild(make("span", "(image file not found)", "muted"));
        continue;
      }
      const img = make("img");
      img.src = src;
      img.alt = "image " + (k + 1);
      if (D.images.mode === "linked") {
        const a = make("a");
        a.href = src;
        a.target = "_blank";
        a.appendChild(img);
        pics.appendChild(a);
      } else pics.appendChild(img);
    }
    box.appendChild(pics);
    box.appendChild(make("div", it.q || "(no prompt in the per-item log)", "detail-question"));
    const learned = it.learned[state.series];
    const last = runs[runs.length - 1];
    box.appendChild(
      make(
        "p",
        learned === null
          ? "Not answered correctly at the last checkpoint (" + D.runs[last].label + ")."
          : "Answered correctly from " + D.runs[learned].label + " on.",
        null
      )
    ).id = "item-learned";
    const table = make("table", null, "data");
    table.id = "item-candidates";
    const hr = table.createTHead().insertRow();
    for (const h of ["candidate", ...runs.map((r) => D.runs[r].label)]) hr.appendChild(make("th", h));
    const body = table.createTBody();
    it.c.forEach((c, k) => {
      const tr = body.insertRow();
      tr.className = "candidate" + (k === it.gold ? " gold" : "");
      tr.appendChild(make("td", c + (k === it.gold ? " (correct)" : "")));
      for (const r of runs) tr.appendChild(make("td", it.p[r] ? fmt(it.p[r][k]) : "–"));
    });
    box.appendChild(table);
    const chart = make("div");
    chart.id = "item-chart";
    box.appendChild(chart);
    const x = runs.map((r) => D.runs[r].label);
    const traces = it.c.map((c, k) => ({
      x: x,
      y: runs.map((r) => (it.p[r] ? it.p[r][k] : null)),
      name: c.length > 40 ? c.slice(0, 37) + "..." : c,
      mode: "lines+markers",
      line: { width: k === it.gold ? 3 : 1 },
      hovertemplate: "%{x}: %{y:.4f}<extra>" + (k === it.gold ? "correct" : "distractor") + "</extra>",
    }));
    traces.push({
      x: x,
      y: x.map(() => 1 / it.c.length),
      name: "chance 1/K",
      mode: "lines",
      line: { dash: "dot", color: "grey", width: 1 },
      hoverinfo: "skip",
    });
    Plotly.newPlot(
      chart,
      traces,
      {
        height: 280,
        margin: { l: 50, r: 10, t: 30, b: 40 },
        title: { text: "probability of each candidate (bold: correct)", font: { size: 12 } },
        yaxis: { range: [0, 1], title: "p" },
        legend: { font: { size: 10 } },
      },
      { displaylogo: false, responsive: true }
    );
  };

  el("items-series").addEventListener("change", (e) => {
    state.series = Number(e.target.value);
    fillFlips();
    renderTable();
  });
  el("items-subset").addEventListener("change", (e) => {
    state.subset = e.target.value;
    state.category = "";
    fillCategories();
    state.shown = PAGE;
    renderTable();
  });
  el("items-category").addEventListener("change", (e) => {
    state.category = e.target.value;
    state.shown = PAGE;
    renderTable();
  });
  el("items-search").addEventListener("input", (e) => {
    state.text = e.target.value;
    state.shown = PAGE;
    renderTable();
  });
  el("items-more").addEventListener("click", () => {
    state.shown += PAGE;
    renderTable();
  });
  el("flip-a").addEventListener("change", () => renderFlips(matching()));
  el("flip-b").addEventListener("change", () => renderFlips(matching()));
  renderTable();
})();
