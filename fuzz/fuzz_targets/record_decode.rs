//! Arbitrary bytes sealed WITH THE RIGHT KEY as each v2 page type (node page with inline
//! adjacency entries, edge page (column encoded), index
//! bucket page, adjacency page, property map, org registry entry), opened through the store's
//! own read path: the result is an error or a valid value, never a panic. Inputs start from a
//! valid archive built from the input, which the input's mutations then damage — before packing
//! (the archive) or after it (the compressed, padded body) — so the fuzzer reaches deep into
//! validation and decompression.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use silograph::fuzzing::{
    encode, encode_adj_page, encode_inline, pack, AdjEntry, BucketPage, Decoded, EdgePage, EdgeRecord, EpochEntry, NodePage,
    NodeRecord, PropMap, RecordHarness, RecordKind, StoredValue, INLINE_MAX, NODES_PER_PAGE, PAGE_CAPACITY,
};

#[derive(Arbitrary, Debug)]
enum Mutation {
    FlipBit {
        pos: u16,
        bit: u8,
    },
    SetByte {
        pos: u16,
        value: u8,
    },
    /// Overwrites four bytes with a little-endian value: rkyv offsets and lengths are 32-bit.
    SetU32 {
        pos: u16,
        value: u32,
    },
    Truncate {
        len: u16,
    },
    Insert {
        pos: u16,
        bytes: Vec<u8>,
    },
}

#[derive(Arbitrary, Debug)]
enum Value {
    Null,
    Bool(bool),
    I64(i64),
    F64(f64),
    Str(String),
    Bytes(Vec<u8>),
    Timestamp(i64),
}

#[derive(Arbitrary, Debug)]
struct Entry {
    neighbor: u64,
    edge: u64,
    kind: u32,
    valid_from: i64,
    valid_to: i64,
    recorded_at: i64,
    retracted_at: i64,
}

#[derive(Arbitrary, Debug)]
enum Base {
    Node {
        /// Records in the page (ids from 1, as page 0 holds).
        count: u8,
        kind: u32,
        sources: Vec<(String, String)>,
        times: (i64, i64),
        degrees: (u64, u64),
        pages: (u32, u32),
        /// Adjacency entries kept inline in every record (at most `INLINE_MAX` are used).
        inline: Vec<Entry>,
    },
    Edge {
        count: u8,
        ids: (u64, u64, u64),
        kind: u32,
        source: Option<(String, String)>,
        times: (i64, i64, i64),
        retracted: Option<i64>,
    },
    AdjPage {
        pages: u32,
        entries: Vec<Entry>,
        repeat: u16,
    },
    PropMap {
        entries: Vec<(String, Value)>,
    },
    Bucket {
        entries: Vec<([u8; 12], u64)>,
    },
    OrgEntry {
        name: Option<String>,
        seed_len: Option<u8>,
        epochs: Vec<(u32, u64)>,
        counters: Option<(u64, u64, u32)>,
    },
    /// Not an archive at all: the raw bytes are sealed as the given record kind.
    Raw {
        kind: u8,
        bytes: Vec<u8>,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    base: Base,
    /// Damage the packed body (after compression and padding) instead of the archive.
    after_packing: bool,
    mutations: Vec<Mutation>,
}

fn harness() -> &'static RecordHarness {
    static H: OnceLock<RecordHarness> = OnceLock::new();
    H.get_or_init(|| RecordHarness::new().expect("harness"))
}

fn stored(v: Value) -> StoredValue {
    match v {
        Value::Null => StoredValue::Null,
        Value::Bool(b) => StoredValue::Bool(b),
        Value::I64(i) => StoredValue::I64(i),
        Value::F64(f) => StoredValue::F64(f),
        Value::Str(s) => StoredValue::Str(s),
        Value::Bytes(b) => StoredValue::Bytes(b),
        Value::Timestamp(t) => StoredValue::Timestamp(t),
    }
}

/// What an unmutated archive must decode to.
#[derive(Debug, PartialEq)]
enum Expect {
    Node(NodePage),
    Edge(EdgePage),
    Bucket(BucketPage),
    Page(u32, Vec<AdjEntry>),
    Props(PropMap),
    Nothing,
}

fn entry(e: Entry) -> AdjEntry {
    AdjEntry {
        neighbor: e.neighbor,
        edge: e.edge,
        kind: e.kind,
        valid_from: e.valid_from,
        valid_to: e.valid_to,
        recorded_at: e.recorded_at,
        retracted_at: e.retracted_at,
    }
}

