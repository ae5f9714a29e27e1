//! Known-answer and misuse tests of the crypto layer: the HKDF helper against RFC 5869, the
//! AES-256-GCM primitive the envelope uses against NIST CAVS vectors, and the envelope's binding
//! of every sealed value to its database, table, record key and epoch.

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Nonce, Tag};

use super::blind::{BlindKey, RUN_SLOTS};
use super::envelope::{self, Binding, ENVELOPE_VERSION};
use super::keys::{derive, hkdf_sha256, AeadKey, MacKey, Secret};
use crate::error::Error;

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn aead(key: [u8; 32]) -> AeadKey {
    AeadKey::new(&Secret::from_bytes(key))
}

/// One RFC 5869 Appendix A test case (SHA-256).
struct HkdfCase {
    ikm: Vec<u8>,
    salt: Vec<u8>,
    info: Vec<u8>,
    okm: &'static str,
}

/// RFC 5869 Appendix A, test cases 1-3 (HKDF-SHA256).
fn rfc5869_cases() -> [HkdfCase; 3] {
    [
        HkdfCase {
            ikm: vec![0x0b; 22],
            salt: (0x00..=0x0c).collect(),
            info: (0xf0..=0xf9).collect(),
            okm: "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
        },
        HkdfCase {
            ikm: (0x00..=0x4f).collect(),
            salt: (0x60..=0xaf).collect(),
            info: (0xb0..=0xff).collect(),
            okm: "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c\
                  59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71\
                  cc30c58179ec3e87c14c01d5c1f3434f1d87",
        },
        HkdfCase {
            ikm: vec![0x0b; 22],
            salt: Vec::new(),
            info: Vec::new(),
            okm: "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
        },
    ]
}

#[test]
fn hkdf_sha256_matches_rfc5869_cases_1_to_3() {
    for (n, case) in rfc5869_cases().iter().enumerate() {
        let expected = unhex(case.okm);
        let mut out = vec![0u8; expected.len()];
        hkdf_sha256(&case.ikm, &case.salt, &[&case.info], &mut out).unwrap();
        assert_eq!(hex::encode(&out), hex::encode(&expected), "RFC 5869 test case {}", n + 1);
    }
}

#[test]
fn hkdf_sha256_info_parts_are_concatenated() {
    // The derivation tree passes info as several parts (label ‖ org tag ‖ epoch ‖ purpose): they
    // must mean exactly the RFC's single info string.
    for case in rfc5869_cases() {
        let expected = unhex(case.okm);
        for split in 0..=case.info.len() {
            let mut out = vec![0u8; expected.len()];
            hkdf_sha256(&case.ikm, &case.salt, &[&case.info[..split], &case.info[split..]], &mut out).unwrap();
            assert_eq!(out, expected, "info split at {split}");
        }
    }
}

#[test]
fn derived_keys_are_the_first_32_bytes_of_rfc5869_output() {
    for case in rfc5869_cases() {
        let expected = unhex(case.okm);
        let key = derive(&case.ikm, &case.salt, &[&case.info]);
        assert_eq!(key.expose().as_slice(), &expected[..32]);
    }
}

#[test]
fn hkdf_sha256_refuses_output_longer_than_255_blocks() {
    let mut ok = vec![0u8; 255 * 32];
    hkdf_sha256(b"ikm", b"salt", &[b"info"], &mut ok).unwrap();
    let mut too_long = vec![0u8; 255 * 32 + 1];
    assert!(matches!(hkdf_sha256(b"ikm", b"salt", &[b"info"], &mut too_long), Err(Error::InvalidInput(_))));
}

/// One NIST CAVS AES-256-GCM encryption vector (96-bit IV, 128-bit tag).
struct GcmCase {
    key: &'static str,
    nonce: &'static str,
    plaintext: &'static str,
    aad: &'static str,
    ciphertext: &'static str,
    tag: &'static str,
}

