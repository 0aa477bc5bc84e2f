//! The one codec for untrusted bytes: a bounded reader over a borrowed
//! slice and a writer that produces the canonical encoding.
//!
//! Integers are little-endian and fixed-width. A string or byte string is a
//! `u32` length then its bytes; a list is a `u32` count then its items; an
//! option is a tag byte (0 or 1) then the value. Every length is checked
//! against a per-field maximum before anything is allocated, and decoders
//! call [`Reader::finish`] so trailing bytes are an error. Because there is
//! exactly one way to write each value, re-encoding a decoded value gives the
//! original bytes, which is what signatures and content hashes rely on.

/// Why bytes were refused. The `&'static str` names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// input ended early
    #[error("{0}: truncated")]
    Truncated(&'static str),
    /// bytes were left over after the value
    #[error("{0}: {1} trailing bytes")]
    Trailing(&'static str, usize),
    /// a length or count over the field's bound
    #[error("{what}: length {len} over the limit of {max}")]
    TooLong { what: &'static str, len: u64, max: u64 },
    /// a value outside the field's domain
    #[error("{0}: invalid value")]
    Invalid(&'static str),
    /// bytes that are not UTF-8 where text is required
    #[error("{0}: not utf-8")]
    NotUtf8(&'static str),
    /// a magic number or format version we do not speak
    #[error("{0}: unknown magic or version")]
    BadMagic(&'static str),
}

/// A cursor over untrusted bytes. Every read is bounds-checked.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Takes exactly `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated(what))?;
        let out = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated(what))?;
        self.pos = end;
        Ok(out)
    }

    /// Takes everything that is left.
    pub fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.pos..];
        self.pos = self.buf.len();
        out
    }

    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    pub fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid(what)),
        }
    }

    /// A list count, bounded by `max` and by what the remaining input could
    /// hold at `min_item` bytes an item, so a forged count cannot make the
    /// caller reserve memory the input does not back.
    pub fn count(&mut self, max: u32, min_item: usize, what: &'static str) -> Result<usize, DecodeError> {
        let n = self.u32(what)?;
        if n > max {
            return Err(DecodeError::TooLong { what, len: n.into(), max: max.into() });
        }
        let n = n as usize;
        if n.saturating_mul(min_item) > self.remaining() {
            return Err(DecodeError::Truncated(what));
        }
        Ok(n)
    }

    pub fn bytes(&mut self, max: u32, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let n = self.count(max, 1, what)?;
        self.take(n, what)
    }

    pub fn str(&mut self, max: u32, what: &'static str) -> Result<String, DecodeError> {
        let bytes = self.bytes(max, what)?;
        let s = std::str::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8(what))?;
        Ok(s.to_owned())
    }

    /// An option tag: 0 for none, 1 for some.
    pub fn option(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        self.bool(what)
    }

    /// Refuses trailing bytes.
    pub fn finish(&self, what: &'static str) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(what, n)),
        }
    }
}

/// Appends the canonical encoding of values to a buffer.
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Writer::default()
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    pub fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub fn u16(&mut self, v: u16) {
        self.raw(&v.to_le_bytes());
    }

    pub fn u32(&mut self, v: u32) {
        self.raw(&v.to_le_bytes());
    }

    pub fn u64(&mut self, v: u64) {
        self.raw(&v.to_le_bytes());
    }

    pub fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }

    /// A list count. Callers bound their lists far below `u32::MAX`; a
    /// longer one is a bug in the caller, not input.
    pub fn count(&mut self, n: usize) {
        let n = u32::try_from(n).expect("invariant: encoded lists are bounded below u32::MAX");
        self.u32(n);
    }

    pub fn bytes(&mut self, v: &[u8]) {
        self.count(v.len());
        self.raw(v);
    }

    pub fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }

    pub fn option<T>(&mut self, v: Option<&T>, mut f: impl FnMut(&mut Self, &T)) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                f(self, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_refuses_short_input_and_trailing_bytes() {
        let mut r = Reader::new(&[1, 0, 0]);
        assert_eq!(r.u32("x"), Err(DecodeError::Truncated("x")));
        let mut r = Reader::new(&[1, 0, 0, 0, 9]);
        assert_eq!(r.u32("x"), Ok(1));
        assert_eq!(r.finish("x"), Err(DecodeError::Trailing("x", 1)));
    }

    #[test]
    fn count_cannot_claim_more_items_than_the_input_holds() {
        let mut w = Writer::new();
        w.u32(1000);
        w.raw(&[0; 10]);
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.count(5000, 8, "list"), Err(DecodeError::Truncated("list")));
        let mut r = Reader::new(&bytes);
        assert!(matches!(r.count(10, 1, "list"), Err(DecodeError::TooLong { .. })));
    }

    #[test]
    fn bool_and_option_tags_are_canonical() {
        assert_eq!(Reader::new(&[2]).bool("b"), Err(DecodeError::Invalid("b")));
        assert_eq!(Reader::new(&[1]).option("o"), Ok(true));
    }

    #[test]
    fn strings_must_be_utf8() {
        let mut w = Writer::new();
        w.bytes(&[0xff, 0xfe]);
        let bytes = w.into_bytes();
        assert_eq!(Reader::new(&bytes).str(10, "s"), Err(DecodeError::NotUtf8("s")));
    }
}
