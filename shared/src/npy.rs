//! Item-embedding matrices as NumPy `.npy` files: little-endian float32, C order, `[rows, dim]`.
//!
//! The format (NPY v1.0: magic, version, header length, a Python-dict header padded to a
//! multiple of 64 bytes, then the raw data) is small enough to write by hand, which keeps the
//! library free of an n-d array dependency. The reader accepts what `numpy.save` writes for a
//! 2-d `float32` or `float64` C-order array (versions 1.0, 2.0 and 3.0); `float64` is narrowed to
//! `f32`.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};
use crate::io::write_atomic;

const MAGIC: &[u8] = b"\x93NUMPY";

/// A dense row-major `f32` matrix: row `i` is `data[i * dim..(i + 1) * dim]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    /// Number of rows (items).
    pub rows: usize,
    /// Number of columns (embedding dimension).
    pub dim: usize,
    /// `rows * dim` values, row after row.
    pub data: Vec<f32>,
}

impl Matrix {
    /// A matrix from row-major data; fails when `data.len() != rows * dim`.
    pub fn new(rows: usize, dim: usize, data: Vec<f32>) -> Result<Self> {
        if rows.checked_mul(dim) != Some(data.len()) {
            return Err(Error::Invalid(format!(
                "matrix of {rows}x{dim} needs {} values, got {}",
                rows.saturating_mul(dim),
                data.len()
            )));
        }
        Ok(Self { rows, dim, data })
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

/// The NPY v1.0 header (magic through the trailing newline) for a `[rows, dim]` `<f4` array.
pub fn npy_header(rows: usize, dim: usize) -> Vec<u8> {
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}");
    // magic (6) + version (2) + header length (2) + dict + padding + '\n' ≡ 0 (mod 64)
    let unpadded = MAGIC.len() + 2 + 2 + dict.len() + 1;
    let pad = (64 - unpadded % 64) % 64;
    let header_len = dict.len() + pad + 1;
    let mut out = Vec::with_capacity(unpadded + pad);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header_len as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.resize(out.len() + pad, b' ');
    out.push(b'\n');
    out
}

/// Write `m` to `path` as a float32 `.npy` (atomically: readers never see a torn file).
pub fn write_npy(path: impl AsRef<Path>, m: &Matrix) -> Result<()> {
    let path = path.as_ref();
    if m.rows * m.dim != m.data.len() {
        return Err(Error::Invalid(format!(
            "{}: matrix data has {} values, shape says {}x{}",
            path.display(),
            m.data.len(),
            m.rows,
            m.dim
        )));
    }
    write_atomic(path, |w| {
        w.write_all(&npy_header(m.rows, m.dim))?;
        let mut buf = Vec::with_capacity(m.dim * 4);
        for row in m.data.chunks(m.dim.max(1)) {
            buf.clear();
            for v in row {
                buf.extend_from_slice(&v.to_le_bytes());
            }
            w.write_all(&buf)?;
        }
        Ok(())
    })
}

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::parse(path, 1, 1, msg)
}

/// The value of `'key':` in a NPY header dict, up to the next top-level comma or `}`.
fn dict_value<'a>(dict: &'a str, key: &str) -> Option<&'a str> {
    let at = dict
        .find(&format!("'{key}'"))
        .or_else(|| dict.find(&format!("\"{key}\"")))?;
    let rest = &dict[at + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}']).unwrap_or(rest.len())
    };
    Some(rest[..end].trim())
}

