//! Keys, the HKDF derivation tree, the AES-256-GCM envelope and blind record keys.
//!
//! Pure functions and key types; no I/O besides the operating system's random number generator.

mod blind;
pub(crate) mod envelope;
mod keys;
pub(crate) mod sealed;
#[cfg(test)]
mod tests;

pub(crate) use blind::{BlindKey, RUN_SLOTS};
pub(crate) use envelope::Binding;
pub(crate) use keys::{derive, fill_random, AeadKey, MacKey};
pub use keys::{KeyringKey, OrgKey, RootKey, Secret, TransportKey, KEY_LEN};

use std::sync::Arc;

use crate::error::Result;
use crate::types::{Compartment, OrgTag};

const INFO_ROOT_CHECK: &[u8] = b"silograph/1/root-check";
const INFO_KEK: &[u8] = b"silograph/1/kek";
const INFO_ORG_TAG: &[u8] = b"silograph/1/org-tag";
const INFO_ORG: &[u8] = b"silograph/1/org";
const INFO_ORG_STRUCT: &[u8] = b"silograph/1/org-struct";
const INFO_BYOK_CHECK: &[u8] = b"silograph/1/byok-check";
const INFO_DB_ROOT_MAC: &[u8] = b"silograph/1/db-root-mac";
const INFO_DB_ROOT_SEAL: &[u8] = b"silograph/1/db-root-seal";
const INFO_ANCHOR: &[u8] = b"silograph/1/anchor";
const INFO_BYOK_CHAIN: &[u8] = b"silograph/1/byok-chain";
const INFO_CUSTODY_SEED: &[u8] = b"silograph/1/custody-seed";
const INFO_KEYRING: &[u8] = b"silograph/1/keyring";
const INFO_KEYRING_SLOT: &[u8] = b"silograph/1/keyring-slot";

/// Keys derived from the root key for one database.
pub(crate) struct RootKeys {
    /// Seals the known root-check value in `meta`.
    pub check: AeadKey,
    /// Wraps org seeds, org registry entries and the database secret.
    pub kek: AeadKey,
}

impl RootKeys {
    pub(crate) fn derive(root: &RootKey, db_id: &[u8; 16]) -> Self {
        RootKeys {
            check: AeadKey::new(&derive(root.expose(), db_id, &[INFO_ROOT_CHECK])),
            kek: AeadKey::new(&derive(root.expose(), db_id, &[INFO_KEK])),
        }
    }
}

/// Keys derived from the database secret (a random value wrapped under the KEK, so that root
/// rotation does not change org tags and hence no record key changes).
pub(crate) struct DbSecretKeys {
    tag: MacKey,
    /// Hashes registry rows into the database root.
    pub root_mac: MacKey,
    /// Seals the database root record.
    pub root_seal: AeadKey,
    /// Authenticates the anchors handed to the host.
    pub anchor: MacKey,
}

impl DbSecretKeys {
    pub(crate) fn derive(db_secret: &Secret, db_id: &[u8; 16]) -> Self {
        let d = |info| derive(db_secret.expose(), db_id, &[info]);
        DbSecretKeys {
            tag: MacKey::new(&d(INFO_ORG_TAG)),
            root_mac: MacKey::new(&d(INFO_DB_ROOT_MAC)),
            root_seal: AeadKey::new(&d(INFO_DB_ROOT_SEAL)),
            anchor: MacKey::new(&d(INFO_ANCHOR)),
        }
    }

    /// The 8-byte tag that prefixes every record key of the org called `name`.
    pub(crate) fn org_tag(&self, name: &str) -> OrgTag {
        let mac = self.tag.mac(&[name.as_bytes()]);
        let mut t = [0u8; 8];
        t.copy_from_slice(&mac[..8]);
        OrgTag(t)
    }
}

/// Every generation of the database secret this database knows: the current one (the tags of
/// orgs created or re-keyed from now on, the database root's keys) and the ones earlier root
/// rotations retired, newest first, still needed to find the orgs tagged under them and to
/// check anchors minted under them.
pub(crate) struct DbSecrets {
    current: (Secret, DbSecretKeys),
    priors: Vec<(Secret, DbSecretKeys)>,
}

impl DbSecrets {
    /// The generations from the current secret and the retired ones (newest first).
    pub(crate) fn new(current: Secret, priors: Vec<Secret>, db_id: &[u8; 16]) -> Self {
        let gen = |s: Secret| {
            let k = DbSecretKeys::derive(&s, db_id);
            (s, k)
        };
        DbSecrets { current: gen(current), priors: priors.into_iter().map(gen).collect() }
    }

