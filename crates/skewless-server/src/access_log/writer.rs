//! The queues of lines, one per thread, and the writer thread that takes
//! them in batches, formats them, writes each batch with one system call,
//! reopens the file when asked, and survives every write error.

use std::cell::RefCell;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::ThreadId;
use std::time::Duration;

use metrics::Counter;

use super::entry;
use super::line::{write_line, Fields};

/// How often the writer takes the queued lines and writes them, and so
/// about the longest a line waits before it reaches the file.
pub const TICK: Duration = Duration::from_millis(10);
/// Lines waiting for the writer at most, per thread; more are dropped and
/// counted.
pub(super) const QUEUE_LINES: usize = 4096;
/// Bytes waiting for the writer at most, per thread (long paths make long
/// lines), as queued entries.
pub(super) const QUEUE_BYTES: usize = 1024 * 1024;
/// What each buffer starts with.
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

/// The lines of one thread waiting for the writer, as entries (their
/// fields packed, see [`entry`]) back to back in one buffer. A request
/// packs its line's fields straight into it under the lock (which only
/// the writer's take ever contends for); the writer swaps the whole
/// buffer for an empty one and formats and writes what it took, so
/// neither side allocates once the buffers have grown, and a request
/// never wakes the writer.
pub(super) struct Queue {
    buf: Vec<u8>,
    /// Where the last whole entry ends.
    whole: usize,
    lines: usize,
    closed: bool,
}

impl Queue {
    pub(super) fn new() -> Queue {
        Queue {
            buf: Vec::with_capacity(BATCH_CAPACITY),
            whole: 0,
            lines: 0,
            closed: false,
        }
    }

    /// Appends one line's entry unless the queue is at its bound or
    /// closed.
    pub(super) fn push(&mut self, f: &Fields<'_>) -> Push {
        if self.closed {
            Push::Closed
        } else if self.lines >= QUEUE_LINES || self.buf.len() + entry::size(f) > QUEUE_BYTES {
            Push::Full
        } else {
            entry::encode(&mut self.buf, f);
            self.whole = self.buf.len();
            self.lines += 1;
            Push::Queued
        }
    }

    /// Swaps the queued entries into `batch` (empty, its capacity reused
    /// for the next ones) and says how many there were; after a `last`
    /// take nothing more is queued.
    pub(super) fn take(&mut self, batch: &mut Vec<u8>, last: bool) -> usize {
        debug_assert!(batch.is_empty());
        std::mem::swap(&mut self.buf, batch);
        self.whole = 0;
        self.closed |= last;
        std::mem::take(&mut self.lines)
    }
}

/// Formats the entries of `batch` into lines appended to `out`.
pub(super) fn format(batch: &[u8], out: &mut Vec<u8>) {
    let mut rest = batch;
    while !rest.is_empty() {
        // What a queue holds is whole entries: an entry that does not
        // read back would leave the rest unreadable too.
        let Some((f, used)) = entry::decode(rest) else {
            return;
        };
        write_line(out, &f);
        rest = &rest[used..];
    }
}

/// One thread's queue.
struct Shard {
    thread: ThreadId,
    queue: Mutex<Queue>,
}

/// Every thread's queue of one log. A thread finds its own through a
/// thread-local handle, so requests on different threads never contend;
/// lines of one thread reach the log in order, those of different threads
/// within one tick in no particular order (as do those of several
/// worker processes writing one file).
pub(super) struct Shards {
    /// Tells this log's queues from another's in the thread-local handle.
    id: u64,
    list: Mutex<ShardList>,
}

struct ShardList {
    shards: Vec<Arc<Shard>>,
    /// After the last take: a queue made later starts closed.
    closed: bool,
}

thread_local! {
    /// This thread's queue of the log it wrote to last.
    static MINE: RefCell<Option<(u64, Arc<Shard>)>> = const { RefCell::new(None) };
}

impl Shards {
    pub(super) fn new() -> Shards {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Shards {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            list: Mutex::new(ShardList {
                shards: Vec::new(),
                closed: false,
            }),
        }
    }

    /// Queues a line's entry on this thread's queue.
    pub(super) fn push(&self, f: &Fields<'_>) -> Push {
        let mine = MINE.try_with(|mine| {
            let Ok(mut mine) = mine.try_borrow_mut() else {
                return None;
            };
            if let Some((id, shard)) = &*mine {
                if *id == self.id {
                    return Some(lock(&shard.queue).push(f));
                }
            }
            let shard = self.shard();
            let pushed = lock(&shard.queue).push(f);
            *mine = Some((self.id, shard));
            Some(pushed)
        });
        match mine {
            Ok(Some(pushed)) => pushed,
            // While the thread is being torn down: found in the list.
            _ => lock(&self.shard().queue).push(f),
        }
    }

