//! What a results file belongs to (`OUTPUT.run.json`): the input's hash and
//! the run's settings. A leaf: `--resume` writes and checks it, `report`
//! reads it.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What a results file belongs to; written before the first request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub input_sha256: String,
    pub rows: u64,
    pub appid: String,
    pub offer_id: String,
    /// `production`, `sandbox` or `rehearsal`.
    pub environment: String,
    /// The default pf of rows without a pf column.
    #[serde(default)]
    pub pf: String,
    /// `v1` or `v2`.
    #[serde(default)]
    pub api: String,
    /// The column mapping, as `FIELD=HEADER` in the order given.
    #[serde(default)]
    pub columns: Vec<String>,
    /// v2's `--cancel-tag`: another tag derives other cancellation ids.
    #[serde(default)]
    pub cancel_tag: String,
    /// The sheet read, when the input is a workbook: another sheet of the
    /// same workbook is other rows.
    #[serde(default)]
    pub sheet: String,
}

/// `OUTPUT.run.json`, beside the results file.
pub fn fingerprint_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".run.json");
    PathBuf::from(name)
}

/// The fingerprint beside `output`, when there is a readable one.
pub fn load(output: &Path) -> Option<Fingerprint> {
    let text = std::fs::read_to_string(fingerprint_path(output)).ok()?;
    serde_json::from_str(&text).ok()
}
