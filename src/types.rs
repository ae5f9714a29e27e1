//! Plain value types shared by every layer: ids, directions, compartments, property values.

/// A node's id, assigned per organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NodeId(pub u64);

/// An edge's id, assigned per organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct EdgeId(pub u64);

/// An interned node or edge kind, assigned per organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct KindId(pub u32);

/// The 8-byte prefix of every record key of one organization.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OrgTag(pub(crate) [u8; 8]);

impl std::fmt::Debug for OrgTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OrgTag({})", hex::encode(self.0))
    }
}

/// A point in time: milliseconds since the Unix epoch (UTC), as chosen by the host.
pub type Timestamp = i64;

/// Which edges of a node to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum Direction {
    /// Edges leaving the node.
    Out,
    /// Edges arriving at the node.
    In,
    /// Both.
    Both,
}

/// A compartment: properties of different sensitivity are sealed under different subkeys and
/// stored in different records.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum Compartment {
    /// Structure: kinds, times, adjacency and structural properties.
    Core,
    /// Annotations and classifications added by the host.
    Labels,
    /// Values copied from the source system.
    Raw,
    /// The org's sealed secrets ([`Org::secrets`](crate::Org::secrets)): connector tokens and
    /// API keys. Not a property compartment: a scope, so that only handles whose scope includes
    /// it hold the secrets key.
    Secrets,
}

impl Compartment {
    /// The property compartments, in storage order.
    pub const ALL: [Compartment; 3] = [Compartment::Core, Compartment::Labels, Compartment::Raw];

    /// Every compartment a handle can hold a key for: the property compartments and `Secrets`
    /// (the scope of [`Db::org`](crate::Db::org)).
    pub const FULL_SCOPE: [Compartment; 4] =
        [Compartment::Core, Compartment::Labels, Compartment::Raw, Compartment::Secrets];

    pub(crate) fn index(self) -> u8 {
        match self {
            Compartment::Core => 0,
            Compartment::Labels => 1,
            Compartment::Raw => 2,
            Compartment::Secrets => 3,
        }
    }

    /// `InvalidInput` for `Secrets`, which holds no properties.
    pub(crate) fn check_property(self) -> crate::Result<()> {
        if self == Compartment::Secrets {
            return Err(crate::Error::invalid(
                crate::error::InputKind::InvalidScope,
                "the Secrets compartment holds org secrets (Org::secrets), not properties",
            ));
        }
        Ok(())
    }
}

/// A property value. Keep them small: large blobs belong in the source system.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Value {
    /// No value.
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    I64(i64),
    /// A float.
    F64(f64),
    /// A UTF-8 string.
    Str(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// A timestamp (milliseconds since the Unix epoch).
    Timestamp(Timestamp),
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::I64(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::F64(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Bytes(v)
    }
}

/// Where a node or edge came from: the source system and its identifier there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SourceRef {
    /// The source system, e.g. `"gmail"`.
    pub system: String,
    /// The identifier in that system, e.g. a message id.
    pub external_id: String,
}

impl SourceRef {
    /// A source reference.
    pub fn new(system: impl Into<String>, external_id: impl Into<String>) -> Self {
        SourceRef { system: system.into(), external_id: external_id.into() }
    }
}

impl std::str::FromStr for Compartment {
    type Err = crate::Error;

    /// Parses `core`, `labels` or `raw` (any case); anything else is `InvalidInput`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "core" => Ok(Compartment::Core),
            "labels" => Ok(Compartment::Labels),
            "raw" => Ok(Compartment::Raw),
            "secrets" => Ok(Compartment::Secrets),
            other => Err(crate::Error::invalid(
                crate::error::InputKind::UnknownName,
                format!("unknown compartment `{other}` (core, labels, raw, secrets)"),
            )),
        }
    }
}
