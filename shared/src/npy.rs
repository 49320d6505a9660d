//! A small reader and writer for NumPy `.npy` files holding a 2-D little-endian float32 matrix
//! (`<f4`, C order), as `numpy.save` writes item embeddings (`[items, dim]`).
//!
//! Format versions 1.0, 2.0 and 3.0 are read (they differ only in the header-length field and the
//! header's text encoding); files are written as version 1.0 unless the header needs 2.0.
//! A 1-D array is read as `[n, 1]`. Other dtypes and Fortran order are rejected with a message.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

const MAGIC: &[u8] = b"\x93NUMPY";

/// A dense row-major float32 matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// `rows * cols` values, row after row.
    pub data: Vec<f32>,
}

impl Matrix {
    /// A matrix from row-major data; panics if the length disagrees with the shape.
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Self {
        assert_eq!(rows * cols, data.len(), "matrix data length != rows * cols");
        Self { rows, cols, data }
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }
}

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::Invalid(format!(
        "{}: not a float32 .npy matrix: {}",
        path.display(),
        msg.into()
    ))
}

/// The value text of `key` in the header dict (`{'descr': '<f4', 'fortran_order': False, ...}`).
fn header_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("'{key}'");
    let start = header.find(&pat)? + pat.len();
    let rest = header[start..].trim_start().strip_prefix(':')?.trim_start();
    if rest.starts_with('(') {
        let end = rest.find(')')?;
        Some(&rest[..=end])
    } else {
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        Some(rest[..end].trim())
    }
}

/// Parse `.npy` bytes; `path` is used in messages.
pub fn parse_npy(bytes: &[u8], path: &Path) -> Result<Matrix> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(bad(path, "missing the \\x93NUMPY magic"));
    }
    let major = bytes[6];
    let (hlen, hstart) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(bad(path, "truncated header"));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(bad(path, format!("unsupported format version {v}"))),
    };
    let data_start = hstart + hlen;
    if bytes.len() < data_start {
        return Err(bad(path, "truncated header"));
    }
    let header = std::str::from_utf8(&bytes[hstart..data_start])
        .map_err(|_| bad(path, "header is not text"))?;
    let descr = header_value(header, "descr").ok_or_else(|| bad(path, "no 'descr'"))?;
    let descr = descr.trim_matches(['\'', '"']);
    if descr != "<f4" && descr != "f4" && descr != "=f4" {
        return Err(bad(
            path,
            format!("dtype `{descr}` (expected little-endian float32 `<f4`; convert with `.astype('<f4')`)"),
        ));
    }
    match header_value(header, "fortran_order") {
        Some("False") => {}
        Some(_) => return Err(bad(path, "Fortran order (save with np.ascontiguousarray)")),
        None => return Err(bad(path, "no 'fortran_order'")),
    }
    let shape = header_value(header, "shape").ok_or_else(|| bad(path, "no 'shape'"))?;
    let dims: Vec<usize> = shape
        .trim_matches(['(', ')'])
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| bad(path, format!("shape `{shape}`")))?;
    let (rows, cols) = match dims.as_slice() {
        [n] => (*n, 1),
        [n, d] => (*n, *d),
        _ => return Err(bad(path, format!("shape {shape} is not 1-D or 2-D"))),
    };
    let body = &bytes[data_start..];
    let want = rows
        .checked_mul(cols)
        .and_then(|v| v.checked_mul(4))
        .ok_or_else(|| bad(path, "shape too large"))?;
    if body.len() != want {
        return Err(bad(
            path,
            format!(
                "shape {shape} needs {want} data bytes, file has {}",
                body.len()
            ),
        ));
    }
    let data = body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(Matrix { rows, cols, data })
}

/// Read a float32 `.npy` matrix.
pub fn read_npy(path: impl AsRef<Path>) -> Result<Matrix> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_npy(&bytes, path)
}

/// The bytes of a `.npy` file holding `m` (`<f4`, C order, shape `(rows, cols)`).
pub fn npy_bytes(m: &Matrix) -> Vec<u8> {
    let dict = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}",
        m.rows, m.cols
    );
    // Pad with spaces so that magic + version + length + header + '\n' is a multiple of 64.
    let mut v1 = true;
    let mut pre = 10;
    if dict.len() + 1 + pre > u16::MAX as usize {
        v1 = false;
        pre = 12;
    }
    let total = (pre + dict.len() + 1).div_ceil(64) * 64;
    let mut header = dict.into_bytes();
    header.resize(total - pre - 1, b' ');
    header.push(b'\n');
    let mut out = Vec::with_capacity(total + m.data.len() * 4);
    out.extend_from_slice(MAGIC);
    if v1 {
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&[2, 0]);
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(&header);
    for x in &m.data {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// Write `m` as a `.npy` file, atomically.
pub fn write_npy(path: impl AsRef<Path>, m: &Matrix) -> Result<()> {
    let bytes = npy_bytes(m);
    crate::io::write_atomic(path.as_ref(), |w| w.write_all(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_numpy_header() {
        let m = Matrix::new(2, 3, vec![1.0, -2.5, 3.0, 0.0, 1e-3, 7.0]);
        let b = npy_bytes(&m);
        assert_eq!(&b[..8], b"\x93NUMPY\x01\x00");
        assert_eq!((b.len() - 24) % 64, 0);
        let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hl) % 64, 0);
        assert_eq!(parse_npy(&b, Path::new("x.npy")).unwrap(), m);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.npy");
        write_npy(&p, &m).unwrap();
        assert_eq!(read_npy(&p).unwrap(), m);
    }

    #[test]
    fn numpy_written_header_v1_and_v2() {
        // Exactly what numpy 1.x writes for np.zeros((2, 1), '<f4').
        let mut b =
            b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1), }"
                .to_vec();
        b.resize(128 - 1, b' ');
        b.push(b'\n');
        b.extend_from_slice(&1.5f32.to_le_bytes());
        b.extend_from_slice(&(-1.0f32).to_le_bytes());
        let m = parse_npy(&b, Path::new("x")).unwrap();
        assert_eq!((m.rows, m.cols, m.data.clone()), (2, 1, vec![1.5, -1.0]));
        // Version 2: 4-byte header length.
        let hdr = b"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n";
        let mut v2 = b"\x93NUMPY\x02\x00".to_vec();
        v2.extend_from_slice(&(hdr.len() as u32).to_le_bytes());
        v2.extend_from_slice(hdr);
        v2.extend_from_slice(&b[128..]);
        assert_eq!(parse_npy(&v2, Path::new("x")).unwrap(), m);
    }

    #[test]
    fn rejects_other_dtypes_and_sizes() {
        let m = Matrix::new(1, 2, vec![1.0, 2.0]);
        let b = npy_bytes(&m);
        let replace = |from: &[u8], to: &[u8]| {
            let at = b.windows(from.len()).position(|w| w == from).unwrap();
            let mut v = b.clone();
            v[at..at + from.len()].copy_from_slice(to);
            v
        };
        let s = replace(b"<f4", b"<f8");
        let e = parse_npy(&s, Path::new("e.npy")).unwrap_err().to_string();
        assert!(e.contains("dtype `<f8`"), "{e}");
        let e = parse_npy(&b[..b.len() - 1], Path::new("e.npy"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs 8 data bytes"), "{e}");
        let s = replace(b"'fortran_order': False", b"'fortran_order': True ");
        assert!(parse_npy(&s, Path::new("e.npy")).is_err());
        assert!(parse_npy(b"garbage", Path::new("e.npy")).is_err());
    }
}
