//! rsync tasks on this host: [`argv`] (the command lines built from TrueNAS's fields, pure), [`output`] (what rsync says: exit codes, progress, reasons, pure), [`checks`] (the checks that need the host) and [`runner`] (running rsync as the task's user in the task's directory).
//!
//! The rules of the fields alone are shared with the CLI in
//! [`nasfleet_common::rsync_rules`].

pub mod argv;
pub mod checks;
pub mod output;
pub mod runner;

pub use argv::{LOCAL_DIR, build_args, remote_location, remote_shell};
pub use checks::{
    RsyncCheckError, check_path_in_pools, lookup_account, open_task_dir, validate_on_host,
};
pub use output::{exit_code_name, failure_reason, is_success, parse_progress};
