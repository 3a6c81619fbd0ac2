//! NumPy `.npy` files (format version 1.0, little-endian, C order): the golden vectors and the
//! sample inputs and expected outputs written beside an exported model, readable with
//! `numpy.load` and nothing else.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::ron_io::write_atomic;

/// The element types qvit writes.
pub trait Element: Copy {
    /// NumPy's `descr` for the type, e.g. `<f4`.
    const DESCR: &'static str;
    fn extend_le(self, bytes: &mut Vec<u8>);
    fn from_le(bytes: &[u8]) -> Self;
}

macro_rules! element {
    ($t:ty, $descr:literal) => {
        impl Element for $t {
            const DESCR: &'static str = $descr;
            fn extend_le(self, bytes: &mut Vec<u8>) {
                bytes.extend_from_slice(&self.to_le_bytes());
            }
            fn from_le(bytes: &[u8]) -> Self {
                <$t>::from_le_bytes(bytes.try_into().expect("chunks of the element's size"))
            }
        }
    };
}

element!(f32, "<f4");
element!(i32, "<i4");
element!(i64, "<i8");

/// The header of an array of `shape` holding `descr` elements.
fn header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims = match shape {
        [d] => format!("({d},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {dims}, }}");
    // Magic (6) + version (2) + length (2) + dict + newline, padded to a multiple of 64 so that
    // the data is aligned when the file is memory-mapped.
    let unpadded = 10 + dict.len() + 1;
    dict.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

/// The bytes of a `.npy` file holding `data` with `shape` (whose product must be `data.len()`).
pub fn encode<T: Element>(data: &[T], shape: &[usize]) -> Vec<u8> {
    assert_eq!(
        shape.iter().product::<usize>(),
        data.len(),
        "an array's shape covers its data"
    );
    let mut bytes = header(T::DESCR, shape);
    bytes.reserve(size_of_val(data));
    data.iter().for_each(|v| v.extend_le(&mut bytes));
    bytes
}

/// Writes `data` with `shape` to `path`, atomically.
pub fn write<T: Element>(path: &Path, data: &[T], shape: &[usize]) -> Result<()> {
    write_atomic(path, &encode(data, shape))
}

/// Reads a `.npy` file of `T` elements written by [`write`] (or NumPy, in C order): its shape
/// and values.
pub fn read<T: Element>(path: &Path) -> Result<(Vec<usize>, Vec<T>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io {
        path: PathBuf::from(path),
        source: e,
    })?;
    let bad = |m: String| Error::InvalidField {
        origin: path.display().to_string(),
        field: "npy".into(),
        message: m,
    };
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" || bytes[6] != 1 {
        return Err(bad("not a version-1 .npy file".into()));
    }
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(
        bytes
            .get(10..10 + len)
            .ok_or_else(|| bad("truncated header".into()))?,
    )
    .map_err(|_| bad("header is not text".into()))?;
    if !header.contains(&format!("'{}'", T::DESCR)) {
        return Err(bad(format!("expected '{}' elements: {header}", T::DESCR)));
    }
    if header.contains("'fortran_order': True") {
        return Err(bad("Fortran-order arrays are not read".into()));
    }
    let dims = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("no shape".into()))?;
    let shape: Vec<usize> = dims
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| bad(format!("bad shape ({dims})"))))
        .collect::<Result<_>>()?;
    let body = &bytes[10 + len..];
    let expected = shape
        .iter()
        .try_fold(size_of::<T>(), |n, &d| n.checked_mul(d));
    if expected != Some(body.len()) {
        return Err(bad(format!(
            "{} bytes of data do not hold shape {shape:?}",
            body.len()
        )));
    }
    let data = body.chunks_exact(size_of::<T>()).map(T::from_le).collect();
    Ok((shape, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_64_byte_aligned() {
        for shape in [vec![3], vec![1, 16, 28, 28], vec![]] {
            let h = header("<i4", &shape);
            assert_eq!(h.len() % 64, 0, "{shape:?}");
            assert_eq!(*h.last().unwrap(), b'\n');
        }
        // A one-dimensional shape needs its trailing comma to be a tuple in Python.
        let h = String::from_utf8_lossy(&header("<f4", &[5])).into_owned();
        assert!(h.contains("'shape': (5,)"), "{h}");
    }

    #[test]
    fn round_trips_and_refuses_what_it_cannot_read() {
        let dir = std::env::temp_dir().join(format!("qvit-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.npy");
        write(&path, &[1.5f32, -2.0, 0.25, 8.0, 0.0, -0.0], &[2, 3]).unwrap();
        let (shape, data) = read::<f32>(&path).unwrap();
        assert_eq!(shape, [2, 3]);
        assert_eq!(data, [1.5, -2.0, 0.25, 8.0, 0.0, -0.0]);
        let err = read::<i32>(&path).unwrap_err().to_string();
        assert!(err.contains("a.npy") && err.contains("'<i4'"), "{err}");
        // A truncated body is named, not read short.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
        let err = read::<f32>(&path).unwrap_err().to_string();
        assert!(err.contains("do not hold shape [2, 3]"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
