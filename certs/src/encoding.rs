//! Bounded big-endian binary encoding shared by certificates and the wire protocol.
//!
//! Every variable-length field carries an explicit maximum, so a decoder never
//! allocates more than the caller allowed, whatever the input claims.

use thiserror::Error;

/// Why bytes could not be decoded. Decoding never panics.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("input ends early while reading {0}")]
    Truncated(&'static str),
    #[error("{field} is {len} bytes long, the limit is {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{0} bytes left over after the last field")]
    TrailingBytes(usize),
    #[error("invalid value of {field}: {detail}")]
    Invalid { field: &'static str, detail: String },
    #[error("unsupported version {0}")]
    UnsupportedVersion(u8),
}

impl DecodeError {
    pub fn invalid(field: &'static str, detail: impl Into<String>) -> Self {
        DecodeError::Invalid {
            field,
            detail: detail.into(),
        }
    }
}

/// Appends fields to a byte buffer.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(n: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(n),
        }
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u128(&mut self, v: u128) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Raw bytes with no length prefix (fixed-size fields).
    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }

    /// Bytes with a u16 length prefix. Callers keep `v` within the field's
    /// maximum; the debug assertion catches encoder bugs in tests.
    pub fn bytes16(&mut self, v: &[u8]) -> &mut Self {
        debug_assert!(v.len() <= u16::MAX as usize);
        self.u16(v.len() as u16);
        self.raw(v)
    }

    /// Bytes with a u32 length prefix.
    pub fn bytes32(&mut self, v: &[u8]) -> &mut Self {
        debug_assert!(v.len() <= u32::MAX as usize);
        self.u32(v.len() as u32);
        self.raw(v)
    }

    pub fn str16(&mut self, v: &str) -> &mut Self {
        self.bytes16(v.as_bytes())
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads fields from a byte slice, refusing anything beyond the given limits.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Everything read so far.
    pub fn consumed(&self) -> &'a [u8] {
        &self.buf[..self.pos]
    }

    pub fn raw(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated(field));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.raw(N, field)?);
        Ok(out)
    }

    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    pub fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    pub fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array(field)?))
    }

    pub fn u128(&mut self, field: &'static str) -> Result<u128, DecodeError> {
        Ok(u128::from_be_bytes(self.array(field)?))
    }

    /// Bytes with a u16 length prefix, at most `max` long.
    pub fn bytes16(&mut self, max: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.u16(field)? as usize;
        self.bounded(len, max, field)
    }

    /// Bytes with a u32 length prefix, at most `max` long.
    pub fn bytes32(&mut self, max: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.u32(field)? as usize;
        self.bounded(len, max, field)
    }

    fn bounded(
        &mut self,
        len: usize,
        max: usize,
        field: &'static str,
    ) -> Result<&'a [u8], DecodeError> {
        if len > max {
            return Err(DecodeError::TooLong { field, len, max });
        }
        self.raw(len, field)
    }

    /// UTF-8 text with a u16 length prefix, at most `max` bytes.
    pub fn str16(&mut self, max: usize, field: &'static str) -> Result<&'a str, DecodeError> {
        let bytes = self.bytes16(max, field)?;
        std::str::from_utf8(bytes).map_err(|_| DecodeError::invalid(field, "not UTF-8"))
    }

    /// A count prefix (u16) checked against `max` before anything is allocated.
    pub fn count16(&mut self, max: usize, field: &'static str) -> Result<usize, DecodeError> {
        let n = self.u16(field)? as usize;
        if n > max {
            return Err(DecodeError::TooLong { field, len: n, max });
        }
        Ok(n)
    }

    /// Fails unless every byte was consumed: no trailing data may ride along
    /// with signed content.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_limits() {
        let mut w = Writer::new();
        w.u8(7)
            .u16(300)
            .u32(70_000)
            .u64(1 << 40)
            .i64(-5)
            .u128(1 << 100);
        w.str16("蛟桥镇").bytes32(&[1, 2, 3]);
        let bytes = w.into_vec();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u8("a").unwrap(), 7);
        assert_eq!(r.u16("b").unwrap(), 300);
        assert_eq!(r.u32("c").unwrap(), 70_000);
        assert_eq!(r.u64("d").unwrap(), 1 << 40);
        assert_eq!(r.i64("e").unwrap(), -5);
        assert_eq!(r.u128("f").unwrap(), 1 << 100);
        assert_eq!(r.str16(64, "g").unwrap(), "蛟桥镇");
        assert_eq!(r.bytes32(3, "h").unwrap(), &[1, 2, 3]);
        r.finish().unwrap();
    }

    #[test]
    fn refuses_oversized_and_truncated() {
        let mut w = Writer::new();
        w.bytes16(&[0u8; 10]);
        let bytes = w.into_vec();
        assert!(matches!(
            Reader::new(&bytes).bytes16(9, "x"),
            Err(DecodeError::TooLong {
                len: 10,
                max: 9,
                ..
            })
        ));
        assert_eq!(
            Reader::new(&bytes[..5]).bytes16(10, "x"),
            Err(DecodeError::Truncated("x"))
        );
        let mut r = Reader::new(&[0, 1, 2]);
        r.u8("a").unwrap();
        assert_eq!(r.finish(), Err(DecodeError::TrailingBytes(2)));
        // A lying u32 length must not allocate or panic.
        assert!(Reader::new(&[0xff, 0xff, 0xff, 0xff])
            .bytes32(1024, "y")
            .is_err());
        assert!(Reader::new(&[0xff, 0xfe]).str16(usize::MAX, "z").is_err());
    }
}
