//! The authenticated state of an org: a tree of page versions over every sealed record.
//!
//! Every sealed value carries its page version (the commit that wrote it) in its header, bound
//! into the AEAD's associated data. The state tree says, for every record an org holds, which
//! version it must be — and, by holding nothing for an address, that no record may be there. Its
//! nodes are sealed records too (table `tree`), each bound to its own version, which its parent
//! holds; the versions of the top nodes are the org's *state root*, kept in its registry entry
//! (itself covered by the database root, see `store::root`). So a page put back from an older
//! copy, a page of another org, a removed page or a removed record put back is `Corrupt` on the
//! read path (`check`), not only in `verify()`.
//!
//! Shape: one tree per tracked record kind. Leaves cover 64 consecutive ids of their kind
//! (node pages by page number, adjacency pages and node properties by node id, edge properties
//! by edge id, index buckets by bucket number (the run's slot as `page`), kind names by kind id); a leaf's slot is the id's low 6
//! bits with the record's `sub` and `page`. Inner nodes have 64 children; a tree is as deep as
//! its largest id needs and grows at the top. Ids are dense and grow, so a commit touches the
//! leaves of the ids it writes and their paths up: appends touch the last leaves.
//!
//! Nodes are cached per org by `(kind, level, index, version)`: a version names one content, so
//! the cache needs no invalidation (a commit writes new versions; old entries age out). Leaves
//! are also cached as resolved from a root version (one lookup per read instead of one per
//! level): a root version names its whole tree.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::org::OrgInner;
use super::tables::{RecordKey, RecordKind, Table, TREE};
use crate::codec::TreeNode;
use crate::crypto::envelope;
use crate::error::{Error, Result};
use crate::types::Compartment;

/// Bits of an id a leaf covers; also the fan-out of inner nodes (`2^FAN_BITS`).
const FAN_BITS: u32 = 6;
const FAN: u64 = 1 << FAN_BITS;
/// Deepest tree: enough for any u64 id.
const MAX_DEPTH: u8 = 11;
/// The `level` of a cache entry that maps (kind, leaf index, root version) to the leaf.
const RESOLVED: u8 = u8::MAX;

/// The record kinds the tree covers, in root order. Audit entries are not in it: they are
/// chained by HMAC and their head is in the registry entry.
pub(crate) const TRACKED: [RecordKind; 7] = [
    RecordKind::NodePage,
    RecordKind::EdgePage,
    RecordKind::Adj,
    RecordKind::NodeProps,
    RecordKind::EdgeProps,
    RecordKind::Bucket,
    RecordKind::Dict,
];

/// The logical address of a record: what its key blinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Addr {
    code: u8,
    pub sub: u8,
    pub page: u32,
    pub id: u64,
}

impl Addr {
    /// The address of a record of `kind` (a tracked kind) at `(sub, page, id)`.
    pub(crate) fn new(kind: RecordKind, sub: u8, page: u32, id: u64) -> Result<Addr> {
        // The secrets record is a `dict` record (see `tables::SECRETS_SUB`).
        let kind = if kind == RecordKind::Secrets { RecordKind::Dict } else { kind };
        let code = TRACKED.iter().position(|k| *k == kind).ok_or_else(|| Error::Internal("untracked kind".into()))?;
        Ok(Addr { code: code as u8, sub, page, id })
    }

    pub(crate) fn node_page(page: u64) -> Addr {
        Addr { code: 0, sub: 0, page: 0, id: page }
    }
    pub(crate) fn edge_page(page: u64) -> Addr {
        Addr { code: 1, sub: 0, page: 0, id: page }
    }
    pub(crate) fn adj(node: u64, dir: u8, page: u32) -> Addr {
        Addr { code: 2, sub: dir, page, id: node }
    }
    pub(crate) fn props(owner: super::records::Owner, c: Compartment) -> Addr {
        match owner {
            super::records::Owner::Node(id) => Addr { code: 3, sub: c.index(), page: 0, id },
            super::records::Owner::Edge(id) => Addr { code: 4, sub: c.index(), page: 0, id },
        }
    }
    pub(crate) fn bucket(slot: u8, b: u32) -> Addr {
        Addr { code: 5, sub: 0, page: u32::from(slot), id: u64::from(b) }
    }
    pub(crate) fn dict(kind: u32) -> Addr {
        Addr { code: 6, sub: 0, page: 0, id: u64::from(kind) }
    }

