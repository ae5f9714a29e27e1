//! Compact encoding of the records of an [`EdgePage`](super::EdgePage).
//!
//! An edge page's records are archived as one byte string, not as rkyv structs: each record is
//! delta encoded against the previous one of the page and written as LEB128 varints (zigzag for
//! signed deltas), optional fields behind a flag byte. An edge of a bulk load (no source, no
//! properties, unbounded valid time) takes 6–8 bytes before compression instead of about 100,
//! and a page of consecutive edges compresses further. The encoding is exact: every field of
//! every [`EdgeRecord`] round-trips, including extreme values, and a malformed string is an
//! error, never a shorter or different page.
//!
//! It is applied through rkyv's "with" mechanism ([`EdgeColumns`]), so an `EdgePage` seals,
//! opens and validates like every other record.

use rkyv::rancor::{Fallible, Source};
use rkyv::ser::{Allocator, Writer};
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::with::{ArchiveWith, DeserializeWith, SerializeWith};
use rkyv::Place;

use super::adj::{put, unzig, zig, Reader};
use super::{CodecError, EdgeRecord};

const F_SOURCE: u8 = 1;
const F_FROM: u8 = 2;
const F_TO: u8 = 4;
const F_RETRACTED: u8 = 8;
const F_PROPS: u8 = 16;

fn put_str(out: &mut Vec<u8>, s: &str) {
    put(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn get_str(r: &mut Reader<'_>) -> Result<String, CodecError> {
    let len = usize::try_from(r.get()?).map_err(|_| CodecError)?;
    let end = r.pos.checked_add(len).ok_or(CodecError)?;
    let bytes = r.buf.get(r.pos..end).ok_or(CodecError)?;
    r.pos = end;
    String::from_utf8(bytes.to_vec()).map_err(|_| CodecError)
}

/// Encodes edge records (in page order).
pub(crate) fn encode_edges(edges: &[EdgeRecord]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + edges.len() * 8);
    put(&mut out, edges.len() as u64);
    let (mut pid, mut pf, mut pt, mut pr) = (0i64, 0i64, 0i64, 0i64);
    for e in edges {
        put(&mut out, zig((e.id as i64).wrapping_sub(pid).wrapping_sub(1)));
        put(&mut out, zig((e.from as i64).wrapping_sub(pf)));
        put(&mut out, zig((e.to as i64).wrapping_sub(pt)));
        put(&mut out, u64::from(e.kind));
        let mut flags = 0;
        if e.source.is_some() {
            flags |= F_SOURCE;
        }
        if e.valid_from != i64::MIN {
            flags |= F_FROM;
        }
        if e.valid_to != i64::MAX {
            flags |= F_TO;
        }
        if e.retracted_at.is_some() {
            flags |= F_RETRACTED;
        }
        if e.props != 0 {
            flags |= F_PROPS;
        }
        out.push(flags);
        put(&mut out, zig(e.recorded_at.wrapping_sub(pr)));
        if flags & F_FROM != 0 {
            put(&mut out, zig(e.valid_from.wrapping_sub(e.recorded_at)));
        }
        if flags & F_TO != 0 {
            put(&mut out, zig(e.valid_to.wrapping_sub(e.valid_from)));
        }
        if let Some(t) = e.retracted_at {
            put(&mut out, zig(t.wrapping_sub(e.recorded_at)));
        }
        if flags & F_PROPS != 0 {
            out.push(e.props);
        }
        if let Some((system, ext)) = &e.source {
            put_str(&mut out, system);
            put_str(&mut out, ext);
        }
        (pid, pf, pt, pr) = (e.id as i64, e.from as i64, e.to as i64, e.recorded_at);
    }
    out
}

/// Decodes what [`encode_edges`] wrote. Any inconsistency (a truncated or overlong string, an
/// unknown flag, a trailing byte) is an error.
pub(crate) fn decode_edges(data: &[u8]) -> Result<Vec<EdgeRecord>, CodecError> {
    let mut r = Reader { buf: data, pos: 0 };
    let count = usize::try_from(r.get()?).map_err(|_| CodecError)?;
    // Every record takes at least 6 bytes: a count beyond that is a lie, not an allocation.
    if count > data.len() / 6 {
        return Err(CodecError);
    }
    let mut out = Vec::with_capacity(count);
    let (mut pid, mut pf, mut pt, mut pr) = (0i64, 0i64, 0i64, 0i64);
    for _ in 0..count {
        let id = pid.wrapping_add(1).wrapping_add(unzig(r.get()?));
        let from = pf.wrapping_add(unzig(r.get()?));
        let to = pt.wrapping_add(unzig(r.get()?));
        let kind = u32::try_from(r.get()?).map_err(|_| CodecError)?;
        let flags = r.byte()?;
        if flags & !(F_SOURCE | F_FROM | F_TO | F_RETRACTED | F_PROPS) != 0 {
            return Err(CodecError);
        }
        let recorded_at = pr.wrapping_add(unzig(r.get()?));
        let valid_from = if flags & F_FROM != 0 { recorded_at.wrapping_add(unzig(r.get()?)) } else { i64::MIN };
        let valid_to = if flags & F_TO != 0 { valid_from.wrapping_add(unzig(r.get()?)) } else { i64::MAX };
        let retracted_at =
            if flags & F_RETRACTED != 0 { Some(recorded_at.wrapping_add(unzig(r.get()?))) } else { None };
        let props = if flags & F_PROPS != 0 {
            match r.byte()? {
                0 => return Err(CodecError),
                p => p,
            }
        } else {
            0
        };
        let source = if flags & F_SOURCE != 0 { Some((get_str(&mut r)?, get_str(&mut r)?)) } else { None };
        out.push(EdgeRecord {
            id: id as u64,
            from: from as u64,
            to: to as u64,
            kind,
            source,
            valid_from,
            valid_to,
            recorded_at,
            retracted_at,
            props,
        });
        (pid, pf, pt, pr) = (id, from, to, recorded_at);
    }
    if r.pos != data.len() {
        return Err(CodecError);
    }
    Ok(out)
}

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("malformed record")
    }
}

