// Example app, version 2: a tiny client-side router and a lazily loaded chunk.
export const APP_VERSION = "v2";

function render(path) {
  const app = document.getElementById("app");
  if (path.startsWith("/inbox/")) {
    app.textContent = `Message ${path.slice("/inbox/".length)} (rendered by v2)`;
  } else if (path === "/settings") {
    app.textContent = "Settings (rendered by v2)";
  } else {
    app.textContent = "Home (rendered by v2)";
  }
}

document.getElementById("version").textContent = APP_VERSION;
document.querySelector("nav").addEventListener("click", (e) => {
  const a = e.target.closest("a");
  if (!a || a.origin !== location.origin) return;
  e.preventDefault();
  history.pushState(null, "", a.pathname);
  render(a.pathname);
});
window.addEventListener("popstate", () => render(location.pathname));
document.getElementById("details").addEventListener("click", async () => {
  const mod = await import("./chunk-details-e81f0a4c.js");
  mod.renderDetails(document.getElementById("details-view"));
});
render(location.pathname);