    /// This thread's queue, made if it has none.
    fn shard(&self) -> Arc<Shard> {
        let me = std::thread::current().id();
        let mut list = self.list.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = list.shards.iter().find(|s| s.thread == me) {
            return s.clone();
        }
        let mut queue = Queue::new();
        queue.closed = list.closed;
        let shard = Arc::new(Shard {
            thread: me,
            queue: Mutex::new(queue),
        });
        list.shards.push(shard.clone());
        shard
    }

    /// How many queues there are.
    #[cfg(test)]
    pub(super) fn queues(&self) -> usize {
        self.list
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .shards
            .len()
    }

    /// Takes every thread's entries, each queue's into a buffer of its
    /// own from `spares` (or a new one) appended to `batches`; says how
    /// many lines there were. After a `last` take nothing more is queued.
    /// The queue of a thread that has ended goes once it is empty.
    pub(super) fn take(
        &self,
        spares: &mut Vec<Vec<u8>>,
        batches: &mut Vec<Vec<u8>>,
        last: bool,
    ) -> usize {
        let mut list = self.list.lock().unwrap_or_else(PoisonError::into_inner);
        list.closed |= last;
        let mut lines = 0;
        list.shards.retain(|shard| {
            let mut q = lock(&shard.queue);
            if q.lines > 0 || last {
                let mut batch = spares
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity(BATCH_CAPACITY));
                lines += q.take(&mut batch, last);
                if batch.is_empty() {
                    spares.push(batch);
                } else {
                    batches.push(batch);
                }
            }
            // Only the list holds it: its thread has ended.
            let ended = Arc::strong_count(shard) == 1;
            let keep = !(ended && q.lines == 0);
            drop(q);
            keep
        });
        lines
    }
}

/// Locks the queue. A push that panicked while packing its entry left
/// part of it behind, uncounted: the queue is cut back to its last whole
/// entry and used on.
pub(super) fn lock(q: &Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    q.lock().unwrap_or_else(|poisoned| {
        let mut queue = poisoned.into_inner();
        let whole = queue.whole;
        queue.buf.truncate(whole);
        q.clear_poison();
        queue
    })
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
/// a sleeping writer, so handing a line over is an uncontended lock, the
/// formatting and an unlock, never a system call; and a tick's lines go
/// out in one write per thread that had any.
pub(super) fn write_loop(
    shards: Arc<Shards>,
    control: Receiver<Msg>,
    target: Target,
    mut sink: Sink,
    reopen: &AtomicBool,
) {
    let mut health = Health { failing: false };
    let mut spares: Vec<Vec<u8>> = Vec::new();
    let mut batches: Vec<Vec<u8>> = Vec::new();
    // The lines of one batch, formatted.
    let mut text: Vec<u8> = Vec::with_capacity(BATCH_CAPACITY);
    loop {
        let (last, ack) = match control.try_recv() {
            Ok(Msg::Close(ack)) => (true, Some(ack)),
            Err(TryRecvError::Empty) => (false, None),
            Err(TryRecvError::Disconnected) => (true, None),
        };
        let lines = shards.take(&mut spares, &mut batches, last);
        let mut bytes = 0;
        for mut batch in batches.drain(..) {
            text.clear();
            format(&batch, &mut text);
            bytes += batch.len();
            let r = sink.write_batch(&text);
            health.result("write", r);
            batch.clear();
            spares.push(batch);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_that_panicked_leaves_no_part_of_its_line() {
        use super::super::line::tests::fields;
        let q = Mutex::new(Queue::new());
        assert_eq!(lock(&q).push(&fields(Some("/whole"))), Push::Queued);
        let one = lock(&q).buf.clone();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut queue = lock(&q);
            queue.buf.extend_from_slice(&one[..entry::HEAD + 2]);
            panic!("an entry cut short");
        }));
        assert!(panicked.is_err() && q.is_poisoned());
        assert_eq!(lock(&q).buf, one);
        assert!(!q.is_poisoned());
        let mut text = Vec::new();
        format(&lock(&q).buf, &mut text);
        let text = String::from_utf8(text).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert!(text.contains("\"path\":\"/whole\""), "{text}");
    }
}