impl std::error::Error for CodecError {}

/// The rkyv "with" wrapper that archives a page's `Vec<EdgeRecord>` as the bytes of
/// [`encode_edges`].
pub struct EdgeColumns;

/// [`EdgeColumns`]' resolver: the byte string's and its length.
pub struct EdgeColumnsResolver {
    inner: VecResolver,
    len: usize,
}

impl ArchiveWith<Vec<EdgeRecord>> for EdgeColumns {
    type Archived = ArchivedVec<u8>;
    type Resolver = EdgeColumnsResolver;

    fn resolve_with(_: &Vec<EdgeRecord>, resolver: Self::Resolver, out: Place<Self::Archived>) {
        ArchivedVec::resolve_from_len(resolver.len, resolver.inner, out);
    }
}

impl<S> SerializeWith<Vec<EdgeRecord>, S> for EdgeColumns
where
    S: Fallible + Allocator + Writer + ?Sized,
{
    fn serialize_with(field: &Vec<EdgeRecord>, serializer: &mut S) -> Result<Self::Resolver, S::Error> {
        let bytes = encode_edges(field);
        let inner = ArchivedVec::<u8>::serialize_from_slice(&bytes, serializer)?;
        Ok(EdgeColumnsResolver { inner, len: bytes.len() })
    }
}

impl<D> DeserializeWith<ArchivedVec<u8>, Vec<EdgeRecord>, D> for EdgeColumns
where
    D: Fallible + ?Sized,
    D::Error: Source,
{
    fn deserialize_with(field: &ArchivedVec<u8>, _: &mut D) -> Result<Vec<EdgeRecord>, D::Error> {
        decode_edges(field.as_slice()).map_err(D::Error::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: u64) -> EdgeRecord {
        EdgeRecord {
            id,
            from: 3,
            to: 9,
            kind: 1,
            source: None,
            valid_from: i64::MIN,
            valid_to: i64::MAX,
            recorded_at: 1_700_000_000_000,
            retracted_at: None,
            props: 0,
        }
    }

    #[test]
    fn edges_round_trip_extreme_values() {
        let mut a = rec(1);
        a.from = u64::MAX;
        a.to = 0;
        a.kind = u32::MAX;
        a.source = Some(("crm".into(), "é-42".into()));
        a.valid_from = i64::MIN + 1;
        a.valid_to = i64::MIN;
        a.recorded_at = i64::MAX;
        a.retracted_at = Some(i64::MIN);
        a.props = 0x80;
        let mut b = rec(u64::MAX);
        b.source = Some((String::new(), String::new()));
        b.retracted_at = Some(i64::MAX);
        let edges = vec![a, b, rec(0), rec(7)];
        assert_eq!(decode_edges(&encode_edges(&edges)).expect("decodes"), edges);
        assert_eq!(decode_edges(&encode_edges(&[])).expect("decodes"), vec![]);
    }

    #[test]
    fn a_bulk_edge_takes_a_few_bytes() {
        let edges: Vec<_> = (1..=128).map(rec).collect();
        assert!(encode_edges(&edges).len() <= 128 * 7, "{}", encode_edges(&edges).len());
    }

    #[test]
    fn malformed_bytes_are_errors() {
        let mut e = rec(5);
        e.source = Some(("mail".into(), "m1".into()));
        let good = encode_edges(&[e, rec(6)]);
        for cut in 0..good.len() {
            assert!(decode_edges(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = good.clone();
        long.push(0);
        assert!(decode_edges(&long).is_err());
        // An unknown flag bit.
        let mut bad = encode_edges(&[rec(5)]);
        bad[5] |= 0x40;
        assert!(decode_edges(&bad).is_err());
        // A count the bytes cannot hold.
        assert!(decode_edges(&[0xff, 0xff, 0x03]).is_err());
        // A name that is not UTF-8.
        let mut s = rec(5);
        s.source = Some(("a".into(), "b".into()));
        let mut utf = encode_edges(&[s]);
        let n = utf.len();
        utf[n - 1] = 0xff;
        assert!(decode_edges(&utf).is_err());
    }
}
