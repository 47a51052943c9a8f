// The operations dashboard: releases, live clients over time, nodes and
// history from the admin API, refreshed every few seconds without a reload.
// The token is typed once and kept in this tab's sessionStorage, never in a
// URL. Actions (admin tokens only) call the same admin API as the CLI, each
// after a confirmation that names what will happen.
const API = "/_skewless/api/v1";
const TOKEN_KEY = "skewless-admin-token";
const REFRESH_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";
const SERIES_CLASSES = 8;

/** @param {string} id */
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

const state = {
  /** @type {{name: string, role: string} | null} */
  who: null,
  /** @type {any} */
  status: null,
  /** @type {any[]} */
  releases: [],
  timer: 0,
  busy: false,
  /**
   * The last client series and when it was fetched: samples change once per
   * sampling interval, so it is fetched again only then (or for another
   * window); in between the plot slides with the clock.
   * @type {any}
   */
  series: null,
  seriesSeconds: 0,
  seriesFetchedAt: 0,
  /** The last action's error, kept on screen until the next action. */
  actionError: "",
};

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

class ApiError extends Error {
  /** @param {number} status @param {string} message */
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/**
 * Calls the admin API with the token; throws its one-line error.
 * @param {string} method @param {string} path @param {unknown} [body]
 */
async function call(method, path, body) {
  /** @type {Record<string, string>} */
  const headers = { Authorization: "Bearer " + token() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(API + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!res.ok) {
    const why = data && typeof data.error === "string" ? data.error : `HTTP ${res.status}`;
    throw new ApiError(res.status, `${method} ${path}: ${why}`);
  }
  return data;
}

/**
 * An element with text and attributes.
 * @param {string} tag @param {string | number | null} [text] @param {Record<string, string>} [attrs]
 */
function el(tag, text, attrs = {}) {
  const e = document.createElement(tag);
  if (text !== null && text !== undefined) e.textContent = String(text);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

/** @param {string} tag @param {Record<string, string | number>} attrs */
function svg(tag, attrs = {}) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

/** @param {number} n */
function size(n) {
  if (n < 1024) return n + " B";
  if (n < 1048576) return (n / 1024).toFixed(1) + " KiB";
  if (n < 1073741824) return (n / 1048576).toFixed(1) + " MiB";
  return (n / 1073741824).toFixed(2) + " GiB";
}

/** Seconds as "42 s", "5 min", "3 h", "2 d". @param {number} secs */
function age(secs) {
  secs = Math.max(0, Math.round(secs));
  if (secs < 90) return secs + " s";
  if (secs < 5400) return Math.round(secs / 60) + " min";
  if (secs < 172800) return Math.round(secs / 3600) + " h";
  return Math.round(secs / 86400) + " d";
}

/** @param {number} unix */
function clock(unix) {
  return new Date(unix * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function nowSecs() {
  return Date.now() / 1000;
}

/** @param {string} message */
function showError(message) {
  const line = $("error");
  line.textContent = message.split("\n")[0];
  line.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function isAdmin() {
  return state.who?.role === "admin";
}

/** A stable colour class per release, by its position among releases. */
function seriesClass(/** @type {string} */ id) {
  const ids = state.releases.map((r) => r.id);
  const i = ids.indexOf(id);
  return "s" + ((i < 0 ? ids.length : i) % SERIES_CLASSES);
}

function showLogin() {
  clearInterval(state.timer);
  state.timer = 0;
  state.who = null;
  state.series = null;
  $("board").hidden = true;
  $("session").hidden = true;
  $("login").hidden = false;
  $("token").focus();
}

async function start() {
  if (!token()) {
    showLogin();
    return;
  }
  try {
    state.who = await call("GET", "/whoami");
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin();
      showError("That token was refused: check it and try again.");
    } else {
      showError(e instanceof Error ? e.message : String(e));
      setTimeout(start, REFRESH_MS);
    }
    return;
  }
  clearError();
  $("login").hidden = true;
  $("board").hidden = false;
  $("session").hidden = false;
  $("who").textContent = `${state.who?.name} (${isAdmin() ? "admin" : "read only"})`;
  document.body.classList.toggle("can-act", isAdmin());
  // A read token gets no action at all, not merely hidden ones.
  $("global-actions").replaceChildren(...(isAdmin() ? globalActions : []));
  $("global-actions").hidden = !isAdmin();
  await refresh();
  clearInterval(state.timer);
  state.timer = window.setInterval(refresh, REFRESH_MS);
}

async function refresh() {
  if (state.busy || !state.who) return;
  state.busy = true;
  try {
    const seconds = Number(/** @type {HTMLSelectElement} */ ($("window")).value);
    const seriesDue =
      !state.series ||
      state.seriesSeconds !== seconds ||
      Date.now() - state.seriesFetchedAt >= Math.max(1, state.series.interval_secs) * 1000;
    const [status, releases, nodes, history, fetched] = await Promise.all([
      call("GET", "/status"),
      call("GET", "/releases"),
      call("GET", "/nodes"),
      call("GET", "/history?limit=50"),
      seriesDue ? call("GET", `/clients/history?seconds=${seconds}`) : Promise.resolve(null),
    ]);
    if (fetched) {
      state.series = fetched;
      state.seriesSeconds = seconds;
      state.seriesFetchedAt = Date.now();
    }
    const slid = Math.floor((Date.now() - state.seriesFetchedAt) / 1000);
    const series = { ...state.series, from: state.series.from + slid, now: state.series.now + slid };
    state.status = status;
    state.releases = releases.filter((/** @type {any} */ r) => r.state !== "collected");
    renderSummary(status);
    renderReleases(status, state.releases, nodes);
    renderPlot(series, status);
    renderNodes(nodes);
    renderHistory(history);
    const updated = $("updated");
    updated.textContent = new Date().toLocaleTimeString();
    updated.setAttribute("datetime", new Date().toISOString());
    if (state.actionError) showError(state.actionError);
    else clearError();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin();
      showError("The token is no longer accepted.");
    } else {
      showError(e instanceof Error ? e.message : String(e));
    }
  } finally {
    state.busy = false;
  }
}

/** @param {any} status */
function renderSummary(status) {
  const canary = status.canary ? ` · canary ${status.canary.release} at ${status.canary.percent} %` : "";
  $("summary").textContent = `current ${status.current ?? "none"}${canary}`;
  $("generation").textContent = String(status.generation);
  $("required").textContent = status.required_min ?? "none";
  $("streams").textContent = String(status.event_streams);
  const split = $("split");
  const parts = [];
  if (status.current) {
    const share = status.canary ? 100 - status.canary.percent : 100;
    parts.push({ id: status.current, share, kind: "current" });
  }
  if (status.canary) parts.push({ id: status.canary.release, share: status.canary.percent, kind: "canary" });
  split.replaceChildren(
    ...parts.map((p) => {
      // Coloured by release, as its line in the plot is.
      const seg = el("span", `${p.kind} ${p.id} · ${p.share} %`, { class: `segment ${p.kind} ${seriesClass(p.id)}` });
      // CSSOM, not a style attribute: allowed by the page's policy.
      seg.style.flexGrow = String(p.share);
      return seg;
    }),
  );
  split.setAttribute(
    "aria-label",
    parts.length ? "New sessions: " + parts.map((p) => `${p.share} % to ${p.id} (${p.kind})`).join(", ") : "No current release",
  );
  split.hidden = parts.length === 0;
  abortButton.disabled = !status.canary;
  clearButton.disabled = !status.required_min;
}

/** Back-end health of `release` on every node, e.g. "node-a healthy". @param {any} r @param {any[]} nodes */
function backendCell(r, nodes) {
  const td = el("td");
  if (r.backend) td.append(el("div", r.backend, { class: "mono" }));
  if (r.backend_cmd) {
    td.append(el("div", r.backend_cmd, { class: "mono cmd", title: r.backend_cmd }));
    const list = el("ul", null, { class: "health" });
    for (const n of nodes) {
      const health = n.backends?.[r.id];
      if (!health) continue;
      list.append(el("li", `${n.id}: ${health}`, { class: `h-${health}` }));
    }
    if (!list.childElementCount && r.backend_status) {
      list.append(el("li", r.backend_status.health, { class: `h-${r.backend_status.health}` }));
    }
    td.append(list);
  }
  if (!r.backend && !r.backend_cmd) td.textContent = "–";
  return td;
}

/**
 * @param {any} status @param {any[]} releases @param {any[]} nodes
 */
function renderReleases(status, releases, nodes) {
  const now = nowSecs();
  const rows = [...releases].reverse().map((r) => {
    const tr = el("tr", null, { "data-release": r.id });
    if (r.current) tr.classList.add("current");
    if (r.canary) tr.classList.add("canary");
    const name = el("th", null, { scope: "row" });
    name.append(el("span", "", { class: `swatch ${seriesClass(r.id)}`, "aria-hidden": "true" }), r.id);
    const labels = [r.state];
    if (r.canary) labels.push(`canary ${status.canary?.percent ?? ""} %`);
    if (status.required_min === r.id) labels.push("required minimum");
    const clients = el("td", r.clients.total, {
      class: "num",
      "data-clients": String(r.clients.total),
      title: `${r.clients.streams} event streams, ${r.clients.recent} seen recently`,
    });
    tr.append(
      name,
      el("td", labels.join(" · ")),
      el("td", age(now - r.created_at), { class: "nowrap", title: new Date(r.created_at * 1000).toLocaleString() }),
      clients,
      el("td", r.files, { class: "num" }),
      el("td", size(r.size), { class: "num" }),
      backendCell(r, nodes),
    );
    if (isAdmin()) tr.append(actionsCell(r, status));
    return tr;
  });
  // Rows are rebuilt on every refresh: keep the keyboard focus on the
  // same action.
  const focused = focusedAction();
  $("releases").querySelector("tbody")?.replaceChildren(...rows);
  if (focused) refocus(focused);
}

/** The label of the focused action button in the releases table, if any. */
function focusedAction() {
  const active = document.activeElement;
  return active instanceof HTMLButtonElement && $("releases").contains(active) ? active.getAttribute("aria-label") : null;
}

/** Focuses the releases-table action labelled `label`, if it is there. @param {string} label */
function refocus(label) {
  for (const b of $("releases").querySelectorAll("button")) {
    if (b.getAttribute("aria-label") === label) {
      b.focus();
      return;
    }
  }
}

/** @param {string} label @param {string} name @param {() => void} onClick */
function button(label, name, onClick) {
  const b = el("button", label, { type: "button", "aria-label": `${label} ${name}` });
  b.addEventListener("click", onClick);
  return b;
}

/** @param {any} r @param {any} status */
function actionsCell(r, status) {
  const td = el("td", null, { class: "actions" });
  const served = ["uploaded", "current", "draining"].includes(r.state);
  if (!served) return td;
  const others = (status.clients ? Object.keys(status.clients) : []).filter((id) => id !== r.id);
  if (!r.current) {
    td.append(
      button("Promote", r.id, () =>
        confirmAction({
          title: `Promote ${r.id}`,
          text:
            `${r.id} becomes the current release: every new page load gets it` +
            (status.current ? `, ${status.current} starts draining` : "") +
            (others.length ? ", and open tabs of other releases are told to move over at their next navigation." : "."),
          ok: `Promote ${r.id}`,
          run: () => call("POST", `/releases/${encodeURIComponent(r.id)}/promote`, {}),
        }),
      ),
      button("Canary", r.id, () =>
        confirmAction({
          title: `Canary ${r.id}`,
          text: `${r.id} becomes the canary: this share of new sessions gets it (sticky), the rest keep getting ${status.current ?? "the current release"}.`,
          ok: `Start canary of ${r.id}`,
          percent: status.canary?.release === r.id ? status.canary.percent : 10,
          run: (/** @type {number} */ percent) =>
            call("POST", `/releases/${encodeURIComponent(r.id)}/promote`, { percent }),
        }),
      ),
    );
  }
  if (!r.current && !r.canary) {
    td.append(
      button("Retire", r.id, () =>
        confirmAction({
          title: `Retire ${r.id}`,
          text: `${r.id} stops being served: its ${r.clients.total} open tab(s) are told to reload onto ${status.current ?? "the current release"}, and its files become garbage.`,
          ok: `Retire ${r.id}`,
          danger: true,
          run: () => call("POST", `/releases/${encodeURIComponent(r.id)}/retire`),
        }),
      ),
    );
  }
  if (r.current || r.state === "draining") {
    td.append(
      button("Require", r.id, () =>
        confirmAction({
          title: `Require ${r.id}`,
          text: `Every open tab running a release older than ${r.id} must reload now (keeping its state).`,
          ok: `Require ${r.id}`,
          danger: true,
          run: () => call("POST", "/required", { min: r.id }),
        }),
      ),
    );
  }
  return td;
}

/**
 * Asks in a dialog, then runs the action and refreshes; errors go to the
 * error line.
 * @param {{title: string, text: string, ok: string, danger?: boolean, percent?: number, run: (percent: number) => Promise<unknown>}} a
 */
function confirmAction(a) {
  const dialog = /** @type {HTMLDialogElement} */ ($("confirm"));
  const percentInput = /** @type {HTMLInputElement} */ ($("confirm-percent"));
  $("confirm-title").textContent = a.title;
  $("confirm-text").textContent = a.text;
  $("confirm-ok").textContent = a.ok;
  $("confirm-ok").classList.toggle("danger", !!a.danger);
  $("confirm-percent-row").hidden = a.percent === undefined;
  if (a.percent !== undefined) percentInput.value = String(a.percent);
  dialog.returnValue = "";
  const opener = focusedAction();
  dialog.onclose = async () => {
    // The button that opened the dialog may have been rebuilt meanwhile.
    if (opener) refocus(opener);
    if (dialog.returnValue !== "ok") return;
    const percent = Number(percentInput.value);
    if (a.percent !== undefined && !(Number.isInteger(percent) && percent >= 1 && percent <= 99)) {
      state.actionError = "The canary share must be a whole number from 1 to 99.";
      showError(state.actionError);
      return;
    }
    state.actionError = "";
    clearError();
    try {
      await a.run(percent);
    } catch (e) {
      state.actionError = (e instanceof Error ? e.message : String(e)).split("\n")[0];
      showError(state.actionError);
      return;
    }
    await refresh();
  };
  dialog.showModal();
  (a.percent !== undefined ? percentInput : $("confirm-cancel")).focus();
}

/** A round step for about `count` ticks over `max`. @param {number} max @param {number} count */
function niceStep(max, count) {
  const raw = Math.max(1, max / count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  return (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * mag;
}

/**
 * Draws the live clients per release as an SVG line plot with axes, a
 * legend and a text description.
 * @param {{now: number, from: number, interval_secs: number, releases: {release: string, points: {at: number, clients: number}[]}[]}} data
 * @param {any} status
 */
function renderPlot(data, status) {
  const W = 760, H = 260, L = 48, R = 16, T = 12, B = 34;
  const from = data.from, to = data.now;
  const span = Math.max(1, to - from);
  // The window may have slid past the oldest points fetched.
  const series = data.releases
    .map((s) => ({ ...s, points: s.points.filter((p) => p.at >= from) }))
    .filter((s) => s.points.length > 0);
  const max = Math.max(1, ...series.flatMap((s) => s.points.map((p) => p.clients)));
  const step = niceStep(max, 4);
  const top = Math.ceil(max / step) * step;
  const x = (/** @type {number} */ t) => L + ((t - from) / span) * (W - L - R);
  const y = (/** @type {number} */ v) => T + (1 - v / top) * (H - T - B);

  const windowLabel = /** @type {HTMLSelectElement} */ ($("window")).selectedOptions[0]?.textContent ?? "";
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": "plot-title plot-desc", class: "plot" });
  const title = svg("title", { id: "plot-title" });
  title.textContent = `Live clients per release over the last ${windowLabel}`;
  const desc = svg("desc", { id: "plot-desc" });
  desc.textContent = series.length
    ? series
        .map((s) => {
          const last = s.points[s.points.length - 1];
          const peak = Math.max(...s.points.map((p) => p.clients));
          return `${s.release}: ${last.clients} at ${clock(last.at)}, peak ${peak}`;
        })
        .join("; ")
    : "No samples yet.";
  root.append(title, desc);

  // Grid and y axis.
  const grid = svg("g", { class: "grid" });
  for (let v = 0; v <= top; v += step) {
    grid.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v) }));
    const label = svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" });
    label.textContent = String(v);
    grid.append(label);
  }
  // X axis: ticks on round times.
  const tickEvery = span <= 900 ? 300 : span <= 3600 ? 600 : span <= 21600 ? 3600 : 4 * 3600;
  for (let t = Math.ceil(from / tickEvery) * tickEvery; t <= to; t += tickEvery) {
    grid.append(svg("line", { x1: x(t), x2: x(t), y1: H - B, y2: H - B + 4 }));
    const label = svg("text", { x: x(t), y: H - B + 18, "text-anchor": "middle" });
    label.textContent = clock(t);
    grid.append(label);
  }
  grid.append(svg("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis" }));
  grid.append(svg("line", { x1: L, x2: L, y1: T, y2: H - B, class: "axis" }));
  const yName = svg("text", { x: 12, y: T + (H - T - B) / 2, "text-anchor": "middle", transform: `rotate(-90 12 ${T + (H - T - B) / 2})` });
  yName.textContent = "clients";
  grid.append(yName);
  root.append(grid);

  // One line per release; a gap longer than two intervals breaks it.
  const gap = 2.5 * Math.max(1, data.interval_secs);
  for (const s of series) {
    let d = "";
    let prev = -Infinity;
    for (const p of s.points) {
      d += `${p.at - prev > gap ? "M" : "L"}${x(p.at).toFixed(1)},${y(p.clients).toFixed(1)} `;
      prev = p.at;
    }
    const last = s.points[s.points.length - 1];
    const cls = seriesClass(s.release);
    root.append(
      svg("path", {
        d: d.trim(),
        class: `line ${cls}`,
        "data-release": s.release,
        "data-last": last.clients,
        "data-max": Math.max(...s.points.map((p) => p.clients)),
        "data-points": s.points.length,
      }),
      svg("circle", { cx: x(last.at), cy: y(last.clients), r: 3, class: `dot ${cls}` }),
    );
  }
  $("plot").replaceChildren(root);

  const legend = $("legend");
  legend.replaceChildren(
    ...series.map((s) => {
      const li = el("li");
      const kind = s.release === status.current ? " (current)" : s.release === status.canary?.release ? " (canary)" : "";
      li.append(el("span", "", { class: `swatch ${seriesClass(s.release)}`, "aria-hidden": "true" }), `${s.release}${kind}`);
      return li;
    }),
  );
}

/** @param {any[]} nodes */
function renderNodes(nodes) {
  const rows = nodes.map((n) => {
    const tr = el("tr", null, { "data-node": n.id });
    if (!n.live) tr.classList.add("silent");
    const name = el("th", n.id, { scope: "row" });
    const backends = Object.entries(n.backends || {}).map(([id, h]) => `${id} ${h}`);
    tr.append(
      name,
      el("td", n.address || "–", { class: "mono" }),
      el("td", n.version || "–"),
      el("td", n.live ? `${age(n.silent_secs)} ago` : `silent ${age(n.silent_secs)}`),
      el("td", n.cluster_version, { class: "num" }),
      el("td", n.event_streams, { class: "num" }),
      el("td", n.clients, { class: "num" }),
      el("td", (n.leases || []).join(", ") || "–"),
      el("td", backends.join(", ") || "–"),
    );
    return tr;
  });
  $("nodes").querySelector("tbody")?.replaceChildren(...rows);
}

/** @param {any[]} history */
function renderHistory(history) {
  const rows = [...history].reverse().map((h) => {
    const tr = el("tr");
    const when = el("td", null);
    when.append(el("time", new Date(h.at * 1000).toLocaleString(), { datetime: new Date(h.at * 1000).toISOString() }));
    const change = h.before || h.after ? `${h.before ?? "–"} → ${h.after ?? "–"}` : "";
    tr.append(when, el("td", h.action), el("td", h.release ?? ""), el("td", h.actor), el("td", change), el("td", h.detail ?? ""));
    return tr;
  });
  $("history").querySelector("tbody")?.replaceChildren(...rows);
}

$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = /** @type {HTMLInputElement} */ ($("token"));
  sessionStorage.setItem(TOKEN_KEY, input.value.trim());
  input.value = "";
  start();
});

