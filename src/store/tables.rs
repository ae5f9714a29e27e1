//! The redb tables of DESIGN §4 and the shape of their keys.

use std::sync::OnceLock;

use redb::{ReadOnlyTable, ReadableDatabase, TableDefinition};

use crate::error::{Error, Result};
use crate::types::OrgTag;

pub(crate) type Def = TableDefinition<'static, &'static [u8], &'static [u8]>;

/// A table: its redb definition, its id (bound into every envelope's AAD) and its name.
#[derive(Clone, Copy)]
pub(crate) struct Table {
    pub def: Def,
    pub id: u8,
    pub name: &'static str,
}

macro_rules! tables {
    ($($c:ident = ($name:literal, $id:literal);)*) => {
        $(pub(crate) const $c: Table = Table { def: TableDefinition::new($name), id: $id, name: $name };)*
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

/// A table opened in a read snapshot.
pub(crate) type RoTable = ReadOnlyTable<&'static [u8], &'static [u8]>;

/// An MVCC snapshot whose tables are opened on first use, so beginning one costs one redb read
/// transaction and nothing per table.
pub(crate) struct Snapshot {
    rtx: redb::ReadTransaction,
    tables: [OnceLock<RoTable>; 10],
}

impl Snapshot {
    pub(crate) fn begin(db: &redb::Database) -> Result<Self> {
        let rtx = super::contain("file", &[], || Ok(db.begin_read()?))?;
        Ok(Snapshot { rtx, tables: Default::default() })
    }

    /// `table`, opened once per snapshot.
    pub(crate) fn table(&self, table: Table) -> Result<&RoTable> {
        let slot = self.tables.get(usize::from(table.id)).ok_or_else(|| Error::Internal("table id".into()))?;
        if let Some(t) = slot.get() {
            return Ok(t);
        }
        let t = super::contain(table.name, &[], || Ok(self.rtx.open_table(table.def)?))?;
        Ok(slot.get_or_init(|| t))
    }

    /// One value, copied out; a panic inside redb (it panics on some corrupt files) is `Corrupt`.
    pub(crate) fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let t = self.table(table)?;
        super::contain(table.name, key, || Ok(redb::ReadableTable::get(t, key)?.map(|v| v.value().to_vec())))
    }
}
