//! Delivering a message to a webhook: one HTTPS (or HTTP) POST of the message's JSON, no redirects followed, no proxy, bounded in time.

use super::{DeliveryError, tls_roots};
use crate::delivery::message::Message;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Characters of a refusing receiver's answer repeated in the error.
const ANSWER_SHOWN: usize = 100;

pub async fn post(
    url: &str,
    headers: &[(String, String)],
    ca_pem: Option<&str>,
    message: &Message,
) -> Result<(), DeliveryError> {
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| DeliveryError::Setup(format!("TLS: {e}")))?
    .with_root_certificates(tls_roots(ca_pem)?)
    .with_no_client_auth();
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        // A receiver that redirects could point the controller anywhere.
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("nasfleet/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| DeliveryError::Setup(format!("HTTP client: {e}")))?;
    let body = serde_json::to_vec(&message.json)
        .map_err(|e| DeliveryError::Setup(format!("encoding the message: {e}")))?;
    let mut request = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    // The error names the host, never the URL: its path may be the secret.
    let answer = request
        .send()
        .await
        .map_err(|e| DeliveryError::Failed(format!("{}: {}", host_of(url), without_url(&e))))?;
    let status = answer.status();
    if status.is_success() {
        return Ok(());
    }
    let text = answer.text().await.unwrap_or_default();
    let shown: String = text.chars().take(ANSWER_SHOWN).collect();
    Err(DeliveryError::Failed(format!(
        "{} answered {status}{}",
        host_of(url),
        if shown.trim().is_empty() {
            String::new()
        } else {
            format!(": {}", shown.trim())
        }
    )))
}

/// `scheme://host[:port]` of a URL, which is safe to show.
pub fn host_of(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("?");
            match u.port() {
                Some(port) => format!("{}://{host}:{port}", u.scheme()),
                None => format!("{}://{host}", u.scheme()),
            }
        }
        Err(_) => "webhook".into(),
    }
}

/// reqwest's error with the URL taken out.
fn without_url(error: &reqwest::Error) -> String {
    let mut chain = Vec::new();
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(e) = source {
        chain.push(e.to_string());
        source = e.source();
    }
    let reason = chain.last().cloned().unwrap_or_default();
    if error.is_timeout() {
        format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())
    } else if error.is_connect() {
        format!("cannot connect: {reason}")
    } else {
        reason
    }
}
