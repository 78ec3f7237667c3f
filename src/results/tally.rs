//! Rows per category: what runs, `report` and `--resume` count. A leaf, so
//! every room above it can use it.

use crate::category::{Category, ALL};
use std::collections::BTreeMap;

/// Rows per category.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    counts: BTreeMap<Category, u64>,
}

impl Tally {
    pub fn add(&mut self, c: Category) {
        *self.counts.entry(c).or_default() += 1;
    }

    pub fn get(&self, c: Category) -> u64 {
        self.counts.get(&c).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Categories with rows, in summary order.
    pub fn nonzero(&self) -> impl Iterator<Item = (Category, u64)> + '_ {
        ALL.into_iter().map(|c| (c, self.get(c))).filter(|&(_, n)| n > 0)
    }

    /// True when every row is in `ok`.
    pub fn all_in(&self, ok: impl Fn(Category) -> bool) -> bool {
        self.counts.iter().all(|(&c, &n)| n == 0 || ok(c))
    }
}
