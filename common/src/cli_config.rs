//! The CLI's credentials file (`admin.toml`): written by `nasfleet-controller init`, read by `nasfleet`.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Where the controller is and which credentials prove who the caller is.
/// Relative paths are resolved against the directory of the file itself,
/// so a data dir can be moved as a whole.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CliConfig {
    /// `https://host:port` of the controller.
    pub controller: String,
    /// The fleet CA certificate (PEM) that signed the controller's certificate.
    pub ca: PathBuf,
    /// This user's client certificate (PEM).
    pub cert: PathBuf,
    /// This user's private key (PEM, mode 0600).
    pub key: PathBuf,
}
