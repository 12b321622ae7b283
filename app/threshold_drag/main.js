// A histogram with its threshold as a draggable handle: a Streamlit component (v1 protocol,
// spoken by hand: componentReady -> render(args) -> setComponentValue / setFrameHeight).
// The share pruned shown at the handle is read from the cached bins (no model work); the
// value goes back to Python on release (mouse) or after a short pause (keyboard).
"use strict";
(function () {
  const KEPT = "#2f6fde", PRUNED = "#e4572e", LINE = "#b8321a";
  const gd = document.getElementById("plot");
  const handle = document.getElementById("handle");
  const label = document.getElementById("label");
  let args = null, argsKey = null, x = 0, dragging = false, keyTimer = null, drawn = false;
  let idle = true; // the handle shows what Python sent (its value, at its threshold `at`) until moved

  function post(type, data) {
    window.parent.postMessage(Object.assign({ isStreamlitMessage: true, type: type }, data), "*");
  }

  // --- the bins: share of values in the pruned interval ((-t, t) or (-inf, t)) ----------
  function share(t) {
    const e = args.edges, c = args.counts;
    let pruned = 0, total = 0;
    for (let i = 0; i < c.length; i++) {
      const a = e[i], b = e[i + 1], w = b - a;
      total += c[i];
      const lo = args.symmetric ? Math.max(a, -t) : a, hi = Math.min(b, t);
      if (hi > lo && w > 0) pruned += c[i] * (hi - lo) / w;
    }
    return total > 0 ? pruned / total : 0;
  }
  function tMin() { return args.symmetric ? 0 : args.edges[0]; }
  function tMax() {
    const e = args.edges;
    return args.symmetric ? Math.max(Math.abs(e[0]), Math.abs(e[e.length - 1])) : e[e.length - 1];
  }
  function xForShare(s) { // the smallest threshold pruning share s (bisection: share is monotone)
    let lo = tMin(), hi = tMax();
    for (let k = 0; k < 60; k++) { const m = (lo + hi) / 2; if (share(m) < s) lo = m; else hi = m; }
    return hi;
  }
  function xLimit() { return args.mode === "share" ? xForShare(args.vmax) : Math.min(args.vmax, tMax()); }
  function clampX(v) { return Math.max(tMin(), Math.min(xLimit(), v)); }
  function snapEdges() { return args.edges.filter(v => v >= tMin() - 1e-12); }
  function snapX(v) {
    if (!args.snap) return v;
    let best = v, d = Infinity;
    for (const edge of snapEdges()) { const dd = Math.abs(edge - v); if (dd < d) { d = dd; best = edge; } }
    return best;
  }
  function roundTo(v, step) { return step > 0 ? Math.round(v / step) * step : v; }
  function valueOf(xx) { return args.mode === "share" ? share(xx) : xx; }
  function sent(xx) { return Math.min(args.vmax, Math.max(0, roundTo(valueOf(xx), args.step))); }

  // --- drawing -------------------------------------------------------------------------
  function fmt(v) { return v === 0 ? "0" : Math.abs(v) >= 1e-3 && Math.abs(v) < 1e4 ? v.toPrecision(4) : v.toExponential(3); }
  function pct(s) { return (100 * s).toFixed(1) + "%"; }
  function traces(xx) {
    const e = args.edges, c = args.counts, kept = [], pruned = [], centers = [];
    for (let i = 0; i < c.length; i++) {
      const m = (e[i] + e[i + 1]) / 2, p = args.symmetric ? Math.abs(m) < xx : m < xx;
      centers.push(m); kept.push(p ? null : c[i]); pruned.push(p ? c[i] : null);
    }
    return { centers: centers, kept: kept, pruned: pruned };
  }
  function shapes(xx) {
    const lo = args.edges[0], out = [{ type: "rect", xref: "x", yref: "paper", x0: args.symmetric ? -xx : lo,
      x1: xx, y0: 0, y1: 1, fillcolor: PRUNED, opacity: 0.1, line: { width: 0 }, layer: "below" }];
    for (const v of (args.symmetric ? [-xx, xx] : [xx])) {
      out.push({ type: "line", xref: "x", yref: "paper", x0: v, x1: v, y0: 0, y1: 1,
        line: { color: LINE, width: 2, dash: "dash" } });
    }
    return out;
  }
  function layout(xx) {
    return {
      margin: { l: 56, r: 16, t: 26, b: 40 }, height: args.height, dragmode: false, barmode: "overlay",
      bargap: 0, showlegend: true, hovermode: "x",
      legend: { orientation: "h", x: 0, y: 1.02, xanchor: "left", yanchor: "bottom", font: { size: 11 } },
      xaxis: { title: { text: args.x_title, font: { size: 12 } }, fixedrange: true, range: [args.edges[0],
        args.edges[args.edges.length - 1]], zeroline: false },
      yaxis: { title: { text: args.log ? "count (log)" : "count", font: { size: 12 } }, fixedrange: true,
        type: args.log ? "log" : "linear" },
      shapes: shapes(xx), paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "#fafbfc",
      font: { family: "Inter, system-ui, sans-serif", size: 11, color: "#31333f" },
    };
  }
  function draw() {
    const tr = traces(x), w = args.edges[1] - args.edges[0];
    const hov = "%{x:.4g}: %{y:,} " + args.noun + "<extra>";
    const data = [
      { type: "bar", x: tr.centers, y: tr.kept, width: w, name: "kept", marker: { color: KEPT },
        hovertemplate: hov + "kept</extra>" },
      { type: "bar", x: tr.centers, y: tr.pruned, width: w, name: "pruned", marker: { color: PRUNED },
        hovertemplate: hov + "pruned</extra>" },
    ];
    const config = { displayModeBar: false, responsive: true, doubleClick: false, scrollZoom: false };
    (drawn ? Plotly.react : Plotly.newPlot)(gd, data, layout(x), config).then(place);
    drawn = true;
  }
  function move(xx) { // a redraw of the colours and the line only (the bins stay)
    x = xx; idle = false;
    const tr = traces(x);
    Plotly.update(gd, { y: [tr.kept, tr.pruned] }, { shapes: shapes(x) }, [0, 1]);
    place();
  }
  function place() {
    const fl = gd._fullLayout;
    if (!fl || !fl._size) return;
    const s = fl._size, r = fl.xaxis.range;
    const px = s.l + (x - r[0]) / (r[1] - r[0]) * s.w;
    handle.style.left = px + "px";
    handle.style.top = s.t + "px";
    handle.style.height = s.h + "px";
    const v = idle ? args.value : valueOf(x), sh = idle && args.mode === "share" ? args.value : share(x);
    const cut = args.symmetric ? "|" + args.unit.replace(/\|/g, "") + "| < " : args.unit + " < ";
    label.textContent = args.mode === "share"
      ? pct(v) + " of " + args.noun + " pruned · " + cut + fmt(x)
      : cut + fmt(x) + " · " + pct(sh) + " of " + args.noun + " pruned";
    // right of the handle if the label fits there, else left of it, else as far right as it fits
    const room = gd.getBoundingClientRect().width, lw = label.offsetWidth;
    const left = px + 18 + lw <= room ? 18 : (px - 18 - lw >= 0 ? -18 - lw : Math.max(-px, room - px - lw - 2));
    label.style.left = (left + 8) + "px"; // the handle's box starts 8 px left of the line
    label.style.top = Math.abs(left) === 18 || left === -18 - lw ? "-2px" : "16px"; // over the line: below the knob
    handle.setAttribute("aria-valuemin", "0");
    handle.setAttribute("aria-valuemax", String(args.vmax));
    handle.setAttribute("aria-valuenow", String(v));
    handle.setAttribute("aria-valuetext", label.textContent);
    handle.dataset.share = String(sh);
    handle.dataset.value = String(v);
  }
  function send() {
    post("streamlit:setComponentValue", { value: { value: sent(x), seq: Date.now() + Math.random(),
      id: args.id }, dataType: "json" });
  }

  // --- mouse: press anywhere over the plot area, drag, release sends -------------------
  function xAt(clientX) {
    const fl = gd._fullLayout, s = fl._size, r = fl.xaxis.range, box = gd.getBoundingClientRect();
    return r[0] + (clientX - box.left - s.l) / s.w * (r[1] - r[0]);
  }
  function inPlot(ev) {
    const fl = gd._fullLayout, box = gd.getBoundingClientRect();
    if (!fl || !fl._size) return false;
    const px = ev.clientX - box.left, py = ev.clientY - box.top, s = fl._size;
    return px >= s.l - 10 && px <= s.l + s.w + 10 && py >= s.t - 16 && py <= s.t + s.h;
  }
  document.getElementById("wrap").addEventListener("mousedown", function (ev) {
    if (!args || args.disabled || ev.button !== 0 || !inPlot(ev)) return;
    ev.preventDefault(); ev.stopPropagation();
    dragging = true; handle.classList.add("dragging"); handle.focus();
    move(clampX(snapX(xAt(ev.clientX))));
  }, true);
  window.addEventListener("mousemove", function (ev) {
    if (dragging) { ev.preventDefault(); move(clampX(snapX(xAt(ev.clientX)))); }
  });
  window.addEventListener("mouseup", function () {
    if (!dragging) return;
    dragging = false; handle.classList.remove("dragging");
    send();
  });

  // --- keyboard: arrows fine, Page Up / Down coarse, Home / End; sent after a pause ----
  function stepped(dir, coarse) {
    const n = coarse ? 10 : 1;
    if (args.snap) {
      const edges = snapEdges(), i = edges.findIndex(v => v >= x - 1e-12);
      const j = Math.max(0, Math.min(edges.length - 1, (i < 0 ? edges.length - 1 : i) + dir * n));
      return edges[j];
    }
    if (args.mode === "share") {
      const s = Math.max(0, Math.min(args.vmax, roundTo(share(x), args.step) + dir * n * args.step));
      return xForShare(s);
    }
    return roundTo(x, args.step) + dir * n * args.step;
  }
  handle.addEventListener("keydown", function (ev) {
    if (!args || args.disabled) return;
    const k = ev.key;
    let nx = null;
    if (k === "ArrowRight" || k === "ArrowUp") nx = stepped(1, false);
    else if (k === "ArrowLeft" || k === "ArrowDown") nx = stepped(-1, false);
    else if (k === "PageUp") nx = stepped(1, true);
    else if (k === "PageDown") nx = stepped(-1, true);
    else if (k === "Home") nx = tMin();
    else if (k === "End") nx = xLimit();
    if (nx === null) return;
    ev.preventDefault();
    clearTimeout(keyTimer);
    handle.classList.add("keying");
    move(clampX(nx));
  });
  handle.addEventListener("keyup", function () {
    if (!handle.classList.contains("keying")) return;
    clearTimeout(keyTimer);
    keyTimer = setTimeout(function () { handle.classList.remove("keying"); send(); }, 300);
  });

  // --- Streamlit ------------------------------------------------------------------------
  window.addEventListener("message", function (ev) {
    const d = ev.data;
    if (!d || d.type !== "streamlit:render") return;
    const a = Object.assign({}, d.args, { disabled: !!d.disabled });
    const key = JSON.stringify(a);
    const busy = dragging || handle.classList.contains("keying");
    if (key === argsKey || busy) { if (!busy) place(); return; }
    args = a; argsKey = key;
    idle = true;
    x = a.at !== null && a.at !== undefined && isFinite(a.at) ? Math.max(tMin(), Math.min(tMax(), a.at))
      : clampX(a.mode === "share" ? (a.value > 0 ? xForShare(a.value) : tMin()) : a.value);
    draw();
    post("streamlit:setFrameHeight", { height: a.height });
  });
  window.addEventListener("resize", function () { if (drawn) Plotly.Plots.resize(gd).then(place); });
  post("streamlit:componentReady", { apiVersion: 1 });
})();