/// From NIST CAVP `gcmEncryptExtIV256.rsp` (gcmtestvectors.zip), one vector of each shape:
/// empty plaintext with AAD, one block with AAD, a partial block with AAD, two blocks with and
/// without AAD.
const NIST_GCM_256: &[GcmCase] = &[
    GcmCase {
        key: "886cff5f3e6b8d0e1ad0a38fcdb26de97e8acbe79f6bed66959a598fa5047d65",
        nonce: "3a8efa1cd74bbab5448f9945",
        plaintext: "",
        aad: "519fee519d25c7a304d6c6aa1897ee1eb8c59655",
        ciphertext: "",
        tag: "f6d47505ec96c98a42dc3ae719877b87",
    },
    GcmCase {
        key: "92e11dcdaa866f5ce790fd24501f92509aacf4cb8b1339d50c9c1240935dd08b",
        nonce: "ac93a1a6145299bde902f21a",
        plaintext: "2d71bcfa914e4ac045b2aa60955fad24",
        aad: "1e0889016f67601c8ebea4943bc23ad6",
        ciphertext: "8995ae2e6df3dbf96fac7b7137bae67f",
        tag: "eca5aa77d51d4a0a14d9c51e1da474ab",
    },
    GcmCase {
        key: "69b458f2644af9020463b40ee503cdf083d693815e2659051ae0d039e606a970",
        nonce: "8d1da8ab5f91ccd09205944b",
        plaintext: "f3e0e09224256bf21a83a5de8d",
        aad: "036ad5e5494ef817a8af2f5828784a4bfedd1653",
        ciphertext: "c0a62d77e6031bfdc6b13ae217",
        tag: "a794a9aaee48cd92e47761bf1baff0af",
    },
    GcmCase {
        key: "268ed1b5d7c9c7304f9cae5fc437b4cd3aebe2ec65f0d85c3918d3d3b5bba89b",
        nonce: "9ed9d8180564e0e945f5e5d4",
        plaintext: "fe29a40d8ebf57262bdb87191d01843f4ca4b2de97d88273154a0b7d9e2fdb80",
        aad: "",
        ciphertext: "791a4a026f16f3a5ea06274bf02baab469860abde5e645f3dd473a5acddeecfc",
        tag: "05b2b74db0662550435ef1900e136b15",
    },
    GcmCase {
        key: "5853c020946b35f2c58ec427152b840420c40029636adcbb027471378cfdde0f",
        nonce: "eec313dd07cc1b3e6b068a47",
        plaintext: "ce7458e56aef9061cb0c42ec2315565e6168f5a6249ffd31610b6d17ab64935e",
        aad: "1389b522c24a774181700553f0246bbabdd38d6f",
        ciphertext: "eadc3b8766a77ded1a58cb727eca2a9790496c298654cda78febf0da16b6903b",
        tag: "3d49a5b32fde7eafcce90079217ffb57",
    },
];

fn gcm_key(case: &GcmCase) -> AeadKey {
    aead(unhex(case.key).try_into().unwrap())
}

fn gcm_nonce(case: &GcmCase) -> [u8; 12] {
    unhex(case.nonce).try_into().unwrap()
}

/// Decrypts with the envelope's AEAD primitive; `None` if authentication fails.
fn gcm_decrypt(key: &AeadKey, nonce: [u8; 12], aad: &[u8], ciphertext: &[u8], tag: &[u8]) -> Option<Vec<u8>> {
    let mut buf = ciphertext.to_vec();
    let tag = Tag::try_from(tag).ok()?;
    key.0.decrypt_inout_detached(&Nonce::from(nonce), aad, buf.as_mut_slice().into(), &tag).ok()?;
    Some(buf)
}

#[test]
fn aes256gcm_encryption_matches_nist_cavs_vectors() {
    for (n, case) in NIST_GCM_256.iter().enumerate() {
        let mut buf = unhex(case.plaintext);
        let tag = gcm_key(case)
            .0
            .encrypt_inout_detached(&Nonce::from(gcm_nonce(case)), &unhex(case.aad), buf.as_mut_slice().into())
            .unwrap();
        assert_eq!(hex::encode(&buf), case.ciphertext, "ciphertext of vector {n}");
        assert_eq!(hex::encode(tag.as_slice()), case.tag, "tag of vector {n}");
    }
}

