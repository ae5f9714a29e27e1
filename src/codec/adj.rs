//! Compact encoding of adjacency entries inside an [`AdjPage`](super::AdjPage).
//!
//! Entries are delta encoded against the previous entry of the page and written as LEB128
//! varints (zigzag for signed deltas), so a typical entry takes 6–10 bytes instead of 56.

use zeroize::Zeroize;

use super::{AdjPage, ArchivedAdjPage, CodecError};

/// Entries per adjacency page.
pub const PAGE_CAPACITY: usize = 512;

/// One adjacency entry: everything a traversal needs without fetching the edge record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Zeroize)]
pub struct AdjEntry {
    /// The node at the other end.
    pub neighbor: u64,
    /// The edge.
    pub edge: u64,
    /// The edge's interned kind.
    pub kind: u32,
    /// Valid-time start (inclusive); `i64::MIN` if unbounded.
    pub valid_from: i64,
    /// Valid-time end (exclusive); `i64::MAX` if unbounded.
    pub valid_to: i64,
    /// When the store learned the edge.
    pub recorded_at: i64,
    /// When the store retracted the edge; `i64::MAX` if never.
    pub retracted_at: i64,
}

const F_FROM: u8 = 1;
const F_TO: u8 = 2;
const F_RETRACTED: u8 = 4;

fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zig(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzig(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn get(&mut self) -> Result<u64, CodecError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or(CodecError)?;
            self.pos += 1;
            v |= u64::from(b & 0x7f).checked_shl(shift).ok_or(CodecError)?;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError)
    }

    fn byte(&mut self) -> Result<u8, CodecError> {
        let b = *self.buf.get(self.pos).ok_or(CodecError)?;
        self.pos += 1;
        Ok(b)
    }
}

/// Encodes a page of entries.
pub(crate) fn encode_page(pages: u32, entries: &[AdjEntry]) -> AdjPage {
    let mut data = Vec::with_capacity(entries.len() * 10);
    let (mut pn, mut pe, mut pr) = (0i64, 0i64, 0i64);
    for e in entries {
        put(&mut data, zig((e.neighbor as i64).wrapping_sub(pn)));
        put(&mut data, zig((e.edge as i64).wrapping_sub(pe)));
        put(&mut data, u64::from(e.kind));
        let mut flags = 0;
        if e.valid_from != i64::MIN {
            flags |= F_FROM;
        }
        if e.valid_to != i64::MAX {
            flags |= F_TO;
        }
        if e.retracted_at != i64::MAX {
            flags |= F_RETRACTED;
        }
        data.push(flags);
        put(&mut data, zig(e.recorded_at.wrapping_sub(pr)));
        if flags & F_FROM != 0 {
            put(&mut data, zig(e.valid_from.wrapping_sub(e.recorded_at)));
        }
        if flags & F_TO != 0 {
            put(&mut data, zig(e.valid_to.wrapping_sub(e.valid_from)));
        }
        if flags & F_RETRACTED != 0 {
            put(&mut data, zig(e.retracted_at.wrapping_sub(e.recorded_at)));
        }
        pn = e.neighbor as i64;
        pe = e.edge as i64;
        pr = e.recorded_at;
    }
    // Padding happens once, for every sealed value, after compression (`store::records`).
    let pad = Vec::new();
    AdjPage { pages, count: entries.len() as u32, data, pad }
}

/// Decodes the entries of a validated page. Any inconsistency is an error, never a short page.
pub(crate) fn decode_page(page: &ArchivedAdjPage) -> Result<(u32, Vec<AdjEntry>), CodecError> {
    let count = page.count.to_native() as usize;
    if count > PAGE_CAPACITY {
        return Err(CodecError);
    }
    let mut r = Reader { buf: page.data.as_slice(), pos: 0 };
    let mut out = Vec::with_capacity(count);
    let (mut pn, mut pe, mut pr) = (0i64, 0i64, 0i64);
    for _ in 0..count {
        let neighbor = pn.wrapping_add(unzig(r.get()?));
        let edge = pe.wrapping_add(unzig(r.get()?));
        let kind = u32::try_from(r.get()?).map_err(|_| CodecError)?;
        let flags = r.byte()?;
        if flags & !(F_FROM | F_TO | F_RETRACTED) != 0 {
            return Err(CodecError);
        }
        let recorded_at = pr.wrapping_add(unzig(r.get()?));
        let valid_from = if flags & F_FROM != 0 { recorded_at.wrapping_add(unzig(r.get()?)) } else { i64::MIN };
        let valid_to = if flags & F_TO != 0 { valid_from.wrapping_add(unzig(r.get()?)) } else { i64::MAX };
        let retracted_at = if flags & F_RETRACTED != 0 { recorded_at.wrapping_add(unzig(r.get()?)) } else { i64::MAX };
        out.push(AdjEntry {
            neighbor: neighbor as u64,
            edge: edge as u64,
            kind,
            valid_from,
            valid_to,
            recorded_at,
            retracted_at,
        });
        pn = neighbor;
        pe = edge;
        pr = recorded_at;
    }
    if r.pos != r.buf.len() || page.pad.iter().any(|b| *b != 0) {
        return Err(CodecError);
    }
    Ok((page.pages.to_native(), out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_round_trips_extreme_values() {
        let entries = vec![
            AdjEntry {
                neighbor: 5,
                edge: 1,
                kind: 0,
                valid_from: i64::MIN,
                valid_to: i64::MAX,
                recorded_at: 10,
                retracted_at: i64::MAX,
            },
            AdjEntry {
                neighbor: u64::MAX,
                edge: 0,
                kind: u32::MAX,
                valid_from: i64::MIN + 1,
                valid_to: i64::MAX - 1,
                recorded_at: -5,
                retracted_at: 7,
            },
            AdjEntry {
                neighbor: 0,
                edge: 3,
                kind: 2,
                valid_from: 100,
                valid_to: 50,
                recorded_at: i64::MAX,
                retracted_at: i64::MIN,
            },
        ];
        let page = encode_page(3, &entries);
        let bytes = crate::codec::encode(&page).expect("encode");
        let archived = crate::codec::access::<ArchivedAdjPage>(&bytes).expect("valid");
        let (pages, back) = decode_page(archived).expect("decode");
        assert_eq!(pages, 3);
        assert_eq!(back, entries);
    }
}
