//! How the CLI fails: the typed errors that decide its exit status, the status each failure gets, and the message printed for it.

use crate::output::ReaderGone;
use nasfleet_common::dial::DialError;
use std::error::Error as StdError;
use std::fmt;
use std::path::PathBuf;
use tonic::Code;

/// The exit statuses of `nasfleet`; [`EXIT_STATUS_HELP`] documents them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    Failure = 1,
    Invalid = 2,
    Unreachable = 3,
    CredentialsRefused = 4,
    PermissionDenied = 5,
    NotFound = 6,
    RunFailed = 7,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// The exit status table of `nasfleet --help`; README.md has the same table.
pub const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  success, also when the reader of the output goes away (`nasfleet ... | head`)
  1  any other failure
  2  invalid input: bad flags or values, refused by the CLI or the controller
  3  the controller cannot be reached (connection refused, timed out, lost)
  4  credentials refused: the controller does not accept this client's certificate (issued
     by another fleet's CA, not by this controller, or revoked because its user or system
     was removed), or this client does not trust the controller's certificate
  5  permission denied: the certificate is good but may not make this call (an agent's
     certificate, a role that may not do this)
  6  not found: no such system, task, run or connection
  7  the watched run failed, was skipped or missed (`run watch`, `... run --watch`)";

/// A refusal from the controller, or a failed call, as gRPC reported it.
/// Keeps the status so the exit status can follow its code.
#[derive(Debug)]
pub struct StatusError(pub tonic::Status);

impl fmt::Display for StatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:?})", self.0.message(), self.0.code())
    }
}

impl StdError for StatusError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.source()
    }
}

impl StatusError {
    /// True when the call failed on this side (no connection, connection
    /// lost): tonic made the status from a transport error, the controller
    /// never answered.
    fn is_local(&self) -> bool {
        self.0
            .source()
            .is_some_and(|s| s.downcast_ref::<tonic::transport::Error>().is_some())
    }
}

/// Input the CLI refused before asking the controller.
#[derive(Debug)]
pub struct InvalidInput(pub anyhow::Error);

impl fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl StdError for InvalidInput {}

/// Marks what a command group's pre-check refused as [`InvalidInput`].
pub fn invalid_input(error: anyhow::Error) -> anyhow::Error {
    anyhow::Error::new(InvalidInput(error))
}

/// A watched run that ended without success: `Run 12 FAILED: reason`.
#[derive(Debug)]
pub struct RunFailed {
    pub id: u64,
    pub state: &'static str,
    pub reason: String,
}

impl fmt::Display for RunFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason.trim() {
            "" => write!(
                f,
                "Run {} {} (the controller gave no reason)",
                self.id, self.state
            ),
            reason => write!(f, "Run {} {}: {reason}", self.id, self.state),
        }
    }
}

impl StdError for RunFailed {}

/// The controller ended the TLS handshake because of this client's certificate.
#[derive(Debug)]
pub struct CertificateRefused {
    /// The TLS alert the controller sent, e.g. `UnknownCA`.
    pub alert: String,
    /// The CLI config in use and where its path came from.
    pub config: PathBuf,
    pub config_origin: &'static str,
    pub cert: PathBuf,
    /// Of the CA the config trusts, which is the controller's (its
    /// certificate passed the check against it).
    pub ca_fingerprint: Option<String>,
}

impl fmt::Display for CertificateRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the controller refused this client's certificate (TLS alert {}). Check the config file in use, {} ({}): its certificate {} must be one this controller issued",
            self.alert,
            self.config.display(),
            self.config_origin,
            self.cert.display(),
        )?;
        if let Some(fingerprint) = &self.ca_fingerprint {
            write!(f, " (its CA fingerprint is {fingerprint})")?;
        }
        write!(
            f,
            "; is NASFLEET_CONFIG or --config pointing at another fleet's credentials? Was this user or system removed from the fleet?"
        )
    }
}

impl StdError for CertificateRefused {}

/// The exit status for `error`; see [`EXIT_STATUS_HELP`].
pub fn exit_for(error: &anyhow::Error) -> Exit {
    let mut status = None;
    for cause in error.chain() {
        if cause.is::<ReaderGone>() {
            return Exit::Success;
        }
        if cause.is::<RunFailed>() {
            return Exit::RunFailed;
        }
        if cause.is::<InvalidInput>() {
            return Exit::Invalid;
        }
        if cause.is::<CertificateRefused>() || tls_refusal(cause).is_some() {
            return Exit::CredentialsRefused;
        }
        if status.is_none() {
            status = cause.downcast_ref::<StatusError>();
        }
    }
    if let Some(status) = status {
        return match status.0.code() {
            _ if status.is_local() => Exit::Unreachable,
            Code::Unavailable => Exit::Unreachable,
            Code::Unauthenticated => Exit::CredentialsRefused,
            Code::PermissionDenied => Exit::PermissionDenied,
            Code::InvalidArgument | Code::OutOfRange => Exit::Invalid,
            Code::NotFound => Exit::NotFound,
            _ => Exit::Failure,
        };
    }
    if error
        .chain()
        .any(|c| matches!(c.downcast_ref(), Some(DialError::Connect { .. })))
    {
        return Exit::Unreachable;
    }
    Exit::Failure
}

