//! The queues of lines, one per thread, and the writer thread that takes
//! them in batches, formats the requests' lines, writes each batch with
//! one system call, reopens the file when asked, and survives every write
//! error.

use std::cell::RefCell;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::ThreadId;
use std::time::Duration;

use metrics::Counter;

use super::line::{write_line, Fields};
use super::Line;

/// How often the writer takes the queued lines and writes them while
/// lines come, and so about the longest a line waits before it reaches
/// the file.
pub const TICK: Duration = Duration::from_millis(10);
/// How long the writer waits at most, once a tick has brought no line,
/// before it looks again without being woken: a push, a message, a
/// reopen or the last handle's end wakes it before.
#[cfg(not(test))]
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// In unit tests the writer never wakes by itself: whatever it must see
/// wakes it, or the test waits in vain.
#[cfg(test)]
const IDLE_WAIT: Duration = Duration::from_secs(3600);
/// Lines waiting for the writer at most, per thread; more are dropped and
/// counted.
pub(super) const QUEUE_LINES: usize = 4096;
/// Bytes waiting for the writer at most, per thread (long paths make long
/// lines): formatted lines, and each queued request's line as its size.
pub(super) const QUEUE_BYTES: usize = 1024 * 1024;
/// What each buffer starts with.
const BATCH_CAPACITY: usize = 64 * 1024;
/// Bytes of a line besides its path, at least: a path that cannot fit
/// with them is refused before it is formatted.
const LINE_BESIDES_PATH: usize = 160;
/// What a queued request's line counts against [`QUEUE_BYTES`].
pub(super) const LINE_SIZE: usize = std::mem::size_of::<(usize, Line)>();

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

/// The lines of one thread waiting for the writer, under a lock which
/// only the writer's take ever contends for. A request's line is copied
/// to the end of the queue's records, and formatted by the writer in a
/// batch with the others (where the formatting code stays in the
/// instruction cache and off the request's thread); the request keeps its
/// record's box, still in its caches, for the next request. The few lines
/// logged from bare fields are formatted at once into a buffer, each
/// record noting where its line goes among them. The writer swaps the
/// whole queue for an empty one, so neither side allocates once the
/// buffers have grown, and while lines come a request never wakes the
/// writer (see [`Shards::park`]).
pub(super) struct Queue {
    /// Lines formatted at once, back to back.
    buf: Vec<u8>,
    /// Records to format, each with the length of `buf` when it came.
    records: Vec<(usize, Line)>,
    lines: usize,
    closed: bool,
}

impl Queue {
    pub(super) fn new() -> Queue {
        Queue {
            buf: Vec::with_capacity(BATCH_CAPACITY),
            records: Vec::new(),
            lines: 0,
            closed: false,
        }
    }

    /// What the queue counts against [`QUEUE_BYTES`].
    fn bytes(&self) -> usize {
        self.buf.len() + self.records.len() * LINE_SIZE
    }

    /// Whether the queue is closed or at its bound for `more` bytes.
    fn refuses(&self, more: usize) -> Option<Push> {
        if self.closed {
            Some(Push::Closed)
        } else if self.lines >= QUEUE_LINES || self.bytes() + more > QUEUE_BYTES {
            Some(Push::Full)
        } else {
            None
        }
    }

    /// Appends one whole line unless the queue is at its bound or closed.
    pub(super) fn push(&mut self, f: &Fields<'_>) -> Push {
        let path = f.path.map_or(0, str::len);
        if let Some(refused) = self.refuses(LINE_BESIDES_PATH + path) {
            return refused;
        }
        let before = self.buf.len();
        write_line(&mut self.buf, f);
        // Escaping can make a line several times its path.
        if self.bytes() > QUEUE_BYTES {
            self.buf.truncate(before);
            return Push::Full;
        }
        self.lines += 1;
        Push::Queued
    }

    /// Copies a finished request's line to the queue for the writer to
    /// format, unless the queue is at its bound or closed.
    fn push_line(&mut self, line: &Line) -> Push {
        if let Some(refused) = self.refuses(LINE_SIZE) {
            return refused;
        }
        let at = self.buf.len();
        self.records.push((at, *line));
        self.lines += 1;
        Push::Queued
    }

