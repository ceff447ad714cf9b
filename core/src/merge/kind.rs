//! Which merge a job asks for, by name: PEFT's `combination_type` names plus `lorahub`. Job
//! specs carry this (a [`MergeKind`]) rather than a free string so that a misspelt method is
//! refused when the job is made, not when it runs; the knobs that go with it (density, SVD
//! rank, seed) stay on the job and become a [`MergeMethod`] only when it runs.
//!
//! A `MergeKind` is written as its name (`"ties"`, `"dare_linear"`, `"lorahub"`, ...), exactly
//! the string job specs held before the type existed, so run specs and adapter records already
//! in a store read back unchanged and a recipe still recognises its stored artifacts (it
//! compares specs as JSON).

use super::{MergeMethod, MergeOptions};
use crate::error::{CoreError, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A merge by name: the fixed-weight families of [`MergeMethod`] and LoraHub's weight search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MergeKind {
    /// PEFT's `cat`: the factors stacked (not the learned CAT, which is its own job).
    Cat,
    Linear,
    Svd,
    Ties,
    TiesSvd,
    DareLinear,
    DareLinearSvd,
    DareTies,
    DareTiesSvd,
    MagnitudePrune,
    MagnitudePruneSvd,
    /// LoraHub: weights searched gradient-free on a few examples, then a weighted sum.
    LoraHub,
}

impl MergeKind {
    pub const ALL: [MergeKind; 12] = [
        MergeKind::Cat,
        MergeKind::Linear,
        MergeKind::Svd,
        MergeKind::Ties,
        MergeKind::TiesSvd,
        MergeKind::DareLinear,
        MergeKind::DareLinearSvd,
        MergeKind::DareTies,
        MergeKind::DareTiesSvd,
        MergeKind::MagnitudePrune,
        MergeKind::MagnitudePruneSvd,
        MergeKind::LoraHub,
    ];

    /// The name specs store and the command line takes.
    pub fn name(self) -> &'static str {
        match self {
            MergeKind::Cat => "cat",
            MergeKind::Linear => "linear",
            MergeKind::Svd => "svd",
            MergeKind::Ties => "ties",
            MergeKind::TiesSvd => "ties_svd",
            MergeKind::DareLinear => "dare_linear",
            MergeKind::DareLinearSvd => "dare_linear_svd",
            MergeKind::DareTies => "dare_ties",
            MergeKind::DareTiesSvd => "dare_ties_svd",
            MergeKind::MagnitudePrune => "magnitude_prune",
            MergeKind::MagnitudePruneSvd => "magnitude_prune_svd",
            MergeKind::LoraHub => "lorahub",
        }
    }

    /// Whether it prunes, so needs a density (TIES, DARE, magnitude pruning).
    pub fn uses_density(self) -> bool {
        !matches!(
            self,
            MergeKind::Cat | MergeKind::Linear | MergeKind::Svd | MergeKind::LoraHub
        )
    }

    /// Whether it truncates an SVD, so takes a rank.
    pub fn uses_svd_rank(self) -> bool {
        self.name().ends_with("svd")
    }

    /// The fixed-weight merge this names, with its knobs; LoraHub is a search, not one.
    pub fn method(self, opts: &MergeOptions) -> Result<MergeMethod> {
        if self == MergeKind::LoraHub {
            return Err(CoreError::MergePrecondition {
                method: "lorahub".into(),
                reason: "it searches its weights: it is not a fixed-weight merge".into(),
            });
        }
        MergeMethod::from_name(self.name(), opts)
    }
}

impl fmt::Display for MergeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for MergeKind {
    type Err = CoreError;
    /// Accepts what [`MergeMethod::from_name`] accepts (surrounding spaces ignored), and
    /// `lorahub`.
    fn from_str(s: &str) -> Result<Self> {
        let name = s.trim();
        MergeKind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = MergeKind::ALL.iter().map(|k| k.name()).collect();
                CoreError::UnknownName {
                    kind: "merge method",
                    name: name.to_string(),
                    expected: format!("one of {}", names.join(", ")),
                }
            })
    }
}

/// Comparisons with the name, so tests and callers can write `kind == "ties"`.
impl PartialEq<&str> for MergeKind {
    fn eq(&self, other: &&str) -> bool {
        self.name() == *other
    }
}

impl PartialEq<str> for MergeKind {
    fn eq(&self, other: &str) -> bool {
        self.name() == other
    }
}

impl Serialize for MergeKind {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for MergeKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merge::METHOD_NAMES;

    #[test]
    fn every_peft_name_and_lorahub_round_trip() {
        for name in METHOD_NAMES.iter().chain(["lorahub"].iter()) {
            let kind: MergeKind = name.parse().unwrap();
            assert_eq!(kind.name(), *name);
            assert_eq!(kind.to_string(), *name);
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<MergeKind>(&json).unwrap(), kind);
        }
        assert_eq!(MergeKind::ALL.len(), METHOD_NAMES.len() + 1);
    }

    #[test]
    fn unknown_names_are_refused_with_the_list() {
        let err = "slerp".parse::<MergeKind>().unwrap_err().to_string();
        assert!(err.contains("slerp") && err.contains("dare_ties"), "{err}");
        assert!(serde_json::from_str::<MergeKind>("\"slerp\"").is_err());
        assert_eq!(" ties ".parse::<MergeKind>().unwrap(), MergeKind::Ties);
    }

    #[test]
    fn knobs_follow_the_family() {
        assert!(MergeKind::DareTies.uses_density() && !MergeKind::Linear.uses_density());
        assert!(MergeKind::TiesSvd.uses_svd_rank() && MergeKind::Svd.uses_svd_rank());
        assert!(!MergeKind::Ties.uses_svd_rank());
        assert!(MergeKind::LoraHub.method(&MergeOptions::default()).is_err());
        let linear = MergeKind::Linear.method(&MergeOptions::default()).unwrap();
        assert_eq!(linear.name(), "linear");
    }
}