#[test]
fn aes256gcm_decryption_matches_nist_cavs_vectors() {
    for (n, case) in NIST_GCM_256.iter().enumerate() {
        let key = gcm_key(case);
        let pt = gcm_decrypt(&key, gcm_nonce(case), &unhex(case.aad), &unhex(case.ciphertext), &unhex(case.tag));
        assert_eq!(pt.map(hex::encode).as_deref(), Some(case.plaintext), "vector {n}");
    }
}

#[test]
fn aes256gcm_rejects_any_flipped_bit_of_ciphertext_tag_aad_or_nonce() {
    for case in NIST_GCM_256 {
        let key = gcm_key(case);
        let (nonce, aad, ct, tag) = (gcm_nonce(case), unhex(case.aad), unhex(case.ciphertext), unhex(case.tag));
        for bit in 0..ct.len() * 8 {
            let mut bad = ct.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(gcm_decrypt(&key, nonce, &aad, &bad, &tag).is_none(), "ciphertext bit {bit}");
        }
        for bit in 0..tag.len() * 8 {
            let mut bad = tag.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(gcm_decrypt(&key, nonce, &aad, &ct, &bad).is_none(), "tag bit {bit}");
        }
        for bit in 0..aad.len() * 8 {
            let mut bad = aad.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(gcm_decrypt(&key, nonce, &bad, &ct, &tag).is_none(), "aad bit {bit}");
        }
        for bit in 0..96 {
            let mut bad = nonce;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(gcm_decrypt(&key, bad, &aad, &ct, &tag).is_none(), "nonce bit {bit}");
        }
        assert!(gcm_decrypt(&key, nonce, &[aad.as_slice(), b"x"].concat(), &ct, &tag).is_none(), "longer aad");
    }
}

const DB_ID: [u8; 16] = *b"0123456789abcdef";
const RECORD_KEY: &[u8] = b"\x01\x02\x03\x04\x05\x06\x07\x08opaque-16-bytes!";

fn binding(table: u8) -> Binding<'static> {
    Binding { db_id: &DB_ID, table, key: RECORD_KEY }
}

/// The AAD exactly as `envelope.rs` documents it, rebuilt here independently of the code that
/// computes it: "silograph/1" ‖ db_id ‖ table id ‖ len(key) u32 LE ‖ key ‖ epoch u32 LE.
#[cfg_attr(feature = "bench-null-cipher", allow(dead_code))]
fn documented_aad(b: &Binding<'_>, epoch: u32, version: u64) -> Vec<u8> {
    let mut a = b"silograph/2".to_vec();
    a.extend_from_slice(b.db_id);
    a.push(b.table);
    a.extend_from_slice(&(b.key.len() as u32).to_le_bytes());
    a.extend_from_slice(b.key);
    a.extend_from_slice(&epoch.to_le_bytes());
    a.extend_from_slice(&version.to_le_bytes());
    a
}

#[cfg_attr(feature = "bench-null-cipher", allow(dead_code))]
fn assert_corrupt<T: std::fmt::Debug>(r: crate::Result<T>, what: &str) {
    assert!(matches!(r, Err(Error::Corrupt { .. })), "{what}: expected Corrupt, got {r:?}");
}

