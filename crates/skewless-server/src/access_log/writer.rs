//! The queue of lines and the writer thread that takes them in batches,
//! writes each batch with one system call, reopens the file when asked,
//! and survives every write error.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use metrics::Counter;

/// How often the writer takes the queued lines and writes them, and so
/// about the longest a line waits before it reaches the file.
pub const TICK: Duration = Duration::from_millis(10);
/// Lines waiting for the writer at most; more are dropped and counted.
pub(super) const QUEUE_LINES: usize = 4096;
/// Bytes waiting for the writer at most (long paths make long lines).
pub(super) const QUEUE_BYTES: usize = 1024 * 1024;
/// What each of the two buffers starts with.
const BATCH_CAPACITY: usize = 64 * 1024;

/// A message to the writer besides the lines.
pub(super) enum Msg {
    /// Write what is queued, stop, and say so.
    Close(SyncSender<()>),
}

/// What became of a line handed to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Push {
    /// Queued.
    Queued,
    /// The queue is at its bound: dropped.
    Full,
    /// The writer has stopped: nothing more is written.
    Closed,
}

/// The lines waiting for the writer, back to back in one buffer. A
/// request appends its line under the lock; the writer swaps the whole
/// buffer for its empty one and writes it with one system call, so
/// neither side allocates once both buffers have grown, and a request
/// never wakes the writer.
pub(super) struct Queue {
    buf: Vec<u8>,
    lines: usize,
    closed: bool,
}

impl Queue {
    pub(super) fn new() -> Queue {
        Queue {
            buf: Vec::with_capacity(BATCH_CAPACITY),
            lines: 0,
            closed: false,
        }
    }

    /// Appends one whole line unless the queue is at its bound or closed.
    pub(super) fn push(&mut self, line: &[u8]) -> Push {
        if self.closed {
            Push::Closed
        } else if self.lines >= QUEUE_LINES || self.buf.len() + line.len() > QUEUE_BYTES {
            Push::Full
        } else {
            self.buf.extend_from_slice(line);
            self.lines += 1;
            Push::Queued
        }
    }

    /// Swaps the queued lines into `batch` (empty, its capacity reused
    /// for the next lines) and says how many there were; after a `last`
    /// take nothing more is queued.
    pub(super) fn take(&mut self, batch: &mut Vec<u8>, last: bool) -> usize {
        debug_assert!(batch.is_empty());
        std::mem::swap(&mut self.buf, batch);
        self.closed |= last;
        std::mem::take(&mut self.lines)
    }
}

/// Locks the queue; a panic elsewhere never leaves it half-written (a
/// push is one `extend_from_slice`), so a poisoned lock is used as is.
pub(super) fn lock(q: &Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    q.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    /// Standard output.
    Stdout,
    /// A file, opened for appending.
    File(PathBuf),
}

/// Counts failed writes.
fn write_errors() -> &'static Counter {
    static C: OnceLock<Counter> = OnceLock::new();
    C.get_or_init(|| metrics::counter!("skewless_access_log_write_errors_total"))
}

/// The target as the operator wrote it.
pub(super) fn target_name(t: &Target) -> String {
    match t {
        Target::Stdout => "-".into(),
        Target::File(p) => p.display().to_string(),
    }
}

/// Standard output or an append-mode file.
pub(super) enum Sink {
    Stdout(io::Stdout),
    File(std::fs::File),
}

impl Sink {
    /// Opens the target.
    pub(super) fn open(t: &Target) -> io::Result<Sink> {
        Ok(match t {
            Target::Stdout => Sink::Stdout(io::stdout()),
            Target::File(p) => Sink::File(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
        })
    }
}

impl Sink {
    /// Writes a batch of whole lines: one `write` unless the kernel
    /// takes it in parts.
    fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        match self {
            // One lock per batch: lines never interleave with other output.
            Sink::Stdout(s) => {
                let mut out = s.lock();
                out.write_all(batch)?;
                out.flush()
            }
            Sink::File(f) => f.write_all(batch),
        }
    }
}

/// Tracks write failures so a full disk is reported once, not per line.
struct Health {
    failing: bool,
}

impl Health {
    fn result(&mut self, what: &str, r: io::Result<()>) {
        match r {
            Ok(()) => {
                if self.failing {
                    tracing::warn!("access log writable again");
                    self.failing = false;
                }
            }
            Err(e) => {
                write_errors().increment(1);
                if !self.failing {
                    tracing::warn!(error = %e, "access log {what} failed; lines are lost until it works again");
                    self.failing = true;
                }
            }
        }
    }
}

/// Writes the queued lines every [`TICK`] until told to stop or every
/// sender is gone.
///
/// The writer polls rather than waits: a request then never has to wake
/// a sleeping writer, so handing a line over is a lock, a copy and an
/// unlock, never a system call; and a tick's lines go out in one write.
pub(super) fn write_loop(
    queue: Arc<Mutex<Queue>>,
    control: Receiver<Msg>,
    target: Target,
    mut sink: Sink,
    reopen: &AtomicBool,
) {
    let mut health = Health { failing: false };
    let mut batch = Vec::with_capacity(BATCH_CAPACITY);
    loop {
        let (last, ack) = match control.try_recv() {
            Ok(Msg::Close(ack)) => (true, Some(ack)),
            Err(TryRecvError::Empty) => (false, None),
            Err(TryRecvError::Disconnected) => (true, None),
        };
        let lines = lock(&queue).take(&mut batch, last);
        let bytes = batch.len();
        if bytes > 0 {
            let r = sink.write_batch(&batch);
            health.result("write", r);
            batch.clear();
        }
        if last {
            if let Some(ack) = ack {
                let _ = ack.send(());
            }
            return;
        }
        if reopen.swap(false, Ordering::Acquire) {
            match Sink::open(&target) {
                // Lines taken so far went to the old file.
                Ok(new) => {
                    sink = new;
                    tracing::info!(file = %target_name(&target), "access log reopened");
                }
                Err(e) => {
                    write_errors().increment(1);
                    tracing::warn!(error = %e, file = %target_name(&target), "cannot reopen the access log; still writing to the old file");
                }
            }
        }
        // A queue near its bound means the writer is behind: go on at once.
        if lines < QUEUE_LINES / 2 && bytes < QUEUE_BYTES / 2 {
            std::thread::sleep(TICK);
        }
    }
}
