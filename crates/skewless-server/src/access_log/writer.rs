//! The writer thread: batches lines in a buffer, flushes it on an
//! interval and on request, reopens the file when asked, and survives
//! every write error.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metrics::Counter;

use super::line::Line;

/// Longest time a written line waits in the buffer before it is flushed.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// How often the writer looks at the queue.
pub const TICK: Duration = Duration::from_millis(10);
/// Most lines taken from the queue before the writer looks at its other
/// duties (flush, reopen).
const ROUND: usize = 1024;
/// Size of the writer's buffer.
const WRITE_BUFFER: usize = 64 * 1024;

// See `Line`.
#[allow(clippy::large_enum_variant)]
pub(super) enum Msg {
    /// A line to write.
    Line(Line),
    /// Flush, stop, and say so.
    Close(SyncSender<()>),
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

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            // One lock per batch: lines never interleave with other output.
            Sink::Stdout(s) => s.lock().write(buf),
            Sink::File(f) => f.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Stdout(s) => s.flush(),
            Sink::File(f) => f.flush(),
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

/// Writes lines until told to stop or every sender is gone.
///
/// The writer polls the queue every [`TICK`] rather than waiting on it:
/// a sender then never has to wake a sleeping writer, so handing a line
/// over is a few atomic operations and never a system call.
pub(super) fn write_loop(rx: Receiver<Msg>, target: Target, sink: Sink, reopen: &AtomicBool) {
    let mut out = io::BufWriter::with_capacity(WRITE_BUFFER, sink);
    let mut health = Health { failing: false };
    // When the oldest unflushed line was written.
    let mut dirty_since: Option<Instant> = None;
    loop {
        let mut taken = 0;
        while taken < ROUND {
            match rx.try_recv() {
                Ok(Msg::Line(line)) => {
                    // Most writes only fill the buffer: a success says
                    // nothing about the file, a failure does.
                    if let Err(e) = out.write_all(line.as_bytes()) {
                        health.result("write", Err(e));
                    }
                    dirty_since.get_or_insert_with(Instant::now);
                    taken += 1;
                }
                Ok(Msg::Close(ack)) => {
                    let r = out.flush();
                    health.result("flush", r);
                    let _ = ack.send(());
                    return;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    let r = out.flush();
                    health.result("flush", r);
                    return;
                }
            }
        }
        if reopen.swap(false, Ordering::Acquire) {
            let r = out.flush();
            health.result("flush", r);
            dirty_since = None;
            match Sink::open(&target) {
                Ok(sink) => {
                    // Whatever the old file could not take is lost with it.
                    let _ = std::mem::replace(
                        &mut out,
                        io::BufWriter::with_capacity(WRITE_BUFFER, sink),
                    )
                    .into_parts();
                    tracing::info!(file = %target_name(&target), "access log reopened");
                }
                Err(e) => {
                    write_errors().increment(1);
                    tracing::warn!(error = %e, file = %target_name(&target), "cannot reopen the access log; still writing to the old file");
                }
            }
        }
        if dirty_since.is_some_and(|t| t.elapsed() >= FLUSH_INTERVAL) {
            let r = out.flush();
            health.result("flush", r);
            dirty_since = None;
        }
        // A full round means more are waiting: go on at once.
        if taken < ROUND {
            std::thread::sleep(TICK);
        }
    }
}