#[cfg(not(feature = "bench-null-cipher"))]
#[test]
fn envelope_layout_is_version_epoch_page_version_nonce_then_gcm_over_the_documented_aad() {
    let key_bytes = [0x42u8; 32];
    let key = aead(key_bytes);
    let nonce = *b"nonce-12byte";
    let b = binding(5);
    let plaintext = b"a record of some length, not a multiple of 16";
    let sealed = envelope::seal_with_nonce(&key, 7, 0x0102_0304_0506_0708, &b, plaintext, &nonce).unwrap();
    assert_eq!(sealed.len(), plaintext.len() + envelope::OVERHEAD);
    assert_eq!(sealed[0], ENVELOPE_VERSION);
    assert_eq!(ENVELOPE_VERSION, 2);
    assert_eq!(&sealed[1..5], &7u32.to_le_bytes());
    assert_eq!(&sealed[5..13], &0x0102_0304_0506_0708u64.to_le_bytes());
    assert_eq!(&sealed[13..25], &nonce);
    let (body, tag) = sealed[25..].split_at(plaintext.len());
    // An independent AES-256-GCM instance over the documented AAD opens it.
    let opened = gcm_decrypt(&aead(key_bytes), nonce, &documented_aad(&b, 7, 0x0102_0304_0506_0708), body, tag);
    assert_eq!(opened.as_deref(), Some(plaintext.as_slice()));
}

#[cfg(not(feature = "bench-null-cipher"))]
#[test]
fn envelope_with_another_page_version_is_rejected() {
    let key = aead([1; 32]);
    let sealed = envelope::seal_versioned(&key, 0, 41, &binding(3), b"node page").unwrap();
    assert_eq!(envelope::peek_version(&sealed, "t", RECORD_KEY).unwrap(), 41);
    for version in [0u64, 40, 42, u64::MAX] {
        let mut moved = sealed.clone();
        moved[5..13].copy_from_slice(&version.to_le_bytes());
        assert_corrupt(envelope::open(&key, &binding(3), "t", &moved), &format!("version {version}"));
    }
}

#[cfg(not(feature = "bench-null-cipher"))]
#[test]
fn envelope_round_trips_and_hides_the_plaintext() {
    let key = aead([1; 32]);
    let plaintext = b"CANARY-envelope-plaintext";
    for len in [0usize, 1, 15, 16, 17, plaintext.len()] {
        let sealed = envelope::seal(&key, 3, &binding(4), &plaintext[..len]).unwrap();
        assert_eq!(envelope::open(&key, &binding(4), "props", &sealed).unwrap().as_slice(), &plaintext[..len]);
        if len >= 8 {
            assert!(!sealed.windows(8).any(|w| w == &plaintext[..8]), "plaintext visible at length {len}");
        }
    }
}

#[test]
fn each_seal_uses_a_fresh_nonce() {
    let key = aead([1; 32]);
    let a = envelope::seal(&key, 0, &binding(3), b"same").unwrap();
    let b = envelope::seal(&key, 0, &binding(3), b"same").unwrap();
    assert_ne!(a[13..25], b[13..25]);
    assert_ne!(a, b);
}

#[cfg(not(feature = "bench-null-cipher"))]
#[test]
fn envelope_opened_under_another_table_is_rejected() {
    let key = aead([1; 32]);
    let sealed = envelope::seal(&key, 0, &binding(3), b"node record").unwrap();
    for table in (0..=255u8).filter(|t| *t != 3) {
        assert_corrupt(envelope::open(&key, &binding(table), "t", &sealed), &format!("table {table}"));
    }
}

#[cfg(not(feature = "bench-null-cipher"))]
#[test]
fn envelope_opened_under_another_record_key_is_rejected() {
    let key = aead([1; 32]);
    let sealed = envelope::seal(&key, 0, &binding(3), b"node record").unwrap();
    let mut other_keys: Vec<Vec<u8>> = Vec::new();
    for i in 0..RECORD_KEY.len() {
        let mut k = RECORD_KEY.to_vec();
        k[i] ^= 0x01;
        other_keys.push(k);
    }
    other_keys.push(RECORD_KEY[..RECORD_KEY.len() - 1].to_vec());
    other_keys.push([RECORD_KEY, b"\0"].concat());
    other_keys.push(Vec::new());
    for k in &other_keys {
        let b = Binding { db_id: &DB_ID, table: 3, key: k };
        assert_corrupt(envelope::open(&key, &b, "t", &sealed), &format!("key {}", hex::encode(k)));
    }
}