    /// The address as 16 bytes (kind code, sub, page, id; two zero bytes): the page cache's key
    /// after the handle prefix (`cache::PageKey`).
    pub(crate) fn packed(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0] = self.code;
        b[1] = self.sub;
        b[2..6].copy_from_slice(&self.page.to_le_bytes());
        b[6..14].copy_from_slice(&self.id.to_le_bytes());
        b
    }

    /// The record kind.
    pub(crate) fn kind(&self) -> RecordKind {
        TRACKED[usize::from(self.code)]
    }

    /// What the record at this address is: its tracked kind, or `Secrets` for the secrets
    /// record (a `dict` record, see `tables::SECRETS_SUB`).
    pub(crate) fn record_kind(&self) -> RecordKind {
        let kind = self.kind();
        match kind {
            RecordKind::Dict if self.sub == super::tables::SECRETS_SUB && self.id == 0 => RecordKind::Secrets,
            _ => kind,
        }
    }

    /// Its storage key in `org`.
    pub(crate) fn key(&self, org: &OrgInner) -> RecordKey {
        // Every tracked kind is blinded.
        org.key_of(self.kind(), self.sub, self.page, self.id).unwrap_or([0; 24])
    }

    fn leaf(&self) -> u64 {
        self.id >> FAN_BITS
    }

    fn slot(&self) -> u64 {
        ((self.id & (FAN - 1)) << 40) | (u64::from(self.sub) << 32) | u64::from(self.page)
    }

    fn from_slot(code: u8, leaf: u64, slot: u64) -> Addr {
        Addr {
            code,
            sub: ((slot >> 32) & 0xff) as u8,
            page: (slot & 0xffff_ffff) as u32,
            id: (leaf << FAN_BITS) | (slot >> 40),
        }
    }
}

/// The top of one kind's tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Root {
    /// Levels above the leaves.
    depth: u8,
    /// The version of the top node (0: the kind has no records).
    version: u64,
}

/// The state root of an org: the top of each kind's tree, in [`TRACKED`] order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Roots([Root; TRACKED.len()]);

const ROOT_LEN: usize = 9;

impl Roots {
    /// Decodes the registry entry's `state_root`.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Roots> {
        if bytes.len() != ROOT_LEN * TRACKED.len() {
            return Err(Error::corrupt(super::tables::ORGS.name, &[]));
        }
        let mut out = Roots::default();
        for (r, b) in out.0.iter_mut().zip(bytes.chunks_exact(ROOT_LEN)) {
            let mut v = [0u8; 8];
            v.copy_from_slice(&b[1..]);
            *r = Root { depth: b[0], version: u64::from_le_bytes(v) };
            if r.depth > MAX_DEPTH || (r.version == 0 && r.depth != 0) {
                return Err(Error::corrupt(super::tables::ORGS.name, &[]));
            }
        }
        Ok(out)
    }

    /// The bytes kept in the registry entry.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ROOT_LEN * TRACKED.len());
        for r in &self.0 {
            out.push(r.depth);
            out.extend_from_slice(&r.version.to_le_bytes());
        }
        out
    }
}

/// Reads a stored value from the snapshot or transaction the tree is read in.
pub(crate) type Get<'a> = dyn Fn(Table, &[u8]) -> Result<Option<Vec<u8>>> + 'a;

/// What a walk of the state tree found: every record's address and version, every tree node's
/// key and version.
pub(crate) type Walk = (Vec<(Addr, u64)>, Vec<(RecordKey, u64)>);

/// Cache key of a tree node: (kind code, level, index, version).
pub(crate) type NodeKey = (u8, u8, u64, u64);

