//! IDX files, the format of MNIST and Fashion-MNIST: a big-endian header (magic, dimensions)
//! followed by raw values. Files may be gzip-compressed (detected by content, not by name).

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// The contents of one IDX file of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Dimensions from the header, e.g. `[10000, 28, 28]` for images or `[10000]` for labels.
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// The third header byte: 0x08 means unsigned bytes, the only element type qvit reads.
const UNSIGNED_BYTE: u8 = 0x08;

fn invalid(path: &Path, message: String) -> Error {
    Error::InvalidField {
        origin: path.display().to_string(),
        field: "IDX data".to_string(),
        message,
    }
}

/// Reads an IDX file of unsigned bytes, gzip-compressed or raw.
pub fn read(path: &Path) -> Result<IdxArray> {
    let raw = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bytes = if raw.starts_with(&GZIP_MAGIC) {
        gunzip_bounded(&raw).map_err(|m| invalid(path, m))?
    } else {
        raw
    };
    parse(&bytes).map_err(|m| invalid(path, m))
}

/// Largest IDX body accepted (4 GiB): ImageNet's 50,000 validation images at 224 px are 7.5 GB
/// as f32 but an IDX file holds bytes, and no IDX dataset comes near this.
const MAX_VALUES: usize = 1 << 32;

/// Decompresses every member of a gzip file (as `zcat` does), reading the IDX header first and
/// then no more than it promises plus one byte, so that a small file claiming little cannot
/// expand into gigabytes before its size is checked.
fn gunzip_bounded(raw: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let corrupt = |e: std::io::Error| format!("gzip stream is corrupt: {e}");
    let mut reader = flate2::read::MultiGzDecoder::new(raw);
    let mut head = [0u8; 4];
    reader.read_exact(&mut head).map_err(corrupt)?;
    let rank = usize::from(head[3]);
    let mut dims = vec![0u8; 4 * rank];
    reader.read_exact(&mut dims).map_err(corrupt)?;
    let count = dims
        .chunks_exact(4)
        .try_fold(1usize, |n, d| {
            n.checked_mul(u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize)
        })
        .filter(|&n| n <= MAX_VALUES)
        .ok_or_else(|| format!("the header's dimensions promise more than {MAX_VALUES} values"))?;
    let mut out = Vec::with_capacity(4 + dims.len() + count.min(1 << 26));
    out.extend_from_slice(&head);
    out.extend_from_slice(&dims);
    reader
        .take(count as u64 + 1)
        .read_to_end(&mut out)
        .map_err(corrupt)?;
    Ok(out)
}

/// Parses the bytes of an (uncompressed) IDX file.
pub fn parse(bytes: &[u8]) -> std::result::Result<IdxArray, String> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err("not an IDX file: the first two bytes must be zero".to_string());
    }
    if bytes[2] != UNSIGNED_BYTE {
        return Err(format!(
            "element type 0x{:02x} is not supported; qvit reads unsigned-byte (0x08) IDX files",
            bytes[2]
        ));
    }
    let rank = bytes[3] as usize;
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        return Err(format!("header of a rank-{rank} array is cut short"));
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| {
            let b = &bytes[4 + 4 * i..8 + 4 * i];
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
        })
        .collect();
    let count = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("dimensions {dims:?} overflow"))?;
    let body = &bytes[header..];
    if body.len() != count {
        return Err(format!(
            "header promises {count} values ({}), the file holds {}",
            dims.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("×"),
            body.len()
        ));
    }
    Ok(IdxArray {
        dims,
        data: body.to_vec(),
    })
}

/// Encodes unsigned bytes as an IDX file (uncompressed).
pub fn encode(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, UNSIGNED_BYTE, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// Writes an IDX file, gzip-compressed when `path` ends in `.gz`, atomically.
pub fn write(path: &Path, dims: &[usize], data: &[u8]) -> Result<()> {
    let raw = encode(dims, data);
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&raw)
            .and_then(|()| enc.finish())
            .map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })?
    } else {
        raw
    };
    crate::ron_io::write_atomic(path, &bytes)
}

#[cfg(test)]
mod gzip_tests {
    use super::*;
    use std::io::Write;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn every_member_of_a_multi_member_gzip_is_read() {
        let file = encode(&[6], &[1, 2, 3, 4, 5, 6]);
        let (a, b) = file.split_at(7);
        let two = [gzip(a), gzip(b)].concat();
        let bytes = gunzip_bounded(&two).unwrap();
        assert_eq!(parse(&bytes).unwrap().data, [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn decompression_stops_past_what_the_header_promises() {
        // A header promising 3 values, then 10 MB of zeros: read up to 4 values, then refused.
        let mut file = encode(&[3], &[]);
        file.extend(std::iter::repeat_n(0u8, 10_000_000));
        let bytes = gunzip_bounded(&gzip(&file)).unwrap();
        assert_eq!(bytes.len(), 8 + 4);
        assert!(parse(&bytes).unwrap_err().contains("promises 3 values"));
        let huge = encode(&[1 << 20, 1 << 20], &[]);
        assert!(
            gunzip_bounded(&gzip(&huge))
                .unwrap_err()
                .contains("more than")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_hand_made_file() {
        let bytes = [0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6];
        let a = parse(&bytes).unwrap();
        assert_eq!(a.dims, [2, 3]);
        assert_eq!(a.data, [1, 2, 3, 4, 5, 6]);
        assert_eq!(encode(&a.dims, &a.data), bytes);
    }

    #[test]
    fn rejects_truncated_and_foreign_files() {
        let err = parse(&[0, 0, 8, 1, 0, 0, 0, 5, 1, 2]).unwrap_err();
        assert!(err.contains("promises 5 values"), "{err}");
        let err = parse(&[0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0]).unwrap_err();
        assert!(err.contains("0x0d"), "{err}");
        assert!(parse(b"PK\x03\x04").is_err());
    }

    #[test]
    fn gzip_round_trip() {
        let dir = std::env::temp_dir().join(format!("qvit-idx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x-idx1-ubyte.gz");
        write(&path, &[4], &[9, 8, 7, 6]).unwrap();
        let a = read(&path).unwrap();
        assert_eq!((a.dims, a.data), (vec![4], vec![9, 8, 7, 6]));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
