// Lazily loaded by version 1.
export function renderDetails(el) {
  el.textContent = "Details from the v1 chunk";
  el.dataset.chunk = "v1";
}
