// The dashboard: current release, canary, and live clients per release, from
// the admin API. The token stays in this tab's sessionStorage.
const api = "/_skewless/api/v1";
const $ = (id) => document.getElementById(id);

function token() {
  return sessionStorage.getItem("skewless-admin-token") || "";
}

async function get(path) {
  const res = await fetch(api + path, { headers: { Authorization: "Bearer " + token() } });
  if (res.status === 401) {
    sessionStorage.removeItem("skewless-admin-token");
    throw new Error("token refused");
  }
  if (!res.ok) throw new Error((await res.json()).error || res.statusText);
  return res.json();
}

function cell(text) {
  const td = document.createElement("td");
  td.textContent = String(text);
  return td;
}

function size(n) {
  return n < 1024 ? n + " B" : n < 1048576 ? (n / 1024).toFixed(1) + " KiB" : (n / 1048576).toFixed(1) + " MiB";
}

async function refresh() {
  if (!token()) {
    $("login").hidden = false;
    return;
  }
  try {
    const [status, releases] = await Promise.all([get("/status"), get("/releases")]);
    $("login").hidden = true;
    $("error").hidden = true;
    const canary = status.canary ? ` · canary ${status.canary.release} at ${status.canary.percent}%` : "";
    $("summary").textContent = `current ${status.current ?? "none"} · generation ${status.generation}${canary}`;
    const body = $("releases").querySelector("tbody");
    body.replaceChildren(
      ...releases
        .filter((r) => r.state !== "collected")
        .reverse()
        .map((r) => {
          const tr = document.createElement("tr");
          if (r.current) tr.className = "current";
          const backend = r.backend || (r.backend_status ? `managed, ${r.backend_status.health}` : "-");
          tr.append(cell(r.id), cell(r.canary ? r.state + " (canary)" : r.state), cell(r.clients.total), cell(r.files), cell(size(r.size)), cell(backend));
          return tr;
        }),
    );
    $("releases").hidden = false;
  } catch (e) {
    $("error").textContent = String(e instanceof Error ? e.message : e);
    $("error").hidden = false;
    if (!token()) $("login").hidden = false;
  }
}

$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem("skewless-admin-token", $("token").value.trim());
  refresh();
});
refresh();
setInterval(refresh, 5000);