    /// A fresh current secret, this one's secrets becoming the newest retired ones (root
    /// rotation).
    pub(crate) fn rotated(&self, db_id: &[u8; 16]) -> Result<Self> {
        let priors = self.secrets().map(|s| Secret::copy_from(s.expose())).collect();
        Ok(DbSecrets::new(Secret::generate()?, priors, db_id))
    }

    /// The keys of the current secret.
    pub(crate) fn current(&self) -> &DbSecretKeys {
        &self.current.1
    }

    /// The current secret.
    pub(crate) fn current_secret(&self) -> &Secret {
        &self.current.0
    }

    /// The retired secrets, newest first.
    pub(crate) fn prior_secrets(&self) -> impl Iterator<Item = &Secret> {
        self.priors.iter().map(|(s, _)| s)
    }

    /// Every secret, the current one first.
    fn secrets(&self) -> impl Iterator<Item = &Secret> {
        std::iter::once(&self.current.0).chain(self.prior_secrets())
    }

    /// The keys of every generation, the current one first.
    pub(crate) fn all(&self) -> impl Iterator<Item = &DbSecretKeys> {
        std::iter::once(&self.current.1).chain(self.priors.iter().map(|(_, k)| k))
    }

    /// The tags `name` has had under every generation, the current one first (an org keeps the
    /// tag it was created or last re-keyed under).
    pub(crate) fn tags_of(&self, name: &str) -> Vec<OrgTag> {
        let mut tags: Vec<OrgTag> = Vec::new();
        for k in self.all() {
            let t = k.org_tag(name);
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
        tags
    }
}

impl std::fmt::Debug for DbSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbSecrets").field("priors", &self.priors.len()).finish_non_exhaustive()
    }
}

/// The data keys of one key epoch: one AES-256-GCM key per compartment.
///
/// A compartment outside a handle's scope has no key here at all.
pub(crate) struct EpochKeys {
    pub keys: [Option<AeadKey>; 4],
}

/// The structure keys of one org: they turn ids into record keys and chain audit entries.
/// Long-lived (derived from the structure seed), so a data-key rotation changes no record key.
pub(crate) struct StructureKeys {
    pub blind: BlindKey,
    pub index: MacKey,
    pub audit: MacKey,
}

impl std::fmt::Debug for StructureKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StructureKeys(<redacted>)")
    }
}

impl std::fmt::Debug for EpochKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held: Vec<bool> = self.keys.iter().map(Option::is_some).collect();
        f.debug_struct("EpochKeys").field("held", &held).finish_non_exhaustive()
    }
}

/// The purposes of the per-epoch data keys, indexed by compartment.
fn compartment_purpose(c: Compartment) -> &'static [u8] {
    match c {
        Compartment::Core => b"data",
        Compartment::Labels => b"labels",
        Compartment::Raw => b"raw",
        Compartment::Secrets => b"secrets",
    }
}

/// Derives the data keys of one epoch from that epoch's seed, for the compartments in `scope`.
pub(crate) fn derive_epoch_keys(
    seed: &Secret,
    db_id: &[u8; 16],
    tag: OrgTag,
    epoch: u32,
    scope: &[Compartment],
) -> EpochKeys {
    let mut keys: [Option<AeadKey>; 4] = [None, None, None, None];
    for c in scope {
        let s = derive(seed.expose(), db_id, &[INFO_ORG, &tag.0, &epoch.to_le_bytes(), compartment_purpose(*c)]);
        keys[c.index() as usize] = Some(AeadKey::new(&s));
    }
    EpochKeys { keys }
}

/// Structure keys (blind, index, audit) of an org, from its long-lived structure seed.
pub(crate) fn derive_structure_keys(structure_seed: &Secret, db_id: &[u8; 16], tag: OrgTag) -> StructureKeys {
    let d = |purpose: &[u8]| derive(structure_seed.expose(), db_id, &[INFO_ORG_STRUCT, &tag.0, purpose]);
    StructureKeys {
        blind: BlindKey::new(&d(b"blind")),
        index: MacKey::new(&d(b"index")),
        audit: MacKey::new(&d(b"audit")),
    }
}

/// The key that seals a BYOK org's key-check record.
pub(crate) fn byok_check_key(key: &OrgKey, db_id: &[u8; 16], tag: OrgTag) -> AeadKey {
    AeadKey::new(&derive(key.expose(), db_id, &[INFO_BYOK_CHECK, &tag.0]))
}

