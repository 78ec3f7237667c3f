//! The results file: the durable journal of a run and everything that reads
//! it back. Its layouts ([`layout`]); its formula guard, writer and the
//! one line reader ([`output`]); counts per category ([`tally`]); what a file belongs to
//! ([`fingerprint`]); the ids sent, written ahead ([`journal`]); `--resume` ([`resume`]); summaries, `report` and its
//! workbooks ([`report`]).

pub mod fingerprint;
pub mod journal;
pub mod layout;
pub mod output;
pub mod report;
pub mod resume;
pub mod tally;