#[cfg(not(feature = "bench-null-cipher"))]
#[test]
fn envelope_opened_under_another_database_id_is_rejected() {
    let key = aead([1; 32]);
    let sealed = envelope::seal(&key, 0, &binding(3), b"node record").unwrap();
    for i in 0..16 {
        let mut db_id = DB_ID;
        db_id[i] ^= 0x80;
        let b = Binding { db_id: &db_id, table: 3, key: RECORD_KEY };
        assert_corrupt(envelope::open(&key, &b, "t", &sealed), &format!("db id byte {i}"));
    }
}

#[cfg(not(feature = "bench-null-cipher"))]
#[test]
fn envelope_with_rewritten_epoch_is_rejected() {
    let key = aead([1; 32]);
    let sealed = envelope::seal(&key, 5, &binding(3), b"node record").unwrap();
    assert_eq!(envelope::peek_epoch(&sealed, "t", RECORD_KEY).unwrap(), 5);
    for epoch in [0u32, 4, 6, u32::MAX] {
        let mut moved = sealed.clone();
        moved[1..5].copy_from_slice(&epoch.to_le_bytes());
        assert_eq!(envelope::peek_epoch(&moved, "t", RECORD_KEY).unwrap(), epoch);
        assert_corrupt(envelope::open(&key, &binding(3), "t", &moved), &format!("epoch {epoch}"));
    }
}

#[cfg(not(feature = "bench-null-cipher"))]
#[test]
fn envelope_opened_with_another_key_is_rejected() {
    let sealed = envelope::seal(&aead([1; 32]), 0, &binding(3), b"node record").unwrap();
    for other in [[0u8; 32], [2; 32], {
        let mut k = [1u8; 32];
        k[31] = 0;
        k
    }] {
        assert_corrupt(envelope::open(&aead(other), &binding(3), "t", &sealed), "other key");
    }
}

#[cfg(not(feature = "bench-null-cipher"))]
#[test]
fn every_flipped_bit_of_a_sealed_value_is_rejected() {
    let key = aead([9; 32]);
    let sealed = envelope::seal(&key, 2, &binding(6), b"an adjacency page of a few entries").unwrap();
    for bit in 0..sealed.len() * 8 {
        let mut bad = sealed.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let r = envelope::open(&key, &binding(6), "adj", &bad);
        if bit < 8 {
            assert!(matches!(r, Err(Error::UnsupportedFormat(_))), "version bit {bit}: {r:?}");
        } else {
            assert_corrupt(r, &format!("bit {bit}"));
        }
    }
}

#[cfg(not(feature = "bench-null-cipher"))]
#[test]
fn truncated_or_extended_sealed_value_is_rejected() {
    let key = aead([9; 32]);
    let sealed = envelope::seal(&key, 0, &binding(6), b"payload").unwrap();
    for len in 0..sealed.len() {
        assert_corrupt(envelope::open(&key, &binding(6), "adj", &sealed[..len]), &format!("length {len}"));
    }
    for extra in [&b"\0"[..], b"0123456789abcdef"] {
        let longer = [sealed.as_slice(), extra].concat();
        assert_corrupt(envelope::open(&key, &binding(6), "adj", &longer), "extended");
    }
}

#[test]
fn unknown_envelope_version_is_unsupported_format() {
    let key = aead([9; 32]);
    let sealed = envelope::seal(&key, 0, &binding(6), b"payload").unwrap();
    for version in (0..=255u8).filter(|v| *v != ENVELOPE_VERSION) {
        let mut other = sealed.clone();
        other[0] = version;
        let r = envelope::open(&key, &binding(6), "adj", &other);
        assert!(matches!(r, Err(Error::UnsupportedFormat(_))), "version {version}: {r:?}");
    }
}

