//! The durable results writer: finished rows appended and synced in groups,
//! each counted only once it is on disk; a resumed row's history carried on.

use super::control::Control;
use super::NAP;
use crate::input::RawRow;
use crate::results::journal::Journal;
use crate::results::output::{Outcome, ResultsWriter};
use crate::results::tally::Tally;
use anyhow::Context as _;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

/// One finished row on its way to the results file.
pub(super) struct Finished {
    pub(super) raw: RawRow,
    /// v2: the cancellation id, for the results file.
    pub(super) cancel_id: Option<String>,
    pub(super) valid: bool,
    pub(super) outcome: Outcome,
}

/// Appends finished rows and syncs them in groups (one fsync covers every
/// row that finished meanwhile), counting a row only once it is on disk. A
/// row an earlier run left unfinished carries that run's outcome on in its
/// new line (see [`Outcome::after`]).
pub(super) fn write_results(
    writer: &mut ResultsWriter<std::fs::File>,
    unfinished: &mut HashMap<u64, (Outcome, Option<String>)>,
    finished: crossbeam_channel::Receiver<Finished>,
    tally: &Mutex<Tally>,
    control: &Control,
    on_commit: &dyn Fn(&Tally),
) -> anyhow::Result<()> {
    const GROUP: usize = 512;
    let mut pending = Vec::with_capacity(GROUP);
    loop {
        let first = match finished.recv_timeout(NAP) {
            Ok(f) => f,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                if control.hard.load(Ordering::SeqCst) {
                    writer.flush()?;
                    writer.get_ref().sync_data()?;
                    std::process::exit(crate::exit::Exit::Interrupted as i32);
                }
                continue;
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        };
        // Everything that finished meanwhile joins this group.
        for f in std::iter::once(first).chain(std::iter::from_fn(|| finished.try_recv().ok())).take(GROUP) {
            pending.push(f.outcome.category);
            let outcome = match unfinished.remove(&f.raw.row) {
                Some((earlier, _)) => f.outcome.after(&earlier),
                None => f.outcome,
            };
            writer
                .write_live(&f.raw, f.valid, f.cancel_id.as_deref(), &outcome)
                .context("cannot write the results file")?;
        }
        writer.flush().context("cannot write the results file")?;
        writer.get_ref().sync_data().context("cannot sync the results file")?;
        let mut t = tally.lock().expect("tally lock");
        for c in pending.drain(..) {
            t.add(c);
        }
        on_commit(&t);
    }
    Ok(())
}

/// Where a live run writes: the results file (new, or resumed with the rows
/// already final in it), what it already holds, and the ids journal.
pub struct Target {
    pub writer: ResultsWriter<std::fs::File>,
    /// `done[row - 1]`: the row has a final line already (empty: none).
    pub done: Vec<bool>,
    /// Categories of the final lines already in the file.
    pub prior: Tally,
    /// Rows an earlier run left unfinished: their outcome and id so far.
    pub unfinished: HashMap<u64, (Outcome, Option<String>)>,
    /// APIs whose operations have their own ids (v2): every row's id is
    /// recorded here, and synced, before its first request leaves.
    pub journal: Option<Journal>,
}
