//! The bounded reader and the writer behind [`super::packet`]: TFTP's
//! big-endian `u16`s and NUL-terminated strings, in the style of
//! `shoal_proto::codec` (a cursor over a borrowed slice, every length
//! checked before use, trailing bytes an error). The writer fills a
//! caller's buffer and never grows it. No I/O, no allocation.

use super::packet::{BufferTooSmall, PacketError};

/// A cursor over untrusted bytes; every read is bounds-checked.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(super) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(super) fn u16(&mut self, what: &'static str) -> Result<u16, PacketError> {
        let bytes = self.buf.get(self.pos..self.pos.saturating_add(2)).ok_or(PacketError::Truncated(what))?;
        self.pos += 2;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    /// Bytes up to a NUL (consumed, not returned), at most `max` of them.
    pub(super) fn cstr(&mut self, max: usize, what: &'static str) -> Result<&'a [u8], PacketError> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let window = &rest[..rest.len().min(max.saturating_add(1))];
        match window.iter().position(|&b| b == 0) {
            Some(n) => {
                self.pos += n + 1;
                Ok(&window[..n])
            }
            None if rest.len() > max => Err(PacketError::TooLong { what, max }),
            None => Err(PacketError::Unterminated(what)),
        }
    }

    pub(super) fn rest(&mut self) -> &'a [u8] {
        let out = self.buf.get(self.pos..).unwrap_or_default();
        self.pos = self.buf.len();
        out
    }

    pub(super) fn finish(&self, what: &'static str) -> Result<(), PacketError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(PacketError::Trailing(what, n)),
        }
    }
}

/// Appends to a caller's buffer without growing it.
pub(super) struct Writer<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl<'b> Writer<'b> {
    pub(super) fn new(buf: &'b mut [u8]) -> Self {
        Writer { buf, pos: 0 }
    }

    /// Bytes written so far.
    pub(super) fn len(&self) -> usize {
        self.pos
    }

    pub(super) fn bytes(&mut self, bytes: &[u8]) -> Result<(), BufferTooSmall> {
        let end = self.pos.checked_add(bytes.len()).ok_or(BufferTooSmall)?;
        self.buf.get_mut(self.pos..end).ok_or(BufferTooSmall)?.copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }

    pub(super) fn u16(&mut self, v: u16) -> Result<(), BufferTooSmall> {
        self.bytes(&v.to_be_bytes())
    }

    pub(super) fn cstr(&mut self, s: &[u8]) -> Result<(), BufferTooSmall> {
        self.bytes(s)?;
        self.bytes(&[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cstr_stops_at_the_first_nul_within_the_limit() {
        let mut r = Reader::new(b"ab\0cd\0");
        assert_eq!(r.cstr(2, "x"), Ok(&b"ab"[..]));
        assert_eq!(r.cstr(1, "y"), Err(PacketError::TooLong { what: "y", max: 1 }));
        assert_eq!(r.cstr(9, "y"), Ok(&b"cd"[..]));
        assert_eq!(r.finish("z"), Ok(()));
        assert_eq!(Reader::new(b"ab").cstr(9, "w"), Err(PacketError::Unterminated("w")));
    }

    #[test]
    fn the_writer_refuses_to_overrun_its_buffer() {
        let mut buf = [0; 3];
        let mut w = Writer::new(&mut buf);
        assert_eq!(w.u16(7), Ok(()));
        assert_eq!(w.len(), 2);
        assert_eq!(w.cstr(b"x"), Err(BufferTooSmall));
    }
}