#[test]
fn blind_keys_are_distinct_per_input_and_per_org_key() {
    let a = BlindKey::new(&Secret::from_bytes([1; 32]));
    let b = BlindKey::new(&Secret::from_bytes([2; 32]));
    let mut seen = std::collections::HashSet::new();
    for kind in 1..=6u8 {
        for sub in 0..3u8 {
            for page in 0..3u32 {
                for id in [0u64, 1, 2, 255, 256, u64::MAX] {
                    assert!(seen.insert(a.blind(kind, sub, page, id)), "collision at {kind}/{sub}/{page}/{id}");
                    assert_ne!(a.blind(kind, sub, page, id), b.blind(kind, sub, page, id));
                }
            }
        }
    }
}

/// Every record address unblinds to itself, clustered (index buckets, edge pages) or not; the
/// keys of one run's buckets and of the edge pages share a prefix and sort by number; and a key
/// no address blinds to (a random one, another org's) unblinds to no record kind.
#[test]
fn blind_keys_invert_and_cluster_index_runs_and_edge_pages() {
    use crate::store::tables::blind_kind::{ADJ, BUCKET, EDGE, NODE};
    let a = BlindKey::new(&Secret::from_bytes([1; 32]));
    let b = BlindKey::new(&Secret::from_bytes([2; 32]));
    let mut addrs = vec![];
    for slot in 0..RUN_SLOTS as u32 {
        for bucket in [0u64, 1, 2, 1023, u64::from(u32::MAX)] {
            addrs.push((BUCKET, 0, slot, bucket));
        }
    }
    for page in [0u64, 1, 127, 1 << 40, u64::MAX] {
        addrs.push((EDGE, 0, 0, page));
        addrs.push((NODE, 0, 0, page));
        addrs.push((ADJ, 1, 3, page));
    }
    let mut seen = std::collections::HashSet::new();
    for &(kind, sub, page, id) in &addrs {
        let k = a.blind(kind, sub, page, id);
        assert!(seen.insert(k), "collision at {kind}/{sub}/{page}/{id}");
        assert_eq!(a.unblind(&k), (kind, sub, page, id));
        assert_ne!(b.unblind(&k).0, kind, "another org's key must not unblind to the same kind");
    }
    let run = |slot, bucket| a.blind(BUCKET, 0, slot, bucket);
    assert_eq!(run(3, 0)[..12], run(3, 77)[..12]);
    assert_ne!(run(3, 0)[..12], run(4, 0)[..12]);
    assert!(run(3, 1) < run(3, 2) && run(3, 2) < run(3, 256));
    let edge = |page| a.blind(EDGE, 0, 0, page);
    assert_eq!(edge(1)[..8], edge(900)[..8]);
    assert!(edge(1) < edge(2) && edge(255) < edge(256));
    // Keys no address has: random keys unblind to kind 0 or to a random block, which (with
    // all-zero bytes 2..4 required) is at most one in 2^16; none of these hits a record kind.
    for i in 0..2_000u32 {
        let mut k = [0u8; 16];
        for (j, byte) in k.iter_mut().enumerate() {
            *byte = (i.wrapping_mul(2_654_435_761).rotate_left(j as u32) >> 3) as u8 ^ j as u8;
        }
        let (kind, ..) = a.unblind(&k);
        assert!(kind == 0 || !(1..=8).contains(&kind), "a random key unblinds to record kind {kind}");
    }
}

#[test]
fn mac_parts_are_length_prefixed_so_splits_differ() {
    let k = MacKey::new(&Secret::from_bytes([5; 32]));
    assert_ne!(k.mac(&[b"gmail", b"alice"]), k.mac(&[b"gmai", b"lalice"]));
    assert_ne!(k.mac(&[b"ab"]), k.mac(&[b"a", b"b"]));
    assert_eq!(k.mac(&[b"gmail", b"alice"]), k.mac(&[b"gmail", b"alice"]));
    assert_ne!(k.mac(&[b"x"]), MacKey::new(&Secret::from_bytes([6; 32])).mac(&[b"x"]));
}
