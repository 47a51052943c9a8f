//! Sending a stored file in bounded chunks: the file is opened once (so a
//! blob deleted while it is being sent keeps being read from its open
//! descriptor) and read one chunk at a time on the blocking pool, so any
//! file takes the same small amount of memory however large it is.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use crate::ByteStream;

/// Bytes read from disk per step of a streamed file.
pub const CHUNK: usize = 128 * 1024;

/// An open stored file: its length, and the descriptor positioned nowhere
/// in particular.
pub(crate) struct Opened {
    pub file: File,
    pub len: u64,
}

/// Opens `path` and reads its length (blocking).
pub(crate) fn open(path: &Path) -> std::io::Result<Opened> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    Ok(Opened { file, len })
}

/// Reads `len` bytes from `offset` of an open file into memory (blocking).
pub(crate) fn read_at(file: &mut File, offset: u64, len: u64) -> std::io::Result<Bytes> {
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(len as usize);
    file.take(len).read_to_end(&mut buf)?;
    if (buf.len() as u64) < len {
        return Err(shrank());
    }
    Ok(Bytes::from(buf))
}

pub(crate) fn shrank() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "the stored file is shorter than its recorded size (changed on disk)",
    )
}

/// A stream of `len` bytes of `file` from `offset`, in chunks of at most
/// `chunk` bytes, each read on the blocking pool; the next chunk is read
/// while the previous one is being sent, so at most two are held here.
/// Reads name their offset, so the file may be shared. Ends with an error
/// if the file turns out shorter.
pub(crate) fn stream(file: Arc<File>, offset: u64, len: u64, chunk: usize) -> ByteStream {
    let chunk = chunk as u64;
    let next = move |file: Arc<File>, at: u64, left: u64| {
        (left > 0).then(|| {
            let want = left.min(chunk);
            (read_next(file, at, want), want, at + want, left - want)
        })
    };
    // The state is the read in flight, its length, where the next starts
    // and what remains after it; none after the last chunk or an error.
    Box::pin(futures::stream::unfold(
        next(file, offset, len),
        move |state| async move {
            let (pending, want, at, rest) = state?;
            let item = match pending.await {
                Ok((file, Ok(buf))) if buf.len() as u64 == want => {
                    return Some((Ok(Bytes::from(buf)), next(file, at, rest)));
                }
                Ok((_, Ok(_))) => Err(shrank()),
                Ok((_, Err(e))) => Err(e),
                Err(e) => Err(std::io::Error::other(e)),
            };
            Some((item, None))
        },
    ))
}

type Pending = tokio::task::JoinHandle<(Arc<File>, std::io::Result<Vec<u8>>)>;

/// Reads up to `want` bytes of `file` from `at` on the blocking pool (fewer
/// only at the end of the file).
fn read_next(file: Arc<File>, at: u64, want: u64) -> Pending {
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; want as usize];
        let mut got = 0;
        let r = loop {
            if got == buf.len() {
                break Ok(());
            }
            match file.read_at(&mut buf[got..], at + got as u64) {
                Ok(0) => break Ok(()),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        buf.truncate(got);
        (file, r.map(|_| buf))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use std::io::Write;

    fn file_with(data: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::File::create(&p).unwrap().write_all(data).unwrap();
        (dir, p)
    }

    async fn collect(s: ByteStream) -> (Vec<usize>, Vec<u8>, Option<std::io::Error>) {
        let mut sizes = Vec::new();
        let mut all = Vec::new();
        let mut s = s;
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => {
                    sizes.push(b.len());
                    all.extend_from_slice(&b);
                }
                Err(e) => return (sizes, all, Some(e)),
            }
        }
        (sizes, all, None)
    }

    #[tokio::test]
    async fn streams_whole_files_and_ranges_in_bounded_chunks() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let (_d, p) = file_with(&data);
        let o = open(&p).unwrap();
        assert_eq!(o.len, 10_000);
        let (sizes, got, err) = collect(stream(Arc::new(o.file), 0, 10_000, 4096)).await;
        assert!(err.is_none());
        assert_eq!(sizes, vec![4096, 4096, 1808]);
        assert_eq!(got, data);

        let o = open(&p).unwrap();
        let (sizes, got, err) = collect(stream(Arc::new(o.file), 5000, 4000, 3000)).await;
        assert!(err.is_none());
        assert_eq!(sizes, vec![3000, 1000]);
        assert_eq!(got, &data[5000..9000]);

        let mut f = open(&p).unwrap().file;
        assert_eq!(&read_at(&mut f, 10, 5).unwrap()[..], &data[10..15]);
        assert!(read_at(&mut f, 9_998, 5).is_err());
    }

    #[tokio::test]
    async fn a_deleted_file_keeps_streaming_and_a_truncated_one_ends_with_an_error() {
        let data = vec![7u8; 50_000];
        let (_d, p) = file_with(&data);
        let o = open(&p).unwrap();
        let mut s = stream(Arc::new(o.file), 0, o.len, 10_000);
        assert_eq!(s.next().await.unwrap().unwrap().len(), 10_000);
        std::fs::remove_file(&p).unwrap();
        let (_, rest, err) = collect(s).await;
        assert!(err.is_none());
        assert_eq!(rest.len(), 40_000);

        let (_d, p) = file_with(&data);
        let o = open(&p).unwrap();
        let mut s = stream(Arc::new(o.file), 0, o.len, 10_000);
        assert_eq!(s.next().await.unwrap().unwrap().len(), 10_000);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(15_000)
            .unwrap();
        // The chunk read ahead may have been read before the cut.
        let (_, rest, err) = collect(s).await;
        assert!(10_000 + rest.len() <= 20_000, "{}", rest.len());
        let err = err.expect("the short read is an error");
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
