//! Compact encoding of adjacency entries inside an [`AdjPage`](super::AdjPage).
//!
//! Entries are delta encoded against the previous entry of the page and written as LEB128
//! varints (zigzag for signed deltas), so a typical entry takes 6–10 bytes instead of 56 (and the repeating
//! columns compress further when the page is packed).

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

pub(super) fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(super) fn zig(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub(super) fn unzig(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

pub(super) struct Reader<'a> {
    pub(super) buf: &'a [u8],
    pub(super) pos: usize,
}

impl Reader<'_> {
    #[inline]
    pub(super) fn get(&mut self) -> Result<u64, CodecError> {
        // Most deltas, kinds and counts fit one byte.
        let b = *self.buf.get(self.pos).ok_or(CodecError)?;
        if b < 0x80 {
            self.pos += 1;
            return Ok(u64::from(b));
        }
        self.get_long()
    }

    /// [`Reader::get`] for a value of two or more bytes.
    #[inline(never)]
    fn get_long(&mut self) -> Result<u64, CodecError> {
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

    pub(super) fn byte(&mut self) -> Result<u8, CodecError> {
        let b = *self.buf.get(self.pos).ok_or(CodecError)?;
        self.pos += 1;
        Ok(b)
    }
}

/// Entries of one (node, direction) kept inline in the node record (no adjacency page) while
/// there are at most this many: most nodes of a real graph have few edges, and a page of its own
/// costs each of them a record key, an envelope and a B-tree entry.
pub const INLINE_MAX: usize = 16;

// Entries are written column by column (every neighbor delta, then every edge delta, every
// kind, every flag byte, every record-time delta, then the optional fields in entry order), so
// the columns that repeat (kinds, flags, record times of one load) compress to almost nothing.
fn encode_entries(data: &mut Vec<u8>, entries: &[AdjEntry]) {
    let mut prev = 0i64;
    for e in entries {
        put(data, zig((e.neighbor as i64).wrapping_sub(prev)));
        prev = e.neighbor as i64;
    }
    prev = 0;
    for e in entries {
        put(data, zig((e.edge as i64).wrapping_sub(prev)));
        prev = e.edge as i64;
    }
    for e in entries {
        put(data, u64::from(e.kind));
    }
    for e in entries {
        data.push(flags_of(e));
    }
    prev = 0;
    for e in entries {
        put(data, zig(e.recorded_at.wrapping_sub(prev)));
        prev = e.recorded_at;
    }
    for e in entries {
        let flags = flags_of(e);
        if flags & F_FROM != 0 {
            put(data, zig(e.valid_from.wrapping_sub(e.recorded_at)));
        }
        if flags & F_TO != 0 {
            put(data, zig(e.valid_to.wrapping_sub(e.valid_from)));
        }
        if flags & F_RETRACTED != 0 {
            put(data, zig(e.retracted_at.wrapping_sub(e.recorded_at)));
        }
    }
}

fn flags_of(e: &AdjEntry) -> u8 {
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
    flags
}

fn decode_entries(r: &mut Reader<'_>, count: usize) -> Result<Vec<AdjEntry>, CodecError> {
    // Every entry takes at least 5 bytes: a count beyond that is a lie, not an allocation.
    if count > r.buf.len().saturating_sub(r.pos) / 5 {
        return Err(CodecError);
    }
    let blank = AdjEntry {
        neighbor: 0,
        edge: 0,
        kind: 0,
        valid_from: i64::MIN,
        valid_to: i64::MAX,
        recorded_at: 0,
        retracted_at: i64::MAX,
    };
    let mut out = vec![blank; count];
    let mut prev = 0i64;
    for e in out.iter_mut() {
        prev = prev.wrapping_add(unzig(r.get()?));
        e.neighbor = prev as u64;
    }
    prev = 0;
    for e in out.iter_mut() {
        prev = prev.wrapping_add(unzig(r.get()?));
        e.edge = prev as u64;
    }
    for e in out.iter_mut() {
        e.kind = u32::try_from(r.get()?).map_err(|_| CodecError)?;
    }
    // The flag column is read in place (one byte an entry).
    let buf = r.buf;
    let flags = buf.get(r.pos..r.pos.checked_add(count).ok_or(CodecError)?).ok_or(CodecError)?;
    if flags.iter().any(|f| f & !(F_FROM | F_TO | F_RETRACTED) != 0) {
        return Err(CodecError);
    }
    r.pos += count;
    prev = 0;
    for e in out.iter_mut() {
        prev = prev.wrapping_add(unzig(r.get()?));
        e.recorded_at = prev;
    }
    for (e, &f) in out.iter_mut().zip(flags) {
        if f & F_FROM != 0 {
            e.valid_from = e.recorded_at.wrapping_add(unzig(r.get()?));
        }
        if f & F_TO != 0 {
            e.valid_to = e.valid_from.wrapping_add(unzig(r.get()?));
        }
        if f & F_RETRACTED != 0 {
            e.retracted_at = e.recorded_at.wrapping_add(unzig(r.get()?));
        }
    }
    Ok(out)
}

/// Encodes a page of entries.
pub(crate) fn encode_page(pages: u32, entries: &[AdjEntry]) -> AdjPage {
    let mut data = Vec::with_capacity(entries.len() * 10);
    encode_entries(&mut data, entries);
    // Padding happens once, for every sealed value, after compression (`store::records`).
    let pad = Vec::new();
    AdjPage { pages, count: entries.len() as u32, data, pad }
}

/// Decodes the entries of a validated page. Any inconsistency is an error, never a short page.
pub(crate) fn decode_page(page: &ArchivedAdjPage) -> Result<(u32, Vec<AdjEntry>), CodecError> {
    if page.pad.iter().any(|b| *b != 0) {
        return Err(CodecError);
    }
    let out = decode_page_data(page.count.to_native() as usize, page.data.as_slice())?;
    Ok((page.pages.to_native(), out))
}

/// Decodes the entries of an [`AdjPage`] built in memory by [`encode_page`] (never stored: the
/// bulk loader's unwritten tail pages), with the same checks as [`decode_page`].
pub(crate) fn decode_owned_page(page: &AdjPage) -> Result<Vec<AdjEntry>, CodecError> {
    decode_page_data(page.count as usize, &page.data)
}

/// `count` entries from a page's `data`: at most a page's capacity, every byte used.
fn decode_page_data(count: usize, data: &[u8]) -> Result<Vec<AdjEntry>, CodecError> {
    if count > PAGE_CAPACITY {
        return Err(CodecError);
    }
    let mut r = Reader { buf: data, pos: 0 };
    let out = decode_entries(&mut r, count)?;
    if r.pos != r.buf.len() {
        return Err(CodecError);
    }
    Ok(out)
}

/// Encodes the inline entries of a node record (`NodeRecord::out_adj` / `in_adj`): their count,
/// then the entries as in a page. No entries: no bytes.
pub(crate) fn encode_inline(entries: &[AdjEntry]) -> Vec<u8> {
    let mut data = Vec::new();
    if !entries.is_empty() {
        put(&mut data, entries.len() as u64);
        encode_entries(&mut data, entries);
    }
    data
}

/// The inline entries of one (node, direction) of a node record with `pages` adjacency pages,
/// `degree` entries and `inline` bytes: `None` if the entries are in pages (then there must be
/// no inline bytes), else the decoded entries, which must number `degree`.
pub(crate) fn inline_of(pages: u32, degree: u64, inline: &[u8]) -> Result<Option<Vec<AdjEntry>>, CodecError> {
    if pages > 0 {
        return if inline.is_empty() { Ok(None) } else { Err(CodecError) };
    }
    let entries = decode_inline(inline)?;
    if entries.len() as u64 != degree {
        return Err(CodecError);
    }
    Ok(Some(entries))
}

/// Decodes [`encode_inline`]'s bytes: at most [`INLINE_MAX`] entries, nothing left over.
pub(crate) fn decode_inline(bytes: &[u8]) -> Result<Vec<AdjEntry>, CodecError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut r = Reader { buf: bytes, pos: 0 };
    let count = usize::try_from(r.get()?).map_err(|_| CodecError)?;
    if count == 0 || count > INLINE_MAX {
        return Err(CodecError);
    }
    let out = decode_entries(&mut r, count)?;
    if r.pos != bytes.len() {
        return Err(CodecError);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry with unbounded valid time, never retracted.
    fn plain() -> AdjEntry {
        AdjEntry {
            neighbor: 5,
            edge: 1,
            kind: 0,
            valid_from: i64::MIN,
            valid_to: i64::MAX,
            recorded_at: 10,
            retracted_at: i64::MAX,
        }
    }

    #[test]
    fn page_round_trips_extreme_values() {
        let entries = vec![
            plain(),
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
        assert_eq!(decode_inline(&encode_inline(&entries)).expect("inline"), entries);
        assert_eq!(decode_inline(&encode_inline(&[])).expect("none"), vec![]);
    }

    #[test]
    fn malformed_inline_entries_are_errors() {
        let e = plain();
        let good = encode_inline(&[e, e]);
        for cut in 1..good.len() {
            assert!(decode_inline(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = good.clone();
        long.push(0);
        assert!(decode_inline(&long).is_err());
        // A zero count, and more entries than a record may hold inline.
        assert!(decode_inline(&[0]).is_err());
        let many = vec![e; INLINE_MAX + 1];
        let mut over = encode_inline(&many);
        assert!(decode_inline(&over).is_err());
        over[0] = 0;
        assert!(decode_inline(&over).is_err());
    }
}
