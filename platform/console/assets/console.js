// The console's script: live parts over Server-Sent Events, confirmations,
// and every change through the JSON API with the session's CSRF token.
// Text comes from the page (the catalogue); nothing is built from HTML
// strings except the server's own rendered, escaped fragments.
"use strict";
(function () {
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
  const meta = (n) => { const m = $('meta[name="' + n + '"]'); return m ? m.content : ""; };
  const lang = meta("lang") || "zh-CN";
  const texts = (() => { try { return JSON.parse($("#texts").textContent); } catch (e) { return {}; } })();
  const T = (k, vars) => {
    let s = texts[k] || k;
    for (const [n, v] of Object.entries(vars || {})) s = s.split("{" + n + "}").join(String(v));
    return s;
  };

  function flash(message, kind) {
    const f = $("#flash");
    if (!f) { alert(message); return; }
    f.textContent = message;
    f.className = kind || "ok";
    f.hidden = false;
    clearTimeout(flash.timer);
    flash.timer = setTimeout(() => { f.hidden = true; }, 8000);
  }

  class ApiError extends Error {
    constructor(body, status) {
      super((lang === "en" ? body.message : body.message_zh) || body.message || String(status));
      this.field = body.field; this.status = status; this.code = body.error;
    }
  }

  async function api(method, url, body) {
    const headers = { "X-CSRF-Token": meta("csrf") };
    let payload;
    if (body !== undefined) { headers["Content-Type"] = "application/json"; payload = JSON.stringify(body); }
    let r;
    try { r = await fetch(url, { method, headers, body: payload, credentials: "same-origin" }); }
    catch (e) { throw new ApiError({ message: T("network"), message_zh: T("network") }, 0); }
    const text = await r.text();
    let json = {};
    try { json = text ? JSON.parse(text) : {}; } catch (e) { json = { message: text, message_zh: text }; }
    if (!r.ok) throw new ApiError(json, r.status);
    return json;
  }

  function showError(e, form) {
    if (form && e.field) {
      const p = $('.field-error[data-field="' + e.field + '"]', form);
      if (p) { p.textContent = e.message; p.hidden = false; const i = form.elements[e.field]; if (i && i.focus) i.focus(); }
    }
    flash(T("failed") + e.message, "error");
  }

  function clearErrors(form) { $$(".field-error", form).forEach((p) => { p.hidden = true; p.textContent = ""; }); }

  // One confirmation dialog for everything; `word` asks the person to type it.
  function confirmDialog(text, word) {
    const d = $("#confirm");
    if (!d || !d.showModal) return Promise.resolve(window.confirm(text));
    $("#confirm-text").textContent = text;
    const typed = $("#confirm-typed"), input = $("#confirm-input");
    typed.hidden = !word;
    input.value = "";
    if (word) $("#confirm-typed-label").textContent = T("type_to_confirm", { word });
    return new Promise((resolve) => {
      d.addEventListener("close", function once() {
        d.removeEventListener("close", once);
        if (d.returnValue !== "ok") return resolve(false);
        if (word && input.value.trim() !== word) { flash(T("typed_wrong"), "error"); return resolve(false); }
        resolve(true);
      });
      d.returnValue = "";
      d.showModal();
      (word ? input : $("#confirm-ok")).focus();
    });
  }

  // Live parts: replaced by the server's rendered fragment on each change.
  function live() {
    $$("[data-stream]").forEach((el) => {
      const state = $("#live-state");
      const es = new EventSource(el.dataset.stream);
      es.addEventListener(el.dataset.event, (e) => {
        el.innerHTML = e.data;
        el.dispatchEvent(new CustomEvent("live-update", { bubbles: true }));
        if (state) { state.textContent = state.dataset.ok; state.classList.add("ok"); }
      });
      // The terminals page: only the rows that changed, as JSON.
      es.addEventListener(el.dataset.event + "-delta", (e) => {
        const d = JSON.parse(e.data);
        for (const [serial, st, label, volume, since, faults] of d.rows) {
          const tr = el.querySelector('tr[data-serial="' + serial + '"]');
          if (tr) {
            tr.dataset.state = st;
            const pill = tr.querySelector(".state-pill");
            pill.className = "state-pill " + st;
            pill.textContent = label;
            tr.querySelector(".volume").textContent = volume;
            tr.querySelector(".since").textContent = since;
            tr.querySelector(".faults").textContent = faults;
          }
          const dot = el.querySelector('circle[data-serial="' + serial + '"]');
          if (dot) dot.setAttribute("class", "dot " + st);
        }
        for (const [k, n] of Object.entries(d.counts)) {
          const b = el.querySelector('[data-count="' + k + '"]');
          if (b) b.textContent = n;
        }
        el.dispatchEvent(new CustomEvent("live-update", { bubbles: true }));
      });
      es.onerror = () => { if (state) { state.textContent = state.dataset.lost; state.classList.remove("ok"); } };
      es.onopen = () => { if (state) { state.textContent = state.dataset.ok; state.classList.add("ok"); } };
    });
  }

  // The review queue: drafts arrive and leave (decided elsewhere) live;
  // the cards already shown, with any comment being typed, stay as they are.
  function queue() {
    const q = $("[data-queue-stream]");
    if (!q) return;
    const es = new EventSource(q.dataset.queueStream);
    es.addEventListener("review", (e) => {
      const d = JSON.parse(e.data);
      const ids = new Set(d.ids.map(String));
      $$("article[data-draft]", q).forEach((a) => { if (!ids.has(a.dataset.draft)) a.remove(); });
      for (const [id, html] of Object.entries(d.cards)) {
        if ($('article[data-draft="' + id + '"]', q)) continue;
        const t = document.createElement("template");
        t.innerHTML = html;
        q.prepend(t.content);
      }
      $("#queue-empty").hidden = ids.size > 0;
    });
  }

  // Buttons anywhere on a page (also inside live fragments).
  document.addEventListener("click", async (ev) => {
    const b = ev.target.closest("button");
    if (!b) return;
    try {
      if (b.id === "logout") {
        await api("POST", "/api/logout").catch(() => {});
        location.href = "/login";
      } else if (b.dataset.cancel) {
        if (!(await confirmDialog(b.dataset.confirm))) return;
        b.disabled = true;
        await api("POST", "/api/broadcasts/" + b.dataset.cancel + "/cancel", {});
        flash(T("cancelled"));
      } else if (b.dataset.approve) {
        const live = b.dataset.live === "true";
        if (!(await confirmDialog(b.dataset.confirm, live ? T("confirm_word") : null))) return;
        const comment = ($("#comment-" + b.dataset.approve) || {}).value || "";
        b.disabled = true;
        const d = await api("POST", "/api/drafts/" + b.dataset.approve + "/approve", { comment });
        flash(d.state === "published" ? T("published") : T("approved"));
        b.closest("article").classList.add("decided");
      } else if (b.dataset.reject) {
        const c = $("#comment-" + b.dataset.reject);
        if (!c || !c.value.trim()) { flash(T("reject_comment"), "error"); if (c) c.focus(); return; }
        await api("POST", "/api/drafts/" + b.dataset.reject + "/reject", { comment: c.value });
        flash(T("rejected"));
        b.closest("article").classList.add("decided");
      } else if (b.dataset.submit) {
        await api("POST", "/api/drafts/" + b.dataset.submit + "/submit");
        flash(T("submitted"));
        setTimeout(() => location.reload(), 1200);
      } else if (b.dataset.command) {
        if (b.dataset.confirm && !(await confirmDialog(b.dataset.confirm))) return;
        await api("POST", "/api/commands", { terminals: [b.dataset.terminal], action: b.dataset.command });
        flash(T("command_sent"));
      } else if (b.dataset.withdraw) {
        if (!(await confirmDialog(b.dataset.confirm))) return;
        b.disabled = true;
        await api("POST", "/api/programmes/" + b.dataset.withdraw + "/withdraw");
        flash(T("withdrawn"));
        setTimeout(() => location.reload(), 800);
      } else if (b.dataset.lock || b.dataset.unlock) {
        const name = b.dataset.lock || b.dataset.unlock;
        await api("PATCH", "/api/accounts/" + encodeURIComponent(name), { locked: !!b.dataset.lock });
        location.reload();
      } else if (b.dataset.remove) {
        if (!(await confirmDialog(b.dataset.confirm))) return;
        await api("DELETE", "/api/accounts/" + encodeURIComponent(b.dataset.remove));
        location.reload();
      }
    } catch (e) {
      b.disabled = false;
      showError(e);
    }
  });

  function loginPage() {
    const f = $("#login-form");
    if (!f) return;
    f.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const err = $("#login-error");
      err.hidden = true;
      try {
        await api("POST", "/api/login", { name: f.elements.name.value, password: f.elements.password.value });
        location.href = "/";
      } catch (e) {
        err.textContent = e.message;
        err.hidden = false;
        f.elements.password.value = "";
        f.elements.password.focus();
      }
    });
  }

  function setupForm() {
    const f = $("#setup-form");
    if (!f) return;
    f.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      clearErrors(f);
      const name = f.elements.name.value, password = f.elements.password.value;
      try {
        await api("POST", "/api/setup", { code: f.elements.code.value.trim(), name, display_name: f.elements.display_name.value, password });
        await api("POST", "/api/login", { name, password });
        location.href = "/";
      } catch (e) { showError(e, f); }
    });
  }

  function terminalFilters() {
    const state = $("#filter-state"), text = $("#filter-text");
    if (!state) return;
    const apply = () => {
      const s = state.value, q = text.value.trim().toLowerCase();
      $$("table.terminals tbody tr").forEach((tr) => {
        tr.hidden = (s && tr.dataset.state !== s) || (q && !tr.dataset.text.toLowerCase().includes(q));
      });
      $$("svg circle.dot").forEach((c) => { c.classList.toggle("dim", !!s && !c.classList.contains(s)); });
    };
    state.addEventListener("change", apply);
    text.addEventListener("input", apply);
    document.addEventListener("live-update", apply);
    apply();
  }

  function composePage() {
    const f = $("#compose");
    if (!f) return;
    const templates = JSON.parse($("#templates").textContent || "[]");
    const banner = $("#drill-banner");
    const classOf = () => (f.querySelector('input[name="class"]:checked') || {}).value;
    const schedule = $("#schedule"), repeat = $("#repeat");
    const onRepeat = () => {
      const r = repeat.value;
      $("#schedule-fields").hidden = !r;
      $("#weekday-pick").hidden = r !== "weekly";
      $("#last-date-box").hidden = r === "once";
      // A programme's validity is its timetable.
      f.elements.valid_minutes.disabled = !!r;
    };
    const onClass = () => {
      const drill = classOf() === "drill";
      document.body.classList.toggle("drill-mode", drill);
      banner.hidden = !drill;
      // Only daily programming is scheduled; it has no severity.
      schedule.hidden = classOf() !== "daily";
      f.elements.severity.disabled = classOf() === "daily";
      if (schedule.hidden) repeat.value = "";
      onRepeat();
    };
    repeat.addEventListener("change", onRepeat);
    const sourceOf = () => (f.querySelector('input[name="source"]:checked') || {}).value;
    $$('input[name="source"]', f).forEach((r) => r.addEventListener("change", () => {
      $("#source-file").hidden = sourceOf() !== "file";
      $("#source-speak").hidden = sourceOf() !== "speak";
    }));
    $("#speak-preview").addEventListener("click", async () => {
      clearErrors(f);
      const text = f.elements.text.value.trim();
      if (!text) { const p = $('.field-error[data-field="text"]', f); p.textContent = T("no_text"); p.hidden = false; f.elements.text.focus(); return; }
      const b = $("#speak-preview");
      b.disabled = true;
      flash(T("speaking"));
      try {
        const r = await fetch("/api/speech/preview", {
          method: "POST", credentials: "same-origin",
          headers: { "X-CSRF-Token": meta("csrf"), "Content-Type": "application/json" },
          body: JSON.stringify({ text }),
        });
        if (!r.ok) { let body = {}; try { body = await r.json(); } catch (e) { body = {}; } throw new ApiError(body, r.status); }
        const a = $("#speak-audio");
        if (a.src) URL.revokeObjectURL(a.src);
        a.src = URL.createObjectURL(await r.blob());
        a.hidden = false;
        const p = $("#speak-pinyin");
        p.textContent = T("pinyin", { pinyin: r.headers.get("X-Pinyin") || "" });
        p.hidden = false;
        a.focus();
      } catch (e) { showError(e, f); }
      b.disabled = false;
    });
    $$('input[name="class"]', f).forEach((r) => r.addEventListener("change", onClass));
    $("#template").addEventListener("change", (e) => {
      const t = templates[e.target.value];
      if (!t) return;
      f.querySelector('input[name="class"][value="' + t.class + '"]').checked = true;
      f.elements.severity.value = String(t.severity);
      f.elements.event_type.value = t.event_type;
      f.elements.title.value = t.title;
      f.elements.text.value = t.text;
      f.elements.valid_minutes.value = String(t.valid_minutes);
      onClass();
    });
    // A checked area covers those below it: they are shown checked and not sent.
    const boxes = $$('#area-tree input[type="checkbox"]');
    const byCode = new Map(boxes.map((b) => [b.value, b]));
    const covered = (b) => { for (let p = byCode.get(b.dataset.parent); p; p = byCode.get(p.dataset.parent)) if (p.checked) return true; return false; };
    const chosen = () => boxes.filter((b) => b.checked && !covered(b));
    const total = () => {
      const n = chosen().reduce((s, b) => s + Number(b.dataset.terminals || 0), 0);
      const p = $("#area-total");
      p.textContent = p.dataset.template.replace("{n}", n);
      return n;
    };
    boxes.forEach((b) => b.addEventListener("change", () => {
      boxes.forEach((x) => { const c = covered(x); x.disabled = c; if (c) x.checked = true; });
      total();
    }));
    total();
    let draft = null;
    f.addEventListener("submit", (ev) => {
      ev.preventDefault();
      clearErrors(f);
      const speak = sourceOf() === "speak";
      const file = f.elements.audio.files[0];
      if (!speak && !file) { const p = $('.field-error[data-field="audio"]', f); p.textContent = T("no_file"); p.hidden = false; f.elements.audio.focus(); return; }
      const data = new FormData();
      for (const k of ["event_type", "title", "text", "valid_minutes"]) data.append(k, f.elements[k].value);
      if (!f.elements.severity.disabled) data.append("severity", f.elements.severity.value);
      data.append("class", classOf());
      data.append("areas", chosen().map((b) => b.value).join(","));
      if (speak) data.append("speak", "true"); else data.append("audio", file, file.name);
      if (!schedule.hidden && repeat.value) {
        data.append("schedule", repeat.value);
        data.append("times", f.elements.times.value);
        data.append("weekdays", $$('input[name="weekdays"]:checked', f).map((d) => d.value).join(","));
        data.append("first_date", f.elements.first_date.value);
        if (repeat.value !== "once") data.append("last_date", f.elements.last_date.value);
      }
      const up = $("#upload"), bar = $("#upload-progress"), label = $("#upload-text");
      up.hidden = false; bar.value = 0;
      $("#save").disabled = true;
      const xhr = new XMLHttpRequest();
      xhr.open("POST", "/api/drafts");
      xhr.setRequestHeader("X-CSRF-Token", meta("csrf"));
      xhr.upload.onprogress = (e) => {
        if (!e.lengthComputable) return;
        bar.value = Math.round((e.loaded / e.total) * 100);
        label.textContent = T("uploading") + " " + bar.value + "% (" + (e.loaded / 1048576).toFixed(1) + " / " + (e.total / 1048576).toFixed(1) + " MB)";
        if (e.loaded === e.total) label.textContent = T("processing");
      };
      xhr.onerror = () => { $("#save").disabled = false; flash(T("network"), "error"); };
      xhr.onload = () => {
        $("#save").disabled = false;
        let body = {};
        try { body = JSON.parse(xhr.responseText); } catch (e) { body = { message: xhr.responseText }; }
        if (xhr.status >= 300) { showError(new ApiError(body, xhr.status), f); up.hidden = true; return; }
        draft = body;
        label.textContent = T("saved");
        const a = $("#preview-audio");
        a.src = "/api/drafts/" + draft.id + "/audio";
        $("#preview-summary").textContent = T("summary", {
          class: f.querySelector('input[name="class"]:checked').parentElement.textContent.trim(),
          severity: f.elements.severity.disabled ? "—" : f.elements.severity.selectedOptions[0].textContent,
          n: total(),
          duration: (draft.audio.duration_ms / 1000).toFixed(1) + " s",
        });
        const w = $("#preview-warnings");
        w.hidden = !draft.warnings.length; w.textContent = draft.warnings.join(" ");
        $("#preview").hidden = false;
        $("#submitted").hidden = true;
        $("#submit-draft").disabled = false;
        flash(T("saved"));
        $("#preview").scrollIntoView();
        a.focus();
      };
      xhr.send(data);
    });
    $("#submit-draft").addEventListener("click", async () => {
      if (!draft) return;
      const key = { emergency: "submit_live", drill: "submit_drill", daily: "submit_daily" }[draft.class];
      if (!(await confirmDialog(T(key, { title: draft.title })))) return;
      try {
        const d = await api("POST", "/api/drafts/" + draft.id + "/submit");
        const msg = d.state === "published" ? (d.schedule ? T("scheduled") : T("published")) : T("submitted");
        const s = $("#submitted"); s.textContent = msg + " #" + d.id; s.hidden = false;
        $("#submit-draft").disabled = true;
        flash(msg);
      } catch (e) { showError(e); }
    });
  }

  function terminalPage() {
    const f = $("#volume-form");
    if (!f) return;
    f.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        await api("POST", "/api/commands", { terminals: [f.dataset.terminal], action: "volume", value: Number(f.elements[0].value) });
        flash(T("command_sent"));
      } catch (e) { showError(e); }
    });
  }

  function accountsPage() {
    const f = $("#new-account");
    if (!f) return;
    f.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      clearErrors(f);
      const roles = $$('input[name="roles"]:checked', f).map((r) => r.value);
      const areas = f.elements.areas.value.split(/[,，\s]+/).filter(Boolean);
      try {
        await api("POST", "/api/accounts", { name: f.elements.name.value, display_name: f.elements.display_name.value, password: f.elements.password.value, roles, areas });
        flash(T("created"));
        setTimeout(() => location.reload(), 800);
      } catch (e) { showError(e, f); }
    });
  }

  function quietForm() {
    const f = $("#quiet-form");
    if (!f) return;
    f.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      clearErrors(f);
      const areas = $$('input[name="areas"]:checked', f).map((b) => b.value);
      const windows = f.elements.windows.value.split(/[,，\s]+/).filter(Boolean);
      try {
        await api("PUT", "/api/quiet-hours", { areas, mode: f.elements.mode.value, windows });
        flash(T("quiet_saved"));
        setTimeout(() => location.reload(), 800);
      } catch (e) { showError(e, f); }
    });
  }

  function revokePage() {
    const f = $("#revoke-form");
    if (!f) return;
    f.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      clearErrors(f);
      if (!(await confirmDialog(f.querySelector("button").dataset.confirm))) return;
      try {
        await api("POST", "/api/revocations", { revoke: f.elements.revoke.value.split(/[,，\s]+/).filter(Boolean) });
        flash(T("revoked"));
        setTimeout(() => location.reload(), 800);
      } catch (e) { showError(e, f); }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    loginPage(); setupForm(); live(); queue(); terminalFilters(); composePage(); terminalPage(); accountsPage(); revokePage(); quietForm();
  });
})();
