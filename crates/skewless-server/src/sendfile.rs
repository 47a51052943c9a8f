//! Large stored files sent with the kernel's `sendfile` on plain-TCP
//! HTTP/1 connections, while the connection's HTTP/1 writer (the lean
//! path, [`crate::http1`], or hyper) keeps owning the socket and writing
//! everything else.
//!
//! Neither writer copies a body frame of this size: the lean path writes
//! it from its own memory, and hyper's HTTP/1 writer, on a connection whose
//! IO writes vectors (its "queue" strategy, set explicitly in the
//! listener), hands the frame's memory to
//! [`SendfileStream::poll_write_vectored`] as one slice among the head and
//! any other pending bytes. On a plain-TCP connection, the listener drives
//! both within [`FileRegions::serve`], so
//! that a large file answered to an HTTP/1 request finds the connection's
//! regions ([`FileRegions::of`]) and is sent as a [`FileBody`]: it
//! yields, in place of file bytes, slices of one static array of
//! zeros ([`SENTINEL`], never written to, so never resident), and pushes
//! the part of the file each frame stands for onto the connection's
//! [`FileRegions`] as it yields it. When the writer reaches a slice inside
//! the array, the connection sends the front region with `sendfile` instead,
//! at most that slice's length, and reports the bytes the kernel took. The
//! region queue and the writer's slices advance together, so a slice that
//! does not match its region, a region the file no longer holds (truncated
//! underneath) or a slice without a region is an IO error that closes the
//! connection: the zeros are never sent.
//!
//! The file is read from disk by the kernel's own readahead as `sendfile`
//! reaches it; the body only marks its part as read sequentially
//! (`POSIX_FADV_SEQUENTIAL`, which doubles the readahead window). Asking
//! for each frame ahead with `POSIX_FADV_WILLNEED`, as this did before,
//! fills the page cache with single 4 KiB pages, where readahead caches
//! large folios; every receiver on the machine then copies the file out
//! of page-sized pieces (measured on loopback: 45 % more system time per
//! byte), and a cached file's advice cost a walk over its pages per frame.
//! A cold file's `sendfile` waits for the disk where readahead has not
//! caught up, as nginx's does.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fs::File;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
use skewless_store::FilePart;
use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// The most of a file one body frame stands for, and the size of the
/// sentinel array. Each region is at least one `sendfile`; larger frames
/// mean fewer turns through the writer.
const FRAME: usize = 4 << 20;

/// The memory a file frame points into. Zero-initialised and never
/// written, so it takes address space (`.bss`) but no resident pages; its
/// bytes are never sent (see the module's documentation).
static SENTINEL: [u8; FRAME] = [0; FRAME];

/// Whether `slice` lies in [`SENTINEL`], i.e. stands for a file region.
pub(crate) fn is_sentinel(slice: &[u8]) -> bool {
    let start = SENTINEL.as_ptr() as usize;
    let at = slice.as_ptr() as usize;
    !slice.is_empty() && at >= start && at < start + FRAME
}

/// A part of a file that a frame queued for writing stands for.
struct Region {
    file: Arc<File>,
    offset: u64,
    len: usize,
}

tokio::task_local! {
    /// The file regions of the plain-TCP connection this task serves.
    static CONNECTION: FileRegions;
}

/// The file regions of one connection, in the order their frames were
/// handed to hyper; shared by the connection's IO ([`SendfileStream`]) and
/// the requests it serves over HTTP/1 (see [`FileRegions::serve`]).
#[derive(Clone, Default)]
pub struct FileRegions(Arc<Mutex<VecDeque<Region>>>);

impl FileRegions {
    /// Drives `conn`, the connection whose IO is the [`SendfileStream`]
    /// holding these regions, with them reachable from its requests
    /// through [`FileRegions::of`]. The lean path and hyper answer HTTP/1
    /// requests within the connection's task, so they find them; HTTP/2
    /// streams run in tasks of their own, so they never do.
    pub async fn serve<F: std::future::Future>(self, conn: F) -> F::Output {
        CONNECTION.scope(self, conn).await
    }

