//! The tables of DESIGN §4 and the shape of their keys.

use crate::types::OrgTag;

/// A table: its id (bound into every envelope's AAD) and its name (redb's table name; the
/// PostgreSQL table is `silo_<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Table {
    pub id: u8,
    pub name: &'static str,
}

macro_rules! tables {
    ($($c:ident = ($name:literal, $id:literal);)*) => {
        $(pub(crate) const $c: Table = Table { id: $id, name: $name };)*
        /// Every table, for creation and verification.
        pub(crate) const ALL: &[Table] = &[$($c),*];
    };
}

tables! {
    META = ("meta", 1);
    ORGS = ("orgs", 2);
    NODES = ("nodes", 3);
    PROPS = ("props", 4);
    EDGES = ("edges", 5);
    ADJ = ("adj", 6);
    INDEX = ("index", 7);
    DICT = ("dict", 8);
    AUDIT = ("audit", 9);
    TREE = ("tree", 10);
}

/// Blind-key kinds (first byte of the block the blind PRP encrypts).
pub(crate) mod blind_kind {
    pub const NODE: u8 = 1;
    pub const EDGE: u8 = 2;
    pub const ADJ: u8 = 3;
    pub const NODE_PROPS: u8 = 4;
    pub const EDGE_PROPS: u8 = 5;
    pub const DICT: u8 = 6;
    pub const BUCKET: u8 = 7;
    pub const TREE: u8 = 8;
}

/// The `sub` of the secrets record's address: it is a `dict` record (blind kind `DICT`, id 0,
/// which no kind uses) so that the `Dict` state tree covers it.
pub(crate) const SECRETS_SUB: u8 = 1;

/// Every kind of org record: its table, how its key is addressed, which compartment's key seals
/// it. Adding a record type is a change here (and in the code that reads it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordKind {
    /// `nodes`: a node page, addressed by page number.
    NodePage,
    /// `edges`: an edge page, addressed by page number.
    EdgePage,
    /// `adj`: an adjacency page, addressed by (direction, page, node).
    Adj,
    /// `props`: a node's property map in one compartment.
    NodeProps,
    /// `props`: an edge's property map in one compartment.
    EdgeProps,
    /// `index`: an index bucket page, addressed by bucket number.
    Bucket,
    /// `dict`: a kind name, addressed by kind id.
    Dict,
    /// `audit`: an audit entry, keyed by sequence number (not blinded).
    Audit,
    /// `tree`: a node of the org's state tree, addressed by (tracked kind, level, index).
    Tree,
    /// `dict`: the org's sealed secrets, one record at address `(SECRETS_SUB, 0, 0)` of the
    /// `DICT` blind kind, under the `Secrets` key.
    Secrets,
}

impl RecordKind {
    /// The table the kind lives in.
    pub(crate) fn table(self) -> Table {
        match self {
            RecordKind::NodePage => NODES,
            RecordKind::EdgePage => EDGES,
            RecordKind::Adj => ADJ,
            RecordKind::NodeProps | RecordKind::EdgeProps => PROPS,
            RecordKind::Bucket => INDEX,
            RecordKind::Dict | RecordKind::Secrets => DICT,
            RecordKind::Audit => AUDIT,
            RecordKind::Tree => TREE,
        }
    }

    /// The blind-key kind of its keys (`None`: keys are not blinded).
    pub(crate) fn blind_kind(self) -> Option<u8> {
        match self {
            RecordKind::NodePage => Some(blind_kind::NODE),
            RecordKind::EdgePage => Some(blind_kind::EDGE),
            RecordKind::Adj => Some(blind_kind::ADJ),
            RecordKind::NodeProps => Some(blind_kind::NODE_PROPS),
            RecordKind::EdgeProps => Some(blind_kind::EDGE_PROPS),
            RecordKind::Bucket => Some(blind_kind::BUCKET),
            RecordKind::Dict => Some(blind_kind::DICT),
            RecordKind::Secrets => Some(blind_kind::DICT),
            RecordKind::Audit => None,
            RecordKind::Tree => Some(blind_kind::TREE),
        }
    }

    /// The kind of a record stored in `table` whose key unblinds to `addr` (`(kind, sub, page,
    /// id)`); `None` if the two do not agree (a record of one kind under another's table).
    pub(crate) fn of(table: Table, addr: Option<(u8, u8, u32, u64)>) -> Option<RecordKind> {
        if table.id == AUDIT.id {
            return Some(RecordKind::Audit);
        }
        let (kind, sub, page, id) = addr?;
        // Every blinded kind: those the state tree tracks, and the tree's own nodes.
        let rk = super::state::TRACKED
            .into_iter()
            .chain([RecordKind::Tree])
            .find(|k| k.blind_kind() == Some(kind) && k.table().id == table.id)?;
        // Only adjacency keys use `sub` (direction) and `page`; property keys use `sub`; bucket
        // keys use `page`.
        let shape_ok = match rk {
            RecordKind::Adj => sub <= 1,
            RecordKind::NodeProps | RecordKind::EdgeProps => sub <= 2 && page == 0,
            RecordKind::Tree => usize::from(sub) < super::state::TRACKED.len() && page < 16,
            // An index bucket's `page` is its run's slot.
            RecordKind::Bucket => sub == 0 && page < super::records::RUN_SLOTS as u32,
            RecordKind::Dict if sub == SECRETS_SUB && page == 0 && id == 0 => return Some(RecordKind::Secrets),
            _ => sub == 0 && page == 0,
        };
        shape_ok.then_some(rk)
    }

    /// The compartment whose key seals a record of this kind (`sub` of a property key).
    pub(crate) fn compartment(self, sub: u8) -> crate::types::Compartment {
        use crate::types::Compartment;
        match self {
            RecordKind::NodeProps | RecordKind::EdgeProps => match sub {
                1 => Compartment::Labels,
                2 => Compartment::Raw,
                _ => Compartment::Core,
            },
            RecordKind::Secrets => Compartment::Secrets,
            _ => Compartment::Core,
        }
    }
}

/// Index domains (first field of the index HMAC).
pub(crate) mod index_domain {
    pub const NODE_SOURCE: &[u8] = b"node-source";
    pub const EDGE_SOURCE: &[u8] = b"edge-source";
    pub const KIND: &[u8] = b"kind";
}

/// A record key: org tag ‖ 16 opaque bytes.
pub(crate) type RecordKey = [u8; 24];

pub(crate) fn record_key(tag: OrgTag, opaque: &[u8; 16]) -> RecordKey {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&tag.0);
    k[8..].copy_from_slice(opaque);
    k
}
