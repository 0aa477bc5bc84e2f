//! Netascii encoding (RFC 764 line ends, as RFC 1350 asks): a reader that
//! turns a file's bytes into what a netascii transfer carries.
//!
//! LF becomes CR LF and a bare CR becomes CR NUL; every other byte passes
//! through. The host's text is taken to be Unix (LF line ends), so a CR LF
//! in the file goes out as CR NUL CR LF, as tftp-hpa does. The output is
//! longer than the file, so a netascii transfer's size is not known in
//! advance and `tsize` is not offered for it. Reads only from the wrapped
//! reader; no I/O of its own.

use std::io::{self, Read};

/// Wraps a reader of file bytes; reads give netascii bytes.
pub struct NetAscii<R> {
    inner: R,
    /// The second byte of an expansion that did not fit the last read.
    carry: Option<u8>,
    scratch: Vec<u8>,
}

impl<R> NetAscii<R> {
    pub fn new(inner: R) -> Self {
        NetAscii { inner, carry: None, scratch: Vec::new() }
    }
}

impl<R: Read> Read for NetAscii<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut out = 0;
        if let Some(b) = self.carry.take() {
            buf[0] = b;
            out = 1;
        }
        // Each input byte yields at most two, so half the free space in
        // raw bytes always fits; one byte when only one slot is free, with
        // a possible carry.
        let room = buf.len() - out;
        if room == 0 {
            return Ok(out);
        }
        let want = (room / 2).max(1);
        self.scratch.resize(want, 0);
        let n = loop {
            match self.inner.read(&mut self.scratch[..want]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Bytes already placed from the carry must not be lost.
                Err(_) if out > 0 => return Ok(out),
                other => break other?,
            }
        };
        for &b in &self.scratch[..n] {
            let (first, second) = match b {
                b'\n' => (b'\r', Some(b'\n')),
                b'\r' => (b'\r', Some(0)),
                other => (other, None),
            };
            buf[out] = first;
            out += 1;
            if let Some(s) = second {
                match buf.get_mut(out) {
                    Some(slot) => {
                        *slot = s;
                        out += 1;
                    }
                    None => self.carry = Some(s),
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_with_reads_of(input: &[u8], size: usize) -> Vec<u8> {
        let mut r = NetAscii::new(input);
        let mut out = Vec::new();
        let mut buf = vec![0; size];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn line_feeds_become_cr_lf_and_bare_cr_becomes_cr_nul() {
        assert_eq!(encode_with_reads_of(b"a\nb\rc\r\n", 512), b"a\r\nb\r\0c\r\0\r\n");
    }

    #[test]
    fn expansions_split_across_reads_of_any_size_are_kept_whole() {
        let input: Vec<u8> = (0..2000u32).map(|i| [b'x', b'\n', b'\r', b'y'][(i * 7 % 4) as usize]).collect();
        let expected = encode_with_reads_of(&input, 4096);
        for size in [1, 2, 3, 7, 512] {
            assert_eq!(encode_with_reads_of(&input, size), expected, "read size {size}");
        }
        let lfs = input.iter().filter(|&&b| b == b'\n' || b == b'\r').count();
        assert_eq!(expected.len(), input.len() + lfs);
    }
}