/// Parse an NPY file's bytes into a 2-d matrix (`path` is only used in error messages).
pub fn parse_npy(bytes: &[u8], path: &Path) -> Result<Matrix> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(bad(path, "not a .npy file (bad magic)"));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(bad(path, format!("unsupported .npy version {v}"))),
    };
    let data_start = start + header_len;
    let dict = bytes
        .get(start..data_start)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| bad(path, "truncated or non-text .npy header"))?;
    let descr = dict_value(dict, "descr").ok_or_else(|| bad(path, "header has no 'descr'"))?;
    let descr = descr.trim_matches(['\'', '"']);
    let width = match descr {
        "<f4" => 4,
        "<f8" => 8,
        other => {
            return Err(bad(
                path,
                format!("dtype {other} is not supported (expected <f4 or <f8)"),
            ))
        }
    };
    if dict_value(dict, "fortran_order") != Some("False") {
        return Err(bad(path, "Fortran-order arrays are not supported"));
    }
    let shape = dict_value(dict, "shape").ok_or_else(|| bad(path, "header has no 'shape'"))?;
    let dims: Vec<usize> = shape
        .trim_matches(['(', ')'])
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| bad(path, format!("bad shape {shape}")))?;
    let [rows, dim] = dims[..] else {
        return Err(bad(
            path,
            format!("expected a 2-d array [items, dim], got shape {shape}"),
        ));
    };
    let n = rows
        .checked_mul(dim)
        .ok_or_else(|| bad(path, "shape overflows"))?;
    let body = &bytes[data_start..];
    if body.len() != n * width {
        return Err(bad(
            path,
            format!(
                "shape {shape} needs {} data bytes, file has {}",
                n * width,
                body.len()
            ),
        ));
    }
    let data = if width == 4 {
        body.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else {
        body.chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
            .collect()
    };
    Matrix::new(rows, dim, data)
}

/// Read a 2-d float32 (or float64, narrowed) `.npy` file.
pub fn read_npy(path: impl AsRef<Path>) -> Result<Matrix> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_npy(&bytes, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_aligned_and_round_trips() {
        for (r, d) in [(0, 0), (1, 384), (3686, 384), (123456789, 2560)] {
            let h = npy_header(r, d);
            assert_eq!(h.len() % 64, 0);
            assert_eq!(*h.last().unwrap(), b'\n');
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.npy");
        let m = Matrix::new(3, 2, vec![1.0, -2.5, 0.0, f32::MIN_POSITIVE, 1e30, -0.125]).unwrap();
        write_npy(&p, &m).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert!(
            bytes[10..].starts_with(b"{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }")
        );
        assert_eq!(bytes.len(), 128 + 6 * 4);
        assert_eq!(read_npy(&p).unwrap(), m);
        assert_eq!(m.row(1), &[0.0, f32::MIN_POSITIVE]);
    }

    /// An NPY v1.0 file as `numpy.save` lays it out.
    fn numpy_file(dict: &str, body: &[u8]) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&[1, 0]);
        let pad = (64 - (10 + dict.len() + 1) % 64) % 64;
        b.extend_from_slice(&((dict.len() + pad + 1) as u16).to_le_bytes());
        b.extend_from_slice(dict.as_bytes());
        b.extend(std::iter::repeat_n(b' ', pad));
        b.push(b'\n');
        b.extend_from_slice(body);
        b
    }

    #[test]
    fn reads_numpy_float64_and_rejects_other_layouts() {
        let body: Vec<u8> = [1.5f64, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let p = Path::new("x.npy");
        let f64_2d = "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 2), }";
        let m = parse_npy(&numpy_file(f64_2d, &body), p).unwrap();
        assert_eq!((m.rows, m.dim, m.data), (1, 2, vec![1.5, 2.0]));

        let one_d = "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }";
        let e = parse_npy(&numpy_file(one_d, &body), p).unwrap_err();
        assert!(e.to_string().contains("2-d"), "{e}");
        let fortran = "{'descr': '<f8', 'fortran_order': True, 'shape': (1, 2), }";
        assert!(parse_npy(&numpy_file(fortran, &body), p).is_err());
        let int = "{'descr': '<i8', 'fortran_order': False, 'shape': (1, 2), }";
        assert!(parse_npy(&numpy_file(int, &body), p).is_err());
        let e = parse_npy(&numpy_file(f64_2d, &body[..15]), p).unwrap_err();
        assert!(e.to_string().contains("data bytes"), "{e}");
        let e = parse_npy(b"not numpy", p).unwrap_err();
        assert!(e.to_string().contains("x.npy"), "{e}");
        assert!(Matrix::new(2, 2, vec![0.0; 3]).is_err());
    }
}
