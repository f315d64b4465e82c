//! Where something sits in the organization tree: [`OrgId`] names one organization, [`OrgPath`]
//! is the chain of ids from the root down to it. The permission decision compares paths, so it
//! needs no tree lookup: whoever asks (the operations layer, the store) resolves the paths of the
//! actor and of the resource first, from the organization records.
//!
//! A path is bounded by [`MAX_ORG_DEPTH`]: the root is depth 1, its children depth 2, and so on.

use serde::{Deserialize, Serialize};
use std::fmt;
use thiserror::Error;

/// Deepest organization the tree may hold, the root counting as 1 (Blynk allows 4).
pub const MAX_ORG_DEPTH: usize = 8;

/// One organization's id. The root organization is created first and has [`OrgId::ROOT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OrgId(pub u32);

impl OrgId {
    pub const ROOT: OrgId = OrgId(1);
}

impl fmt::Display for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "org {}", self.0)
    }
}

/// The ids from the root down to an organization, the organization itself last.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<OrgId>", into = "Vec<OrgId>")]
pub struct OrgPath(Vec<OrgId>);

/// Why a list of ids is not a path.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OrgPathError {
    #[error("an organization path cannot be empty")]
    Empty,
    #[error("an organization path is at most {MAX_ORG_DEPTH} deep, not {0}")]
    TooDeep(usize),
    #[error("{0} appears twice in one organization path")]
    Repeated(OrgId),
}

/// How one organization stands to another (the actor's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// The same organization.
    Same,
    /// Somewhere in the subtree below it.
    Below,
    /// Above it, beside it, or in another tree: never visible.
    Outside,
}

impl OrgPath {
    /// The root organization's path.
    pub fn root() -> OrgPath {
        OrgPath(vec![OrgId::ROOT])
    }

    /// A path from its ids, root first.
    pub fn new(ids: Vec<OrgId>) -> Result<OrgPath, OrgPathError> {
        if ids.is_empty() {
            return Err(OrgPathError::Empty);
        }
        if ids.len() > MAX_ORG_DEPTH {
            return Err(OrgPathError::TooDeep(ids.len()));
        }
        for (i, id) in ids.iter().enumerate() {
            if ids[..i].contains(id) {
                return Err(OrgPathError::Repeated(*id));
            }
        }
        Ok(OrgPath(ids))
    }

    /// The path of a new child of this organization.
    pub fn child(&self, id: OrgId) -> Result<OrgPath, OrgPathError> {
        let mut ids = self.0.clone();
        ids.push(id);
        OrgPath::new(ids)
    }

    /// The organization this path leads to.
    pub fn org(&self) -> OrgId {
        // A path is never empty (checked on construction and deserialization).
        self.0[self.0.len() - 1]
    }

    pub fn depth(&self) -> usize {
        self.0.len()
    }

    pub fn ids(&self) -> &[OrgId] {
        &self.0
    }

    /// Where `other` stands relative to this organization.
    pub fn relation_of(&self, other: &OrgPath) -> Relation {
        if !other.0.starts_with(&self.0) {
            Relation::Outside
        } else if other.0.len() == self.0.len() {
            Relation::Same
        } else {
            Relation::Below
        }
    }
}

impl TryFrom<Vec<OrgId>> for OrgPath {
    type Error = OrgPathError;

    fn try_from(ids: Vec<OrgId>) -> Result<Self, Self::Error> {
        OrgPath::new(ids)
    }
}

impl From<OrgPath> for Vec<OrgId> {
    fn from(path: OrgPath) -> Self {
        path.0
    }
}