impl OrgInner {
    fn tree_key(&self, code: u8, level: u8, index: u64) -> RecordKey {
        self.key_of(RecordKind::Tree, code, u32::from(level), index).unwrap_or([0; 24])
    }

    /// Tree node `(code, level, index)`, which must be at `version` (0: empty).
    fn tree_node(&self, get: &Get<'_>, code: u8, level: u8, index: u64, version: u64) -> Result<Arc<TreeNode>> {
        if version == 0 {
            return Ok(Arc::new(TreeNode::default()));
        }
        let ck = (code, level, index, version);
        if let Some(n) = self.shared.tree.get(&ck) {
            return Ok(n);
        }
        let key = self.tree_key(code, level, index);
        let sealed = get(TREE, &key)?.ok_or_else(|| Error::corrupt(TREE.name, &key))?;
        if envelope::peek_version(&sealed, TREE.name, &key)? != version {
            return Err(Error::corrupt(TREE.name, &key));
        }
        let node: TreeNode = self.open_record(TREE, &key, Compartment::Core, &sealed)?;
        if node.validate().is_err() || (level > 0 && node.entries.iter().any(|e| e.0 >= FAN)) {
            return Err(Error::corrupt(TREE.name, &key));
        }
        let node = Arc::new(node);
        self.shared.tree.insert(ck, node.clone());
        Ok(node)
    }

    /// The version the record at `addr` must have in the state `roots` (0: no record).
    pub(crate) fn expected_version(&self, roots: &Roots, get: &Get<'_>, addr: Addr) -> Result<u64> {
        let root = roots.0[usize::from(addr.code)];
        let leaf = addr.leaf();
        if root.version == 0 || leaf.checked_shr(FAN_BITS * u32::from(root.depth)).unwrap_or(0) != 0 {
            return Ok(0);
        }
        // The leaf as this root resolves it: one cache lookup instead of one per level (a root
        // version names its whole tree, so the entry never goes stale, it only ages out).
        let resolved = (addr.code, RESOLVED, leaf, root.version);
        if let Some(node) = self.shared.tree.get(&resolved) {
            return Ok(node.get(addr.slot()));
        }
        let mut version = root.version;
        for level in (1..=root.depth).rev() {
            let index = leaf >> (FAN_BITS * u32::from(level));
            let node = self.tree_node(get, addr.code, level, index, version)?;
            version = node.get((leaf >> (FAN_BITS * u32::from(level - 1))) & (FAN - 1));
            if version == 0 {
                return Ok(0);
            }
        }
        let node = self.tree_node(get, addr.code, 0, leaf, version)?;
        self.shared.tree.insert(resolved, node.clone());
        Ok(node.get(addr.slot()))
    }

    /// Whether the state `roots` holds a record at `addr`, without reading it: `None` when the
    /// state is not checked (`unchecked_state_for_benchmarks`), so the caller cannot lean on it.
    pub(crate) fn holds(&self, roots: &Roots, get: &Get<'_>, addr: Addr) -> Result<Option<bool>> {
        if self.db.unchecked_state {
            return Ok(None);
        }
        Ok(Some(self.expected_version(roots, get, addr)? != 0))
    }

    /// Checks a record read at `addr` (`None`: no record there) against the state `roots`: a
    /// record of another version, a missing record or a record where there must be none is
    /// `Corrupt`. The value itself is authenticated when it is opened.
    pub(crate) fn check_state(
        &self,
        roots: &Roots,
        get: &Get<'_>,
        addr: Addr,
        key: &[u8],
        sealed: Option<&[u8]>,
    ) -> Result<()> {
        if self.db.unchecked_state {
            return Ok(());
        }
        let table = addr.kind().table();
        let have = match sealed {
            None => 0,
            Some(s) => match envelope::peek_version(s, table.name, key)? {
                0 => return Err(Error::corrupt(table.name, key)),
                v => v,
            },
        };
        if self.expected_version(roots, get, addr)? != have {
            return Err(Error::corrupt(table.name, key));
        }
        Ok(())
    }

