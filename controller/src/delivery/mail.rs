//! Delivering a message by mail: SMTP to the channel's relay (plain on loopback, STARTTLS or TLS elsewhere), optionally authenticated, bounded in time.

use super::{DeliveryError, parse_ca};
use crate::delivery::message::Message;
use crate::store::{SmtpRelay, SmtpSecurity};
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use std::time::Duration;

/// Each SMTP command's answer is waited for this long at most.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);

fn tls_parameters(relay: &SmtpRelay) -> Result<TlsParameters, DeliveryError> {
    let mut builder = TlsParameters::builder(relay.host.to_owned());
    for der in parse_ca(relay.ca_pem.as_deref())? {
        let cert = Certificate::from_der(der.to_vec())
            .map_err(|e| DeliveryError::Setup(format!("CA certificate: {e}")))?;
        builder = builder.add_root_certificate(cert);
    }
    builder
        .build_rustls()
        .map_err(|e| DeliveryError::Setup(format!("TLS: {e}")))
}

pub async fn send(relay: &SmtpRelay, message: &Message) -> Result<(), DeliveryError> {
    let bad_address =
        |e: lettre::address::AddressError| DeliveryError::Setup(format!("mail address: {e}"));
    let mut mail = lettre::Message::builder()
        .from(relay.from.parse().map_err(bad_address)?)
        .subject(message.subject.clone())
        .header(ContentType::TEXT_PLAIN);
    for to in &relay.to {
        mail = mail.to(to.parse().map_err(bad_address)?);
    }
    let mail = mail
        .body(message.body.clone())
        .map_err(|e| DeliveryError::Setup(format!("building the mail: {e}")))?;
    let tls = match relay.security {
        SmtpSecurity::None => Tls::None,
        SmtpSecurity::Starttls => Tls::Required(tls_parameters(relay)?),
        SmtpSecurity::Tls => Tls::Wrapper(tls_parameters(relay)?),
    };
    let mut transport =
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(relay.host.as_str())
            .port(relay.port)
            .tls(tls)
            .timeout(Some(COMMAND_TIMEOUT));
    if let (Some(user), Some(password)) = (&relay.user, &relay.password) {
        transport = transport.credentials(Credentials::new(user.clone(), password.clone()));
    }
    transport.build().send(mail).await.map(|_| ()).map_err(|e| {
        DeliveryError::Failed(format!("SMTP {}:{}: {}", relay.host, relay.port, chain(&e)))
    })
}

fn chain(error: &dyn std::error::Error) -> String {
    let mut words = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        words.push_str(": ");
        words.push_str(&e.to_string());
        source = e.source();
    }
    words
}
