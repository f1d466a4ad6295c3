//! The command lines an administrator hands on: the one that enrolls a NAS with a join token and the one a person logs in with, printed alike by the CLI and the web console.

/// The line an administrator pastes on the NAS. `<NAME>` is left for them to fill in.
pub fn join_command(controller: &str, token: &str, fingerprint: &str) -> String {
    format!(
        "nasfleet-agent join --controller {controller} --token {token} --ca-fingerprint {fingerprint} --name <NAME> --state-dir /var/lib/nasfleet-agent"
    )
}

/// The line a new user runs on their own machine.
pub fn login_command(controller: &str, token: &str, fingerprint: &str) -> String {
    format!(
        "nasfleet login --controller {controller} --token {token} --ca-fingerprint {fingerprint}"
    )
}