    /// Swaps what is queued into `batch` (empty, its capacity reused for
    /// the next lines) and says how many lines there were; after a `last`
    /// take nothing more is queued.
    fn take(&mut self, batch: &mut Batch, last: bool) -> usize {
        debug_assert!(batch.buf.is_empty() && batch.records.is_empty());
        std::mem::swap(&mut self.buf, &mut batch.buf);
        std::mem::swap(&mut self.records, &mut batch.records);
        self.closed |= last;
        std::mem::take(&mut self.lines)
    }
}

/// One thread's queue.
struct Shard {
    thread: ThreadId,
    queue: Mutex<Queue>,
}

/// What the writer took from one thread's queue.
pub(super) struct Batch {
    buf: Vec<u8>,
    records: Vec<(usize, Line)>,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            buf: Vec::with_capacity(BATCH_CAPACITY),
            records: Vec::new(),
        }
    }

    /// The batch's text, in the order its lines came: the formatted
    /// lines as they are when there are no records, else everything
    /// formatted into `scratch` (cleared first).
    pub(super) fn text<'a>(&'a self, scratch: &'a mut Vec<u8>) -> &'a [u8] {
        if self.records.is_empty() {
            return &self.buf;
        }
        scratch.clear();
        let mut from = 0;
        for (at, r) in &self.records {
            scratch.extend_from_slice(&self.buf[from..*at]);
            from = *at;
            write_line(scratch, &r.fields());
        }
        scratch.extend_from_slice(&self.buf[from..]);
        scratch
    }

    /// Empties the batch, its capacity kept.
    pub(super) fn finish(&mut self) {
        self.buf.clear();
        self.records.clear();
    }
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
    /// Set while the writer waits for a line: the push that finds it set
    /// wakes the writer. While lines come, the writer never waits so and
    /// a push only reads it.
    parked: AtomicBool,
    /// The writer thread, to wake it.
    writer: OnceLock<std::thread::Thread>,
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
            parked: AtomicBool::new(false),
            writer: OnceLock::new(),
        }
    }

    /// Wakes the writer if it waits for a line (after a push).
    #[inline]
    fn notify(&self, pushed: Push) -> Push {
        // Ordered by the queue's lock: a writer that set the flag before
        // it found this thread's queue empty is seen waiting here (see
        // `park`).
        if pushed == Push::Queued
            && self.parked.load(Ordering::Relaxed)
            && self.parked.swap(false, Ordering::AcqRel)
        {
            self.wake();
        }
        pushed
    }

    /// Wakes the writer, whatever it waits for.
    pub(super) fn wake(&self) {
        if let Some(writer) = self.writer.get() {
            writer.unpark();
        }
    }

    /// On the writer's thread: waits until a push or [`Shards::wake`]
    /// wakes it, or `at_most`.
    fn park(&self, at_most: Duration) {
        self.parked.store(true, Ordering::SeqCst);
        // A line queued after the last take, before the flag was set,
        // woke no one: looked for under each queue's lock.
        if !self.any_queued() {
            std::thread::park_timeout(at_most);
        }
        self.parked.store(false, Ordering::SeqCst);
    }

    /// Whether any queue holds a line.
    fn any_queued(&self) -> bool {
        let list = self.list.lock().unwrap_or_else(PoisonError::into_inner);
        list.shards.iter().any(|s| lock(&s.queue).lines > 0)
    }

    /// Runs `f` once on this thread's queue, locked.
    fn with_mine<T>(&self, mut f: impl FnMut(&mut Queue) -> T) -> T {
        let mine = MINE.try_with(|mine| {
            let Ok(mut mine) = mine.try_borrow_mut() else {
                return None;
            };
            if let Some((id, shard)) = &*mine {
                if *id == self.id {
                    return Some(f(&mut lock(&shard.queue)));
                }
            }
            let shard = self.shard();
            let done = f(&mut lock(&shard.queue));
            *mine = Some((self.id, shard));
            Some(done)
        });
        match mine {
            Ok(Some(done)) => done,
            // While the thread is being torn down: found in the list.
            _ => f(&mut lock(&self.shard().queue)),
        }
    }

    /// Formats a line into this thread's queue.
    pub(super) fn push(&self, f: &Fields<'_>) -> Push {
        let pushed = self.with_mine(|q| q.push(f));
        self.notify(pushed)
    }

    /// Copies a finished request's line to this thread's queue for the
    /// writer to format (see [`Queue::push_line`]).
    pub(super) fn push_line(&self, line: &Line) -> Push {
        let pushed = self.with_mine(|q| q.push_line(line));
        self.notify(pushed)
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

    /// Whether the writer waits for a line.
    #[cfg(test)]
    pub(super) fn parked(&self) -> bool {
        self.parked.load(Ordering::SeqCst)
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

    /// Takes every thread's lines, each queue's into a batch of its own
    /// from `spares` (or a new one) appended to `batches`; says how many
    /// lines there were. After a `last` take nothing more is queued. The
    /// queue of a thread that has ended goes once it is empty.
    pub(super) fn take(
        &self,
        spares: &mut Vec<Batch>,
        batches: &mut Vec<Batch>,
        last: bool,
    ) -> usize {
        let mut list = self.list.lock().unwrap_or_else(PoisonError::into_inner);
        list.closed |= last;
        let mut lines = 0;
        list.shards.retain(|shard| {
            // Only the list holds it: its thread has ended.
            let ended = Arc::strong_count(shard) == 1;
            let mut q = lock(&shard.queue);
            if q.lines > 0 || last {
                let mut batch = spares.pop().unwrap_or_else(Batch::new);
                lines += q.take(&mut batch, last);
                if batch.buf.is_empty() && batch.records.is_empty() {
                    spares.push(batch);
                } else {
                    batches.push(batch);
                }
            }
            // Taken, an ended thread's queue is empty and goes.
            !ended
        });
        lines
    }
}

/// Locks the queue. A push that panicked while formatting its line left
/// part of it behind, uncounted: the queue is cut back to its last whole
/// line and used on.
pub(super) fn lock(q: &Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    q.lock().unwrap_or_else(|poisoned| {
        let mut queue = poisoned.into_inner();
        let whole = queue
            .buf
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        queue.buf.truncate(whole);
        for (at, _) in &mut queue.records {
            *at = (*at).min(whole);
        }
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

/// Writes the queued lines every [`TICK`] while lines come, until told to
/// stop or every sender is gone.
///
/// While lines come the writer polls rather than waits to be woken: a
/// request then never has to wake it, so handing a line over is an
/// uncontended lock, a copy and an unlock, never a system call; and a
/// tick's lines go out in one write per thread that had any. A tick that
/// brings no line puts the writer to sleep until the next push wakes it
/// (one system call on that request), so an idle server's writer does
/// not wake a hundred times a second for nothing.
pub(super) fn write_loop(
    shards: Arc<Shards>,
    control: Receiver<Msg>,
    target: Target,
    mut sink: Sink,
    reopen: &AtomicBool,
) {
    let mut health = Health { failing: false };
    let mut spares: Vec<Batch> = Vec::new();
    let mut batches: Vec<Batch> = Vec::new();
    let mut scratch: Vec<u8> = Vec::with_capacity(BATCH_CAPACITY);
    let _ = shards.writer.set(std::thread::current());
    loop {
        let (last, ack) = match control.try_recv() {
            Ok(Msg::Close(ack)) => (true, Some(ack)),
            Err(TryRecvError::Empty) => (false, None),
            Err(TryRecvError::Disconnected) => (true, None),
        };
        let lines = shards.take(&mut spares, &mut batches, last);
        let mut bytes = 0;
        for mut batch in batches.drain(..) {
            let text = batch.text(&mut scratch);
            bytes += text.len();
            let r = sink.write_batch(text);
            health.result("write", r);
            batch.finish();
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
        if lines == 0 {
            shards.park(IDLE_WAIT);
        } else if lines < QUEUE_LINES / 2 && bytes < QUEUE_BYTES / 2 {
            std::thread::sleep(TICK);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_that_panicked_leaves_no_part_of_its_line() {
        let q = Mutex::new(Queue::new());
        lock(&q).buf.extend_from_slice(b"{\"whole\":1}\n");
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut queue = lock(&q);
            queue.buf.extend_from_slice(b"{\"part");
            panic!("a line cut short");
        }));
        assert!(panicked.is_err() && q.is_poisoned());
        assert_eq!(lock(&q).buf, b"{\"whole\":1}\n");
        assert!(!q.is_poisoned());
    }
}
