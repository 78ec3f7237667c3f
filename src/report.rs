//! Counting outcomes per category and turning them into a summary and an
//! exit status.

use crate::category::{Category, ALL};
use std::collections::BTreeMap;
use std::fmt::Write as _;

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

    /// A table: category, rows, what to do next.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{:<20} {:>9}  next step", "category", "rows");
        for (c, n) in self.nonzero() {
            let _ = writeln!(s, "{:<20} {:>9}  {}", c.as_str(), n, c.advice());
        }
        let _ = write!(s, "{:<20} {:>9}", "total", self.total());
        s
    }
}
