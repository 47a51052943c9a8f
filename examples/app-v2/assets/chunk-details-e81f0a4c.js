// Lazily loaded by version 2.
export function renderDetails(el) {
  el.textContent = "Details from the v2 chunk";
  el.dataset.chunk = "v2";
}