    /// Reads the record at `addr` (whose key is `key`) through `get` and checks it against
    /// `roots`.
    pub(crate) fn fetch(&self, roots: &Roots, get: &Get<'_>, addr: Addr, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let sealed = get(addr.kind().table(), key)?;
        self.check_state(roots, get, addr, key, sealed.as_deref())?;
        Ok(sealed)
    }

    /// Every `(address, version)` the state `roots` holds, and every tree node's key and version,
    /// for `verify()`. A node that fails to load is reported through `bad` and its subtree skipped.
    pub(crate) fn walk_state(
        &self,
        roots: &Roots,
        get: &Get<'_>,
        bad: &mut dyn FnMut(RecordKey, Error),
    ) -> Result<Walk> {
        let mut records = Vec::new();
        let mut nodes = Vec::new();
        for (code, root) in roots.0.iter().enumerate() {
            if root.version == 0 {
                continue;
            }
            let mut stack = vec![(root.depth, 0u64, root.version)];
            while let Some((level, index, version)) = stack.pop() {
                let key = self.tree_key(code as u8, level, index);
                nodes.push((key, version));
                let node = match self.tree_node(get, code as u8, level, index, version) {
                    Ok(n) => n,
                    Err(e @ (Error::Corrupt { .. } | Error::UnsupportedFormat(_))) => {
                        bad(key, e);
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                for &(slot, v) in &node.entries {
                    if level == 0 {
                        records.push((Addr::from_slot(code as u8, index, slot), v));
                    } else {
                        stack.push((level - 1, (index << FAN_BITS) | slot, v));
                    }
                }
            }
        }
        Ok((records, nodes))
    }
}

/// A commit's change to the state: new versions (0: removed) for addresses, applied to the tree
/// as of the transaction's base.
pub(crate) struct StateUpdate<'o> {
    org: &'o OrgInner,
    version: u64,
    /// Sealed tree nodes to write (filled when `apply` returns).
    pub puts: Vec<(RecordKey, Vec<u8>)>,
    /// Tree nodes that became empty.
    pub removes: Vec<RecordKey>,
    /// New nodes, sealed together (on all cores) at the end of `apply`.
    pending: Vec<(RecordKey, TreeNode, NodeKey)>,
    /// The new nodes by cache key, to enter in the org's tree cache once the commit is durable
    /// (filled when `apply` returns): the next commit then reads none of them back.
    pub fresh: Vec<(NodeKey, Arc<TreeNode>)>,
}

/// Where a node being rewritten comes from.
#[derive(Clone, Copy)]
enum Cur {
    /// Stored at this version (0: absent).
    Stored(u64),
    /// A new level above the old top: child 0 is the old tree (`depth`, `version`).
    Grown { depth: u8, version: u64 },
}

impl<'o> StateUpdate<'o> {
    /// Applies `changes` to `roots` (as read through `get`), sealing new nodes at `version`.
    pub(crate) fn apply(
        org: &'o OrgInner,
        roots: &Roots,
        get: &Get<'_>,
        changes: impl IntoIterator<Item = (Addr, u64)>,
        version: u64,
    ) -> Result<(Roots, StateUpdate<'o>)> {
        let mut by_kind: [BTreeMap<u64, Vec<(u64, u64)>>; TRACKED.len()] = Default::default();
        for (addr, v) in changes {
            by_kind[usize::from(addr.code)].entry(addr.leaf()).or_default().push((addr.slot(), v));
        }
        let mut up =
            StateUpdate { org, version, puts: Vec::new(), removes: Vec::new(), pending: Vec::new(), fresh: Vec::new() };
        let mut out = *roots;
        for (code, leaves) in by_kind.iter().enumerate() {
            let Some((&max_leaf, _)) = leaves.last_key_value() else { continue };
            let old = roots.0[code];
            let mut depth = if old.version == 0 { 0 } else { old.depth };
            while max_leaf.checked_shr(FAN_BITS * u32::from(depth)).unwrap_or(0) != 0 {
                depth += 1;
            }
            let cur = if old.version != 0 && depth > old.depth {
                Cur::Grown { depth: old.depth, version: old.version }
            } else {
                Cur::Stored(old.version)
            };
            let leaves: Vec<(u64, &[(u64, u64)])> = leaves.iter().map(|(l, c)| (*l, c.as_slice())).collect();
            let v = up.rewrite(get, code as u8, depth, 0, cur, &leaves)?;
            out.0[code] = if v == 0 { Root::default() } else { Root { depth, version: v } };
        }
        let pending = std::mem::take(&mut up.pending);
        up.puts = super::records::par_map(&pending, |(key, node, _)| {
            Ok((*key, org.seal_record(TREE, key, Compartment::Core, version, node)?))
        })?;
        up.fresh = pending.into_iter().map(|(_, node, ck)| (ck, Arc::new(node))).collect();
        Ok((out, up))
    }

