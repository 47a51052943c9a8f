//! Deploy-time compression: the gateway serves br and gzip without spending
//! CPU per request.

use std::io::Write;

/// Files above this size get a faster brotli level: level 11 costs about a
/// second per megabyte.
const BROTLI_MAX_QUALITY_UP_TO: usize = 256 * 1024;

/// Brotli-compresses `data`.
pub fn brotli_compress(data: &[u8]) -> Vec<u8> {
    let quality = if data.len() <= BROTLI_MAX_QUALITY_UP_TO {
        11
    } else {
        9
    };
    let mut out = Vec::with_capacity(data.len() / 3 + 64);
    let params = brotli::enc::BrotliEncoderParams {
        quality,
        lgwin: 22,
        size_hint: data.len(),
        ..Default::default()
    };
    let mut input = data;
    // Writing to a Vec cannot fail.
    let _ = brotli::BrotliCompress(&mut input, &mut out, &params);
    out
}

/// gzip-compresses `data` at the best level.
pub fn gzip_compress(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 3 + 64),
        flate2::Compression::best(),
    );
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

/// Largest blob that gets compressed variants: past this, compression time
/// outweighs the gain for the rare huge text file.
pub(crate) const MAX_COMPRESS: u64 = 64 * 1024 * 1024;

/// The compressed forms of a blob worth keeping.
pub(crate) struct Made {
    pub br: Option<Vec<u8>>,
    pub gzip: Option<Vec<u8>>,
}

/// Compresses `data` both ways and keeps the forms worth serving.
pub(crate) fn variants(data: &[u8]) -> Made {
    let br = brotli_compress(data);
    let gzip = gzip_compress(data);
    Made {
        br: worth_it(data.len(), br.len()).then_some(br),
        gzip: worth_it(data.len(), gzip.len()).then_some(gzip),
    }
}

/// Whether a compressed form is worth serving over the original.
pub(crate) fn worth_it(original: usize, compressed: usize) -> bool {
    compressed + 64 < original && compressed * 100 <= original * 95
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn round_trips() {
        let data = b"body { color: red; } ".repeat(200);
        let br = brotli_compress(&data);
        let mut back = Vec::new();
        brotli::Decompressor::new(&br[..], 4096)
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        let gz = gzip_compress(&data);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        assert!(worth_it(data.len(), br.len()));
        assert!(!worth_it(100, 99));
    }
}