fn build(base: Base) -> (RecordKind, Vec<u8>, Expect) {
    let h = harness();
    match base {
        Base::Node { count, kind, sources, times, degrees, pages, inline } => {
            let inline: Vec<AdjEntry> = inline.into_iter().take(INLINE_MAX).map(entry).collect();
            let out_adj = encode_inline(&inline);
            let rec = |id| NodeRecord {
                id,
                kind,
                sources: sources.clone(),
                created_at: times.0,
                updated_at: times.1,
                out_degree: degrees.0,
                in_degree: degrees.1,
                out_pages: pages.0,
                in_pages: pages.1,
                out_adj: out_adj.clone(),
                in_adj: Vec::new(),
                props: (kind & 7) as u8,
            };
            let page = NodePage { first: 1, nodes: (1..=u64::from(count) % NODES_PER_PAGE).map(rec).collect() };
            let bytes = encode(&page).expect("encode").to_vec();
            (RecordKind::Node, bytes, Expect::Node(page))
        }
        Base::Edge { count, ids, kind, source, times, retracted } => {
            let rec = |id| EdgeRecord {
                id,
                from: ids.1 ^ ids.0,
                to: ids.2,
                kind,
                source: source.clone(),
                valid_from: times.0,
                valid_to: times.1,
                recorded_at: times.2,
                retracted_at: retracted,
                props: (kind & 7) as u8,
            };
            let page = EdgePage { first: 1, edges: (1..=u64::from(count % 128)).map(rec).collect() };
            let bytes = encode(&page).expect("encode").to_vec();
            (RecordKind::Edge, bytes, Expect::Edge(page))
        }
        Base::AdjPage { pages, entries, repeat } => {
            let mut all: Vec<AdjEntry> = entries.into_iter().map(entry).collect();
            // Reach the page capacity boundary without needing huge inputs.
            if let Some(last) = all.last().copied() {
                all.extend(std::iter::repeat_n(last, usize::from(repeat % 600)));
            }
            let page = encode_adj_page(pages, &all);
            let bytes = encode(&page).expect("encode").to_vec();
            let expect = if all.len() <= PAGE_CAPACITY { Expect::Page(pages, all) } else { Expect::Nothing };
            (RecordKind::AdjPage, bytes, expect)
        }
        Base::PropMap { entries } => {
            let mut map = PropMap::default();
            for (n, v) in entries {
                map.set(&n, stored(v));
            }
            let bytes = encode(&map).expect("encode").to_vec();
            (RecordKind::PropMap, bytes, Expect::Props(map))
        }
        Base::Bucket { entries } => {
            let page = BucketPage::from_entries(entries);
            let bytes = encode(&page).expect("encode").to_vec();
            (RecordKind::Bucket, bytes, Expect::Bucket(page))
        }
        Base::OrgEntry { name, seed_len, epochs, counters } => {
            let mut entry = h.org_entry().expect("org entry");
            if let Some(n) = name {
                entry.name = n;
            }
            if let Some(l) = seed_len {
                entry.structure_seed = vec![7; usize::from(l % 40)];
            }
            for (epoch, seals) in epochs.into_iter().take(4) {
                entry.epochs.push(EpochEntry { epoch, seed: vec![epoch as u8; 32], seal_count: seals });
            }
            if let Some((n, e, k)) = counters {
                entry.next_node = n;
                entry.next_edge = e;
                entry.next_kind = k;
            }
            let bytes = encode(&entry).expect("encode").to_vec();
            (RecordKind::OrgEntry, bytes, Expect::Nothing)
        }
        Base::Raw { kind, bytes } => {
            let kinds = [
                RecordKind::Node,
                RecordKind::Edge,
                RecordKind::Bucket,
                RecordKind::AdjPage,
                RecordKind::PropMap,
                RecordKind::OrgEntry,
            ];
            (kinds[usize::from(kind) % kinds.len()], bytes, Expect::Nothing)
        }
    }
}

fn mutate(bytes: &mut Vec<u8>, m: &Mutation) {
    match m {
        Mutation::FlipBit { pos, bit } if !bytes.is_empty() => {
            let i = usize::from(*pos) % bytes.len();
            bytes[i] ^= 1 << (bit % 8);
        }
        Mutation::SetByte { pos, value } if !bytes.is_empty() => {
            let i = usize::from(*pos) % bytes.len();
            bytes[i] = *value;
        }
        Mutation::SetU32 { pos, value } if bytes.len() >= 4 => {
            let i = usize::from(*pos) % (bytes.len() - 3);
            bytes[i..i + 4].copy_from_slice(&value.to_le_bytes());
        }
        Mutation::Truncate { len } => bytes.truncate(usize::from(*len)),
        Mutation::Insert { pos, bytes: ins } => {
            let i = usize::from(*pos) % (bytes.len() + 1);
            bytes.splice(i..i, ins.iter().copied());
        }
        _ => {}
    }
}

fuzz_target!(|input: Input| {
    let h = harness();
    let (kind, archive, expect) = build(input.base);
    let after = input.after_packing && kind != RecordKind::OrgEntry;
    let original = if after { pack(&archive).expect("pack") } else { archive };
    let mut bytes = original.clone();
    for m in &input.mutations {
        mutate(&mut bytes, m);
    }
    let sealed = if after { h.seal_unpacked(kind, &bytes) } else { h.seal(kind, &bytes) }.expect("seal");
    let res = h.open(kind, &sealed);
    if bytes == original {
        let got = match res {
            Ok(Decoded::Node(r)) => Expect::Node(r),
            Ok(Decoded::Edge(r)) => Expect::Edge(r),
            Ok(Decoded::Bucket(b)) => Expect::Bucket(b),
            Ok(Decoded::AdjPage(p, e)) => Expect::Page(p, e),
            Ok(Decoded::PropMap(m)) => Expect::Props(m),
            Ok(Decoded::OrgEntry(_)) | Err(_) => Expect::Nothing,
        };
        if expect != Expect::Nothing {
            // F64 NaN never equals itself: compare the debug form, which is bit-faithful enough.
            assert_eq!(format!("{got:?}"), format!("{expect:?}"), "a valid archive must decode to its value");
        }
    }
});
