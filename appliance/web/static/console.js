// Operator console: live images, live figures, alarm banner, chart refresh, review keys.
// No framework, no build step, no inline script (the CSP forbids it). Pages work without it;
// this only keeps them current and adds keyboard shortcuts.
"use strict";

(function () {
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const STALE_MS = 3000;

  async function getJSON(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (response.status === 401) { window.location.assign("/login?next=" + encodeURIComponent(location.pathname)); }
    if (!response.ok) { throw new Error(url + ": " + response.status); }
    return response.json();
  }

  function setText(root, field, text) {
    const el = root.querySelector('[data-field="' + field + '"]');
    if (el && el.textContent !== text) { el.textContent = text; }
    return el;
  }

  // --- live images: long-poll each camera for the next judged frame --------------------------
  function liveCamera(img) {
    const camera = img.dataset.liveCamera;
    const card = img.closest("[data-camera]");
    let version = null;
    let lastNew = Date.now();
    let url = null;
    async function next() {
      if (document.hidden) { setTimeout(next, 500); return; }
      const query = version === null ? "?wait=5" : "?wait=5&after=" + version;
      try {
        const response = await fetch("/api/live/" + encodeURIComponent(camera) + ".jpg" + query, { credentials: "same-origin" });
        if (response.ok) {
          const v = response.headers.get("X-Frame-Version");
          if (v !== String(version)) {
            const blob = await response.blob();
            const fresh = URL.createObjectURL(blob);
            img.src = fresh;
            if (url) { URL.revokeObjectURL(url); }
            url = fresh;
            version = v;
            lastNew = Date.now();
            img.dataset.version = v;
            img.dataset.part = response.headers.get("X-Part-Id") || "";
            // The tile shows the verdict of the very frame on screen, never a neighbour's.
            renderTile(card, {
              verdict: response.headers.get("X-Verdict"),
              part_id: response.headers.get("X-Part-Id"),
              defect_class: response.headers.get("X-Defect-Class"),
              confidence: Number(response.headers.get("X-Confidence")),
              tier: response.headers.get("X-Tier"),
              provisional: response.headers.get("X-Provisional") === "1",
            });
            const waiting = card && card.querySelector('[data-field="waiting"]');
            if (waiting) { waiting.remove(); }
          }
        } else if (response.status === 401) {
          window.location.assign("/login?next=/");
          return;
        } else {
          await new Promise((r) => setTimeout(r, 1000));
        }
      } catch (e) {
        await new Promise((r) => setTimeout(r, 1000));
      }
      const stale = Date.now() - lastNew > STALE_MS;
      img.classList.toggle("is-stale", stale);
      const badge = card && card.querySelector('[data-field="stale"]');
      if (badge) { badge.hidden = !stale; }
      setTimeout(next, 0);
    }
    next();
  }

  // --- live figures: verdict tiles, shift counters, last verdicts -----------------------------
  function pct(v) { return v === null || v === undefined ? "-" : (100 * v).toFixed(1) + " %"; }
  function num(v) { return v === null || v === undefined ? "-" : Number(v).toLocaleString("en-US"); }
  function clock(ms) { const d = new Date(ms); return d.toTimeString().slice(0, 8); }
  function badge(verdict, provisional) {
    const span = document.createElement("span");
    span.className = "badge " + verdict;
    span.textContent = (verdict === "pass" ? "✓ " : verdict === "fail" ? "✗ " : "! ") + verdict.toUpperCase();
    const out = document.createDocumentFragment();
    out.appendChild(span);
    if (provisional) {
      const p = document.createElement("span");
      p.className = "badge provisional";
      p.textContent = "provisional";
      out.appendChild(document.createTextNode(" "));
      out.appendChild(p);
    }
    return out;
  }

  function renderTile(card, c) {
    if (!card || !c.verdict) { return; }
    const tile = card.querySelector('[data-field="tile"]');
    tile.className = "verdict-tile " + c.verdict;
    tile.href = "/results/" + encodeURIComponent(c.part_id);
    setText(card, "icon", c.verdict === "pass" ? "✓" : c.verdict === "fail" ? "✗" : "!");
    setText(card, "word", c.verdict.toUpperCase());
    setText(card, "cls", c.defect_class || "");
    setText(card, "detail", Math.round(c.confidence * 100) + " % sure · tier " + c.tier + (c.provisional ? " · provisional" : ""));
    setText(card, "part", c.part_id);
  }

  function renderLive(state) {
    for (const [id, c] of Object.entries(state.cameras)) {
      const card = document.querySelector('[data-camera="' + CSS.escape(id) + '"]');
      if (!card) { continue; }
      setText(card, "fps", (c.fps_processed === null || c.fps_processed === undefined ? "-" : c.fps_processed.toFixed(1)) + " fps");
      if (!card.querySelector("img[data-live-camera]")) { renderTile(card, c); }
    }
    for (const [line, s] of Object.entries(state.shift.lines)) {
      const panel = document.querySelector('.shift[data-line="' + CSS.escape(line) + '"]');
      if (!panel) { continue; }
      setText(panel, "yield", pct(s.yield));
      setText(panel, "pass", num(s.pass));
      setText(panel, "fail", num(s.fail));
      setText(panel, "error", num(s.error));
      const top = s.classes.slice(0, 4).map((c) => c.class + " " + c.count).join(" · ");
      setText(panel, "classes", top ? "Top defects: " + top : "No defects this shift.");
    }
    const body = document.getElementById("recent");
    if (body) {
      const rows = state.recent.map((r) => {
        const tr = document.createElement("tr");
        const cells = [null, r.camera, null, r.defect_class || ""];
        cells.forEach((text, i) => {
          const td = document.createElement("td");
          if (i === 0) {
            const a = document.createElement("a"); a.href = "/results/" + encodeURIComponent(r.part_id); a.textContent = clock(r.ts_capture_ms); td.appendChild(a);
          } else if (i === 2) {
            td.appendChild(badge(r.verdict, r.provisional));
            if (r.revision) { const m = document.createElement("span"); m.className = "muted"; m.textContent = " rev " + r.revision; td.appendChild(m); }
          } else { td.textContent = text; }
          tr.appendChild(td);
        });
        return tr;
      });
      body.replaceChildren(...rows);
    }
    renderAlarms(state.alarms);
  }

  function renderAlarms(alarms) {
    const box = document.getElementById("alarms");
    if (!box) { return; }
    const items = alarms.map((a) => {
      const div = document.createElement("div");
      div.className = "alarm " + a.severity;
      const strong = document.createElement("strong");
      strong.textContent = a.severity === "alarm" ? "ALARM" : "WARNING";
      div.appendChild(strong);
      div.appendChild(document.createTextNode(" " + a.message));
      return div;
    });
    box.replaceChildren(...items);
  }

  function poll(fn, ms) {
    async function tick() {
      if (!document.hidden) { try { await fn(); } catch (e) { /* keep polling */ } }
      setTimeout(tick, ms);
    }
    tick();
  }

  // --- review keys: G good, D / 1-9 defect class, S skip ---------------------------------------
  function reviewKeys() {
    document.addEventListener("keydown", (event) => {
      if (event.ctrlKey || event.metaKey || event.altKey) { return; }
      const tag = (event.target.tagName || "").toLowerCase();
      if (tag === "input" || tag === "textarea" || tag === "select") { return; }
      const key = event.key.toLowerCase();
      const target = document.querySelector('[data-key="' + CSS.escape(key) + '"], [data-key2="' + CSS.escape(key) + '"]');
      if (target) { event.preventDefault(); target.click(); }
    });
  }

  // --- every fetch-based change carries the CSRF token ------------------------------------------
  window.applianceFetch = function (url, options) {
    const opts = Object.assign({ credentials: "same-origin" }, options || {});
    opts.headers = Object.assign({ "X-CSRF-Token": csrf }, opts.headers || {});
    return fetch(url, opts);
  };

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("img[data-live-camera]").forEach(liveCamera);
    if (document.querySelector("[data-live]")) {
      poll(async () => renderLive(await getJSON("/api/live")), 1000);
    } else if (document.querySelector('#alarms[data-poll="1"]')) {
      poll(async () => renderAlarms(await getJSON("/api/alarms")), 5000);
    }
    document.querySelectorAll("img[data-refresh]").forEach((img) => {
      const base = img.src.split("&t=")[0];
      setInterval(() => { if (!document.hidden) { img.src = base + "&t=" + Date.now(); } }, 1000 * Number(img.dataset.refresh));
    });
    if (document.querySelector("[data-keys]")) { reviewKeys(); }
  });
})();