    /// The regions of the connection a request of `version` is being
    /// answered on, when its file bodies can go out with `sendfile`: on a
    /// plain-TCP connection (see [`FileRegions::serve`]) and HTTP/1.x.
    /// Anything else (TLS, HTTP/2, a task not serving a connection) gets
    /// `None`. Looked up only for a large file, so small responses pay
    /// nothing for it.
    pub fn of(version: http::Version) -> Option<FileRegions> {
        if version > http::Version::HTTP_11 {
            return None;
        }
        CONNECTION.try_with(FileRegions::clone).ok()
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Region>> {
        // The queue is consistent after every operation on it; a panic
        // elsewhere while it was held leaves nothing half done.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A response body that sends `part`, a large file read once from
    /// start to end, through this connection's `sendfile` path.
    pub fn body(&self, part: FilePart) -> FileBody {
        // Advice that fails is only advice lost.
        if let (Ok(from), Ok(len)) = (i64::try_from(part.offset), i64::try_from(part.len)) {
            let _ = posix_fadvise(
                &*part.file,
                from,
                len,
                PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL,
            );
        }
        self.held_body(part)
    }

    /// A response body that sends `part`, a file the store holds open
    /// beside its in-memory copy (so read often and in the page cache),
    /// through this connection's `sendfile` path, without advice.
    pub fn held_body(&self, part: FilePart) -> FileBody {
        FileBody {
            file: part.file,
            offset: part.offset,
            left: part.len,
            regions: self.clone(),
        }
    }
}

/// A response body for part of an open file: frames of sentinel slices,
/// each with its region queued on the connection (see the module's
/// documentation). Only for a connection whose IO is a [`SendfileStream`]
/// sharing the same [`FileRegions`].
pub struct FileBody {
    file: Arc<File>,
    offset: u64,
    left: u64,
    regions: FileRegions,
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.left == 0 {
            return Poll::Ready(None);
        }
        let n = this.left.min(FRAME as u64) as usize;
        this.regions.lock().push_back(Region {
            file: this.file.clone(),
            offset: this.offset,
            len: n,
        });
        this.offset += n as u64;
        this.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&SENTINEL[..n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// An accepted plain-TCP connection that sends file regions with
/// `sendfile` and writes every other byte as the stream would.
pub struct SendfileStream {
    tcp: TcpStream,
    regions: FileRegions,
}

impl SendfileStream {
    /// Wraps `tcp`; `regions` is the queue its requests' file bodies fill.
    pub fn new(tcp: TcpStream, regions: FileRegions) -> SendfileStream {
        SendfileStream { tcp, regions }
    }

    /// Writes `buf` whole, telling the kernel that more follows at once
    /// (`MSG_MORE`): a response head written just before its file's
    /// region goes out in the same segments as the file's first bytes,
    /// not in a packet of its own. The region's `sendfile` ends the hold.
    pub(crate) async fn write_all_more(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self
                .tcp
                .async_io(Interest::WRITABLE, || {
                    SockRef::from(&self.tcp).send_with_flags(buf, nix::libc::MSG_MORE)
                })
                .await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Sends up to `want` bytes of the front region, the one the writer's
    /// sentinel slice of `want` bytes stands for.
    fn poll_send_region(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            let mut regions = self.regions.lock();
            let region = match regions.front_mut() {
                Some(r) if r.len == want => r,
                Some(r) => {
                    return Poll::Ready(Err(io::Error::other(format!(
                        "a file frame of {want} bytes does not match its region of {} bytes",
                        r.len
                    ))))
                }
                None => {
                    return Poll::Ready(Err(io::Error::other("a file frame has no region to send")))
                }
            };
            let mut offset = i64::try_from(region.offset).map_err(io::Error::other)?;
            let sent = self.tcp.try_io(Interest::WRITABLE, || {
                nix::sys::sendfile::sendfile(&self.tcp, &*region.file, Some(&mut offset), want)
                    .map_err(io::Error::from)
            });
            match sent {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file being sent is shorter than when it was opened (changed on disk)",
                    )))
                }
                Ok(n) => {
                    region.offset += n as u64;
                    region.len -= n;
                    if region.len == 0 {
                        regions.pop_front();
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncRead for SendfileStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendfileStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    /// Writes the leading slices up to the first sentinel slice with one
    /// `writev`, or, when a sentinel slice leads, its region with
    /// `sendfile`.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let ordinary = bufs.iter().take_while(|b| !is_sentinel(b)).count();
        if bufs[..ordinary].iter().any(|b| !b.is_empty()) {
            return Pin::new(&mut this.tcp).poll_write_vectored(cx, &bufs[..ordinary]);
        }
        match bufs.get(ordinary) {
            Some(file_frame) => this.poll_send_region(cx, file_frame.len()),
            None => Poll::Ready(Ok(0)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::io::Write;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn file_with(data: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        File::create(&p).unwrap().write_all(data).unwrap();
        (dir, p)
    }

    /// A connected pair: the server end wrapped, the client end reading
    /// everything until the server end is dropped.
    async fn pair(regions: &FileRegions) -> (SendfileStream, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let reader = tokio::spawn(async move {
            let mut client = client;
            let mut got = Vec::new();
            let _ = client.read_to_end(&mut got).await;
            got
        });
        (SendfileStream::new(server, regions.clone()), reader)
    }

    async fn frames(mut body: FileBody) -> Vec<Bytes> {
        let mut out = Vec::new();
        while let Some(f) = body.frame().await {
            out.push(f.unwrap().into_data().unwrap());
        }
        out
    }

    /// Writes `bufs` as hyper's queued writer does: every pending slice
    /// offered to each vectored write, advanced by what it took.
    async fn write_all(io: &mut SendfileStream, mut bufs: Vec<Bytes>) -> io::Result<()> {
        use bytes::Buf;
        while !bufs.is_empty() {
            let slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
            let mut n = io.write_vectored(&slices).await?;
            assert!(n > 0);
            while n > 0 {
                let take = n.min(bufs[0].len());
                bufs[0].advance(take);
                n -= take;
                if bufs[0].is_empty() {
                    bufs.remove(0);
                }
            }
        }
        Ok(())
    }

    #[tokio::test]
    async fn only_http1_requests_on_a_served_connection_find_its_regions() {
        use http::Version;
        assert!(FileRegions::of(Version::HTTP_11).is_none());
        let regions = FileRegions::default();
        let found = regions
            .clone()
            .serve(async {
                let h1 = [Version::HTTP_10, Version::HTTP_11].map(FileRegions::of);
                let h2 = FileRegions::of(Version::HTTP_2);
                // A task spawned from the connection's is not the connection.
                let spawned = tokio::spawn(async { FileRegions::of(Version::HTTP_11).is_some() });
                (h1, h2.is_none(), spawned.await.unwrap())
            })
            .await;
        let ([h10, h11], h2_none, spawned) = found;
        assert!(Arc::ptr_eq(&h10.unwrap().0, &regions.0));
        assert!(Arc::ptr_eq(&h11.unwrap().0, &regions.0));
        assert!(h2_none && !spawned);
    }

    #[tokio::test]
    async fn file_frames_go_out_with_sendfile_between_ordinary_bytes() {
        let content = data(FRAME + 1000);
        let (_d, p) = file_with(&content);
        let regions = FileRegions::default();
        let body = regions.body(FilePart {
            file: Arc::new(File::open(&p).unwrap()),
            offset: 7,
            len: FRAME as u64 + 100,
        });
        assert_eq!(body.size_hint().exact(), Some(FRAME as u64 + 100));
        let frames = frames(body).await;
        assert_eq!(
            frames.iter().map(Bytes::len).collect::<Vec<_>>(),
            [FRAME, 100]
        );
        assert!(frames.iter().all(|f| is_sentinel(f)));
        assert_eq!(regions.lock().len(), 2);

        let (mut io, reader) = pair(&regions).await;
        let mut bufs = vec![Bytes::from_static(b"HEAD")];
        bufs.push(frames[0].clone());
        bufs.push(Bytes::from_static(b"MID"));
        bufs.push(frames[1].clone());
        bufs.push(Bytes::from_static(b"END"));
        write_all(&mut io, bufs).await.unwrap();
        assert!(regions.lock().is_empty());
        drop(io);
        let mut want = b"HEAD".to_vec();
        want.extend_from_slice(&content[7..7 + FRAME]);
        want.extend_from_slice(b"MID");
        want.extend_from_slice(&content[7 + FRAME..7 + FRAME + 100]);
        want.extend_from_slice(b"END");
        let got = reader.await.unwrap();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "the bytes sent differ from the file's");
    }

    #[tokio::test]
    async fn a_frame_without_its_region_or_past_the_end_of_the_file_fails_and_sends_no_zeros() {
        let content = data(1000);
        let (_d, p) = file_with(&content);
        let regions = FileRegions::default();

        // No region queued for the frame.
        let (mut io, reader) = pair(&regions).await;
        let stray = Bytes::from_static(&SENTINEL[..10]);
        assert!(write_all(&mut io, vec![stray]).await.is_err());
        drop(io);
        assert!(reader.await.unwrap().is_empty());

        // A frame that does not match its region.
        let body = regions.body(FilePart {
            file: Arc::new(File::open(&p).unwrap()),
            offset: 0,
            len: 1000,
        });
        let frame = frames(body).await.remove(0);
        let (mut io, reader) = pair(&regions).await;
        assert!(write_all(&mut io, vec![frame.slice(..500)]).await.is_err());
        drop(io);
        assert!(reader.await.unwrap().is_empty());
        regions.lock().clear();

        // The file cut short after the region was queued: what it still
        // holds goes out, then the write fails.
        let body = regions.body(FilePart {
            file: Arc::new(File::open(&p).unwrap()),
            offset: 0,
            len: 1000,
        });
        let frame = frames(body).await.remove(0);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(600)
            .unwrap();
        let (mut io, reader) = pair(&regions).await;
        let err = write_all(&mut io, vec![Bytes::from_static(b"HEAD"), frame])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        drop(io);
        let got = reader.await.unwrap();
        assert_eq!(&got[..4], b"HEAD");
        assert!(got[4..] == content[..600]);
    }
}