    /// Rewrites node `(code, level, index)` with the changes of `leaves` (all under it); returns
    /// its new version (0: it is empty now and removed).
    fn rewrite(
        &mut self,
        get: &Get<'_>,
        code: u8,
        level: u8,
        index: u64,
        cur: Cur,
        leaves: &[(u64, &[(u64, u64)])],
    ) -> Result<u64> {
        let (mut node, stored) = match cur {
            Cur::Stored(v) => ((*self.org.tree_node(get, code, level, index, v)?).clone(), v != 0),
            Cur::Grown { .. } => (TreeNode::default(), false),
        };
        if level == 0 {
            for (_, changes) in leaves {
                for &(slot, v) in *changes {
                    node.set(slot, v);
                }
            }
        } else {
            let shift = FAN_BITS * u32::from(level - 1);
            let mut i = 0;
            while i < leaves.len() {
                let child = (leaves[i].0 >> shift) & (FAN - 1);
                let mut j = i;
                while j < leaves.len() && (leaves[j].0 >> shift) & (FAN - 1) == child {
                    j += 1;
                }
                let child_cur = match cur {
                    Cur::Grown { depth, version } if child == 0 => {
                        if level - 1 > depth {
                            Cur::Grown { depth, version }
                        } else {
                            Cur::Stored(version)
                        }
                    }
                    Cur::Grown { .. } => Cur::Stored(0),
                    Cur::Stored(_) => Cur::Stored(node.get(child)),
                };
                let v = self.rewrite(get, code, level - 1, (index << FAN_BITS) | child, child_cur, &leaves[i..j])?;
                node.set(child, v);
                i = j;
            }
            // A grown level keeps the old tree as child 0 even when no change went there.
            if let Cur::Grown { depth, version } = cur {
                if node.get(0) == 0 && !leaves.iter().any(|(l, _)| (l >> shift) & (FAN - 1) == 0) {
                    let v = if level - 1 > depth { self.lift(code, level - 1, depth, version)? } else { version };
                    node.set(0, v);
                }
            }
        }
        let key = self.org.tree_key(code, level, index);
        if node.entries.is_empty() {
            if stored {
                self.removes.push(key);
            }
            return Ok(0);
        }
        self.pending.push((key, node, (code, level, index, self.version)));
        Ok(self.version)
    }

    /// Writes the chain of new nodes `(code, level..depth+1, 0)` over an old top at `depth`;
    /// returns the version of the node at `level`.
    fn lift(&mut self, code: u8, level: u8, depth: u8, version: u64) -> Result<u64> {
        let mut v = version;
        for l in depth + 1..=level {
            let node = TreeNode { entries: vec![(0, v)] };
            let key = self.org.tree_key(code, l, 0);
            self.pending.push((key, node, (code, l, 0, self.version)));
            v = self.version;
        }
        Ok(v)
    }

    /// Number of values sealed (for the epoch's nonce budget).
    pub(crate) fn seals(&self) -> u64 {
        self.puts.len() as u64
    }
}
