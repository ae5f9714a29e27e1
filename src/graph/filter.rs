//! The edge filter shared by traversals and path searches: kind names, valid time, record time.

use crate::error::Result;
use crate::store::{NeighborFilter, ReadTxn};
use crate::types::{KindId, Timestamp};

/// Filter options as the caller gives them (kind names, not ids).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FilterSpec {
    pub kinds: Option<Vec<String>>,
    pub valid_at: Option<Timestamp>,
    pub valid_between: Option<(Timestamp, Timestamp)>,
    pub known_at: Option<Timestamp>,
}

impl FilterSpec {
    /// Resolves kind names to ids in `txn`'s org and validates the time window. A kind name the
    /// org has never used matches nothing (it is not an error: the org may simply have no such
    /// edges yet).
    pub(crate) fn resolve(&self, txn: &ReadTxn) -> Result<NeighborFilter> {
        let kinds = match &self.kinds {
            None => None,
            Some(names) => {
                let mut ids: Vec<KindId> = Vec::with_capacity(names.len());
                for n in names {
                    if let Some(id) = txn.kind_id(n)? {
                        ids.push(id);
                    }
                }
                Some(ids)
            }
        };
        let filter = NeighborFilter {
            kinds,
            valid_at: self.valid_at,
            valid_between: self.valid_between,
            known_at: self.known_at,
        };
        filter.validate()?;
        Ok(filter)
    }
}

/// Builder methods for the filter options, shared by [`Traversal`](super::Traversal) and
/// [`PathOptions`](super::PathOptions).
macro_rules! filter_methods {
    () => {
        /// Follows only edges of these kinds (by name). A name the org has never used matches
        /// nothing; an empty list matches nothing.
        pub fn kinds<I, S>(mut self, kinds: I) -> Self
        where
            I: IntoIterator<Item = S>,
            S: AsRef<str>,
        {
            self.spec.kinds = Some(kinds.into_iter().map(|s| s.as_ref().to_owned()).collect());
            self
        }

        /// Follows only edges valid at `t` (`valid_from <= t < valid_to`).
        pub fn valid_at(mut self, t: $crate::types::Timestamp) -> Self {
            self.spec.valid_at = Some(t);
            self
        }

        /// Follows only edges whose validity overlaps `[start, end)`. `start >= end` makes the
        /// query fail with `Error::InvalidInput`.
        pub fn valid_between(mut self, start: $crate::types::Timestamp, end: $crate::types::Timestamp) -> Self {
            self.spec.valid_between = Some((start, end));
            self
        }

        /// Sees the graph as the store knew it at record time `r`: edges recorded after `r` are
        /// invisible, edges retracted after `r` are visible. Without it, retracted edges are
        /// invisible.
        pub fn known_at(mut self, r: $crate::types::Timestamp) -> Self {
            self.spec.known_at = Some(r);
            self
        }
    };
}

pub(crate) use filter_methods;