$("logout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  clearError();
  showLogin();
});

$("window").addEventListener("change", () => refresh());

const rollbackButton = el("button", "Roll back", { type: "button" });
const abortButton = /** @type {HTMLButtonElement} */ (el("button", "Abort canary", { type: "button" }));
const clearButton = /** @type {HTMLButtonElement} */ (el("button", "Clear required minimum", { type: "button" }));
const globalActions = [rollbackButton, abortButton, clearButton];

rollbackButton.addEventListener("click", () => {
  const current = state.status?.current ?? "the current release";
  confirmAction({
    title: "Roll back",
    text: `The release that was current before ${current} becomes current again; ${current} starts draining and new page loads stop getting it.`,
    ok: "Roll back",
    danger: true,
    run: () => call("POST", "/rollback"),
  });
});

abortButton.addEventListener("click", () => {
  const canary = state.status?.canary;
  if (!canary) return;
  confirmAction({
    title: `Abort canary ${canary.release}`,
    text: `New sessions stop getting ${canary.release} (now ${canary.percent} %); all get ${state.status.current}. Tabs already on ${canary.release} stay until they navigate.`,
    ok: "Abort canary",
    danger: true,
    run: () => call("POST", "/canary/abort"),
  });
});

clearButton.addEventListener("click", () => {
  confirmAction({
    title: "Clear the required minimum",
    text: `Clients are no longer forced to run at least ${state.status?.required_min}; they move over at their next navigation as usual.`,
    ok: "Clear requirement",
    run: () => call("POST", "/required", { min: null }),
  });
});

start();