/// A BYOK org's per-compartment chain keys, from the host key: the data keys of every epoch
/// after 0 derive from them, so a handle holds only its scope's chain keys, never the host key.
pub(crate) struct ByokChain {
    keys: [Option<Secret>; 4],
    /// Epoch 0 predates the chains: its keys derive from the host key directly (as in v2 files
    /// before BYOK rotation), so they are derived once, at open, for the handle's scope.
    epoch0: Option<Arc<EpochKeys>>,
}

impl std::fmt::Debug for ByokChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held: Vec<bool> = self.keys.iter().map(Option::is_some).collect();
        f.debug_struct("ByokChain").field("held", &held).finish_non_exhaustive()
    }
}

impl ByokChain {
    /// The chain keys of `scope` (and epoch 0's keys) from the host key.
    pub(crate) fn derive(key: &OrgKey, db_id: &[u8; 16], tag: OrgTag, scope: &[Compartment]) -> ByokChain {
        let mut keys: [Option<Secret>; 4] = [None, None, None, None];
        for c in scope {
            keys[c.index() as usize] =
                Some(derive(key.expose(), db_id, &[INFO_BYOK_CHAIN, &tag.0, compartment_purpose(*c)]));
        }
        let epoch0 = Some(Arc::new(derive_epoch_keys(&byok_seed(key), db_id, tag, 0, scope)));
        ByokChain { keys, epoch0 }
    }

    /// The compartments whose chain keys this holds.
    #[cfg_attr(not(feature = "fuzzing"), allow(dead_code))]
    pub(crate) fn held(&self) -> Vec<Compartment> {
        Compartment::FULL_SCOPE.into_iter().filter(|c| self.keys[c.index() as usize].is_some()).collect()
    }

    /// The data keys of `epoch` for the compartments this chain holds.
    pub(crate) fn epoch_keys(&self, db_id: &[u8; 16], tag: OrgTag, epoch: u32) -> Arc<EpochKeys> {
        if epoch == 0 {
            if let Some(k) = &self.epoch0 {
                return k.clone();
            }
        }
        let mut keys: [Option<AeadKey>; 4] = [None, None, None, None];
        for c in Compartment::FULL_SCOPE {
            if let Some(chain) = &self.keys[c.index() as usize] {
                let s =
                    derive(chain.expose(), db_id, &[INFO_ORG, &tag.0, &epoch.to_le_bytes(), compartment_purpose(c)]);
                keys[c.index() as usize] = Some(AeadKey::new(&s));
            }
        }
        Arc::new(EpochKeys { keys })
    }
}

/// A BYOK org's host key seen as a seed (the key itself is never stored).
pub(crate) fn byok_seed(key: &OrgKey) -> Secret {
    Secret::copy_from(key.expose())
}

const INFO_BUNDLE_WRAP: &[u8] = b"silograph/1/bundle-wrap";

/// The key that wraps an export bundle's random key, from the transport key and the bundle id.
pub(crate) fn bundle_wrap_key(transport: &TransportKey, bundle_id: &[u8; 16]) -> AeadKey {
    AeadKey::new(&derive(transport.expose(), bundle_id, &[INFO_BUNDLE_WRAP]))
}

/// The seed an org's keys really derive from when the org is under key custody: its stored seed
/// (in the registry, wrapped under the KEK) mixed with its custody secret (stored only wrapped by
/// the host's custody). Either alone derives nothing; destroying the custody key shreds the org
/// in every copy of the file.
pub(crate) fn custody_seed(
    custody_secret: &Secret,
    db_id: &[u8; 16],
    tag: OrgTag,
    purpose: &[u8],
    stored: &[u8],
) -> Secret {
    derive(custody_secret.expose(), db_id, &[INFO_CUSTODY_SEED, &tag.0, purpose, stored])
}

/// The key that seals a local keyring file's body, from the host's keyring key and the file's
/// random id.
pub(crate) fn keyring_body_key(key: &KeyringKey, keyring_id: &[u8; 16]) -> AeadKey {
    AeadKey::new(&derive(key.expose(), keyring_id, &[INFO_KEYRING]))
}

/// The AES-256-GCM key of one keyring slot (a slot holds 32 random bytes; the key used is
/// derived so that the stored bytes are never used as a key directly).
pub(crate) fn keyring_slot_key(slot: &Secret, keyring_id: &[u8; 16]) -> AeadKey {
    AeadKey::new(&derive(slot.expose(), keyring_id, &[INFO_KEYRING_SLOT]))
}