/// The TLS alert in `cause` if it says the peer refused our certificate,
/// or that we refused the peer's (`InvalidCertificate`): either way the
/// credentials do not fit this controller.
pub fn tls_refusal(cause: &(dyn StdError + 'static)) -> Option<String> {
    let tls = cause.downcast_ref::<rustls::Error>().or_else(|| {
        cause
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    })?;
    use rustls::AlertDescription as A;
    match tls {
        rustls::Error::AlertReceived(
            alert @ (A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::UnknownCA
            | A::AccessDenied
            | A::CertificateRequired),
        ) => Some(format!("{alert:?}")),
        rustls::Error::InvalidCertificate(reason) => Some(format!("{reason:?}")),
        _ => None,
    }
}

/// The error chain as one line, `outer: cause: root`, leaving out a cause
/// whose text the line already holds (errors that print their source in
/// their own text would otherwise say it twice).
pub fn message(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: Code) -> anyhow::Error {
        anyhow::Error::new(StatusError(tonic::Status::new(code, "nope")))
    }

    #[test]
    fn controller_refusals_map_by_code() {
        assert_eq!(exit_for(&status(Code::NotFound)), Exit::NotFound);
        assert_eq!(exit_for(&status(Code::Unavailable)), Exit::Unreachable);
        assert_eq!(
            exit_for(&status(Code::Unauthenticated)),
            Exit::CredentialsRefused
        );
        assert_eq!(
            exit_for(&status(Code::PermissionDenied)),
            Exit::PermissionDenied
        );
        assert_eq!(exit_for(&status(Code::InvalidArgument)), Exit::Invalid);
        assert_eq!(exit_for(&status(Code::FailedPrecondition)), Exit::Failure);
        assert_eq!(exit_for(&status(Code::Internal)), Exit::Failure);
        // Context on top does not hide the code.
        let wrapped = status(Code::NotFound).context("watching run 3 broke off");
        assert_eq!(exit_for(&wrapped), Exit::NotFound);
    }

    #[test]
    fn typed_failures_map_to_their_status() {
        let run = anyhow::Error::new(RunFailed {
            id: 4,
            state: "FAILED",
            reason: "boom".into(),
        });
        assert_eq!(exit_for(&run), Exit::RunFailed);
        assert_eq!(run.to_string(), "Run 4 FAILED: boom");
        let invalid = anyhow::Error::new(InvalidInput(anyhow::anyhow!("cron: bad")));
        assert_eq!(exit_for(&invalid), Exit::Invalid);
        assert_eq!(
            exit_for(&anyhow::Error::new(ReaderGone).context("listing")),
            Exit::Success
        );
        assert_eq!(exit_for(&anyhow::anyhow!("whatever")), Exit::Failure);
    }

    #[test]
    fn tls_alerts_about_certificates_are_refusals() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA),
        );
        assert_eq!(tls_refusal(&io).as_deref(), Some("UnknownCA"));
        assert_eq!(
            exit_for(&anyhow::Error::new(io).context("listing systems")),
            Exit::CredentialsRefused
        );
        let other = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::ProtocolVersion),
        );
        assert_eq!(tls_refusal(&other), None);
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(tls_refusal(&refused), None);
    }

    #[tokio::test]
    async fn unreachable_says_connection_refused_once() {
        use nasfleet_common::dial::{DialOptions, ServerTrust, dial};
        // A port that was just free on loopback: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let url = format!("https://127.0.0.1:{port}");
        let trust = ServerTrust::PinnedCaFingerprint("sha256:00".into());
        let error = anyhow::Error::new(
            dial(&url, &trust, None, &DialOptions::default())
                .await
                .unwrap_err(),
        );
        assert_eq!(exit_for(&error), Exit::Unreachable);
        let text = message(&error);
        assert!(
            text.starts_with(&format!("cannot reach the controller at {url}")),
            "{text}"
        );
        assert_eq!(text.matches("Connection refused").count(), 1, "{text}");
        assert_eq!(text.matches("transport error").count(), 1, "{text}");
    }

    #[test]
    fn message_joins_distinct_causes() {
        let plain = anyhow::anyhow!("run 9 does not exist").context("showing run 9");
        assert_eq!(message(&plain), "showing run 9: run 9 does not exist");
    }
}
