// Ends a Vitest run with one plain line, "<label>: N passed, N failed", that
// any CI log reader understands.

/** @param {any} task @param {{passed: number, failed: number, skipped: number}} count */
function tally(task, count) {
  if (task.type === 'test') {
    const state = task.result && task.result.state;
    if (state === 'pass') count.passed++;
    else if (state === 'fail') count.failed++;
    else count.skipped++;
  } else {
    for (const child of task.tasks || []) tally(child, count);
    // A file or suite that failed outside its tests (import error, hook) counts too.
    if (task.result && task.result.state === 'fail' && !(task.tasks || []).some((t) => t.result && t.result.state === 'fail')) {
      count.failed++;
    }
  }
  return count;
}

export default class SummaryReporter {
  /** @param {string} label one word */
  constructor(label) {
    this.label = label;
  }

  /** @param {any[]} [files] @param {unknown[]} [errors] */
  onFinished(files = [], errors = []) {
    const count = { passed: 0, failed: errors.length, skipped: 0 };
    for (const file of files) tally(file, count);
    const skipped = count.skipped ? `, ${count.skipped} skipped` : '';
    process.stdout.write(`\n${this.label}: ${count.passed} passed, ${count.failed} failed${skipped}\n`);
  }
}
