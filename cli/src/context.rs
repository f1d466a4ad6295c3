//! What every command group's `run` is given: the global flags, and the connection to the controller, opened only when the group asks for it (after its pre-check).

use crate::credentials::Credentials;
use crate::failure::invalid_input;
use crate::output::OutputFormat;
use std::cell::OnceCell;
use std::path::PathBuf;
use tonic::transport::Channel;

/// The global flags and the way to the controller for one command.
pub struct Context {
    /// `--config`: the CLI credentials file, if given.
    config: Option<PathBuf>,
    /// `-o table|json`.
    pub output: OutputFormat,
    /// The credentials of the connection once one is open. Kept because a
    /// certificate the controller refuses may only show as a failed call
    /// later (TLS 1.3), and [`Context::explain`] needs them to tell.
    connected: OnceCell<Credentials>,
}

impl Context {
    pub fn new(config: Option<PathBuf>, output: OutputFormat) -> Context {
        Context {
            config,
            output,
            connected: OnceCell::new(),
        }
    }

    /// `--config` as given, for `login`, which writes the file instead of reading it.
    pub fn config_flag(&self) -> Option<PathBuf> {
        self.config.clone()
    }

    /// Reads the credentials and opens an authenticated channel. Groups call
    /// it after their pre-check, so a mistyped flag fails the same way on
    /// every machine, with or without credentials.
    pub async fn connect(&self) -> anyhow::Result<Channel> {
        let credentials = Credentials::load(self.config.as_deref()).await?;
        match credentials.connect().await {
            Ok(channel) => {
                // A second connection would use the same credentials.
                let _ = self.connected.set(credentials);
                Ok(channel)
            }
            // Not even the first handshake worked: nothing to probe.
            Err(e) => Err(credentials.explain(e, false).await),
        }
    }

    /// [`Context::connect`] once the group's pre-check passed; what it
    /// refused fails as invalid input (exit status 2) without a connection.
    pub async fn connect_after(&self, precheck: anyhow::Result<()>) -> anyhow::Result<Channel> {
        precheck.map_err(invalid_input)?;
        self.connect().await
    }

    /// Explains a failed command when the cause is this client's
    /// certificate; any other error, and one before a connection was open,
    /// is returned as it is.
    pub async fn explain(&self, error: anyhow::Error) -> anyhow::Error {
        match self.connected.get() {
            Some(credentials) => credentials.explain(error, true).await,
            None => error,
        }
    }
}
