//! Which adjacency entries a walk keeps: a leaf module (it depends only on the entry type and
//! the public id and time types), shared by snapshots, the page cache and the traversals.

use crate::codec::AdjEntry;
use crate::error::{Error, InputKind, Result};
use crate::types::{KindId, Timestamp};

/// Which adjacency entries a walk keeps. The default keeps current (not retracted) edges of
/// every kind, valid at any time.
#[must_use = "a filter does nothing until passed to `neighbors_filtered`"]
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NeighborFilter {
    /// Keep only these kinds (`None`: all kinds).
    pub kinds: Option<Vec<KindId>>,
    /// Keep only edges valid at this time.
    pub valid_at: Option<Timestamp>,
    /// Keep only edges whose validity overlaps `[start, end)`.
    pub valid_between: Option<(Timestamp, Timestamp)>,
    /// See the store as it was at this record time: edges recorded after it are hidden, edges
    /// retracted after it are visible. `None`: the current state (retracted edges hidden).
    pub known_at: Option<Timestamp>,
}

impl NeighborFilter {
    /// Whether `e` passes the filter.
    pub(crate) fn accepts(&self, e: &AdjEntry) -> bool {
        if let Some(kinds) = &self.kinds {
            if !kinds.iter().any(|k| k.0 == e.kind) {
                return false;
            }
        }
        if let Some(t) = self.valid_at {
            if !(e.valid_from <= t && t < e.valid_to) {
                return false;
            }
        }
        if let Some((a, b)) = self.valid_between {
            if !(e.valid_from < b && a < e.valid_to) {
                return false;
            }
        }
        match self.known_at {
            Some(r) => e.recorded_at <= r && r < e.retracted_at,
            None => e.retracted_at == i64::MAX,
        }
    }

    /// Rejects contradictory filters (an empty or inverted time window).
    pub fn validate(&self) -> Result<()> {
        if let Some((a, b)) = self.valid_between {
            if a >= b {
                return Err(Error::invalid(InputKind::InvalidTimeRange, "valid_between needs start < end"));
            }
        }
        Ok(())
    }
}
