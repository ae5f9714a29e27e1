//! Arbitrary bytes as a stored value and as its record key: `open` never panics, and never
//! returns Ok for bytes the key holder did not seal under exactly that binding.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use silograph::fuzzing::EnvelopeKey;
use std::sync::OnceLock;

#[derive(Arbitrary, Debug)]
enum Mutation {
    FlipBit { pos: u16, bit: u8 },
    SetByte { pos: u16, value: u8 },
    Truncate { len: u16 },
    Append { bytes: Vec<u8> },
    FlipKeyBit { pos: u8, bit: u8 },
    TruncateKey { len: u8 },
    ChangeTable { table: u8 },
    ChangeDb { pos: u8, value: u8 },
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// Opened as is under the fuzz key: never sealed by it, so never Ok.
    raw_value: Vec<u8>,
    raw_key: Vec<u8>,
    raw_table: u8,
    /// Sealed by the key holder, then mutated.
    plaintext: Vec<u8>,
    record_key: Vec<u8>,
    table: u8,
    epoch: u32,
    mutations: Vec<Mutation>,
}

const DB_ID: [u8; 16] = [3; 16];

fn keys() -> &'static (EnvelopeKey, EnvelopeKey) {
    static KEYS: OnceLock<(EnvelopeKey, EnvelopeKey)> = OnceLock::new();
    KEYS.get_or_init(|| (EnvelopeKey::from_bytes([0x42; 32]), EnvelopeKey::from_bytes([0x43; 32])))
}

fuzz_target!(|input: Input| {
    let (key, other) = keys();
    if key.open(&DB_ID, input.raw_table, &input.raw_key, &input.raw_value).is_ok() {
        panic!("open accepted bytes the key holder never sealed");
    }

    let sealed = key.seal(input.epoch, &DB_ID, input.table, &input.record_key, &input.plaintext).expect("seal");
    let opened = key.open(&DB_ID, input.table, &input.record_key, &sealed).expect("a sealed value opens");
    assert_eq!(opened, input.plaintext, "round trip");
    assert!(other.open(&DB_ID, input.table, &input.record_key, &sealed).is_err(), "another key opened it");

    let (mut value, mut rkey, mut table, mut db) = (sealed.clone(), input.record_key.clone(), input.table, DB_ID);
    for m in &input.mutations {
        match m {
            Mutation::FlipBit { pos, bit } if !value.is_empty() => {
                let i = usize::from(*pos) % value.len();
                value[i] ^= 1 << (bit % 8);
            }
            Mutation::SetByte { pos, value: v } if !value.is_empty() => {
                let i = usize::from(*pos) % value.len();
                value[i] = *v;
            }
            Mutation::Truncate { len } => value.truncate(usize::from(*len)),
            Mutation::Append { bytes } => value.extend_from_slice(bytes),
            Mutation::FlipKeyBit { pos, bit } if !rkey.is_empty() => {
                let i = usize::from(*pos) % rkey.len();
                rkey[i] ^= 1 << (bit % 8);
            }
            Mutation::TruncateKey { len } => rkey.truncate(usize::from(*len)),
            Mutation::ChangeTable { table: t } => table = *t,
            Mutation::ChangeDb { pos, value: v } => db[usize::from(*pos) % 16] = *v,
            _ => {}
        }
    }
    let res = key.open(&db, table, &rkey, &value);
    let unchanged = value == sealed && rkey == input.record_key && table == input.table && db == DB_ID;
    match res {
        Ok(pt) => {
            assert!(unchanged, "open accepted a modified value, key, table or database id");
            assert_eq!(pt, input.plaintext);
        }
        Err(_) => assert!(!unchanged, "the unmodified sealed value failed to open"),
    }
});
