// A worker from public/: its script and its fetch must come from the release
// of the tab that started it.
const BUILD = '2';
fetch('/data.json')
  .then((response) => response.json())
  .then((data) => postMessage({ script: BUILD, data: data.build }));
