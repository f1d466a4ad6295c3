//! Notification channels: the rules a channel must follow, adding, listing and removing channels, queueing one message per alert state change for every channel that wants it, and recording how each delivery went (retry with backoff, give up after a day).

use crate::engine::access::{Access, Actor};
use crate::engine::alerts::{AlertChanges, Level};
use crate::engine::error::FleetError;
use crate::engine::state::SharedState;
use crate::store::{
    AlertRecord, ChannelRecord, ChannelTarget, OutboxEntry, SmtpRelay, SmtpSecurity, Write,
};
use lettre::message::Mailbox;
use nasfleet_common::echo::echo;
use nasfleet_common::names::validate_channel_name;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A message not delivered within this is given up on.
pub const MESSAGE_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// The first retry waits this long; each later one twice as long as the one before.
const FIRST_RETRY: Duration = Duration::from_secs(10);
/// Retries wait at most this long.
const LONGEST_RETRY: Duration = Duration::from_secs(15 * 60);

const MAX_URL: usize = 2048;
const MAX_HEADERS: usize = 20;
const MAX_HEADER_VALUE: usize = 4096;
const MAX_RECIPIENTS: usize = 20;
const MAX_CA_PEM: usize = 64 * 1024;
const MAX_SECRET: usize = 1024;

/// A channel as a person asked for it, before its rules are checked.
#[derive(Debug, Clone, Default)]
pub struct ChannelSpec {
    pub name: String,
    /// Empty is `warning`.
    pub min_level: String,
    pub webhook: Option<WebhookSpec>,
    pub smtp: Option<SmtpSpec>,
}

#[derive(Debug, Clone, Default)]
pub struct WebhookSpec {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub ca_pem: String,
}

#[derive(Debug, Clone, Default)]
pub struct SmtpSpec {
    /// `HOST:PORT`.
    pub address: String,
    /// `none`, `starttls` or `tls`; empty is `none`.
    pub security: String,
    pub from: String,
    pub to: Vec<String>,
    pub user: String,
    pub password: String,
    pub ca_pem: String,
}

fn invalid(field: &str, rule: impl Into<String>) -> FleetError {
    FleetError::Invalid {
        field: field.into(),
        rule: rule.into(),
    }
}

impl Level {
    /// `info`, `warning` or `critical`.
    pub fn parse(word: &str) -> Option<Level> {
        match word {
            "info" => Some(Level::Info),
            "warning" => Some(Level::Warning),
            "critical" => Some(Level::Critical),
            _ => None,
        }
    }
}

fn check_level(word: &str) -> Result<String, FleetError> {
    match word {
        "" => Ok(Level::Warning.as_str().to_owned()),
        word => Level::parse(word)
            .map(|level| level.as_str().to_owned())
            .ok_or_else(|| {
                invalid(
                    "min_level",
                    format!("'{}' is not one of info, warning, critical", echo(word)),
                )
            }),
    }
}

fn check_ca(field: &str, pem: &str) -> Result<Option<String>, FleetError> {
    if pem.is_empty() {
        return Ok(None);
    }
    if pem.len() > MAX_CA_PEM {
        return Err(invalid(field, format!("is longer than {MAX_CA_PEM} bytes")));
    }
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(field, format!("is not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(field, "holds no PEM certificate"));
    }
    Ok(Some(pem.to_owned()))
}

fn check_webhook(spec: &WebhookSpec) -> Result<ChannelTarget, FleetError> {
    if spec.url.len() > MAX_URL {
        return Err(invalid(
            "webhook",
            format!("is longer than {MAX_URL} characters"),
        ));
    }
    let url = reqwest::Url::parse(&spec.url).map_err(|e| {
        invalid(
            "webhook",
            format!("'{}' is not a URL: {e}", echo(&spec.url)),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(
            "webhook",
            format!(
                "'{}' must be an http:// or https:// URL with a host",
                echo(&spec.url)
            ),
        ));
    }
    if spec.headers.len() > MAX_HEADERS {
        return Err(invalid("header", format!("at most {MAX_HEADERS} headers")));
    }
    let mut seen = BTreeSet::new();
    for (name, value) in &spec.headers {
        let header = reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            invalid(
                "header",
                format!("'{}' is not a valid HTTP header name", echo(name)),
            )
        })?;
        if matches!(
            header.as_str(),
            "content-type" | "content-length" | "host" | "transfer-encoding" | "connection"
        ) {
            return Err(invalid(
                "header",
                format!("'{}' is set by nasfleet itself", echo(name)),
            ));
        }
        if !seen.insert(header.as_str().to_owned()) {
            return Err(invalid(
                "header",
                format!("'{}' is given twice", echo(name)),
            ));
        }
        // The value is a secret: the rule never repeats it.
        if value.len() > MAX_HEADER_VALUE || reqwest::header::HeaderValue::from_str(value).is_err()
        {
            return Err(invalid(
                "header",
                format!(
                    "the value of '{}' must be at most {MAX_HEADER_VALUE} visible ASCII characters",
                    echo(name)
                ),
            ));
        }
    }
    Ok(ChannelTarget::Webhook {
        url: spec.url.clone(),
        headers: spec.headers.clone(),
        ca_pem: check_ca("ca", &spec.ca_pem)?,
    })
}

/// `HOST:PORT` (a bracketed IPv6 address is a host too).
fn check_smtp_address(address: &str) -> Result<(String, u16), FleetError> {
    let refuse = || {
        invalid(
            "smtp",
            format!(
                "'{}' must be HOST:PORT, e.g. mail.example.com:587",
                echo(address)
            ),
        )
    };
    let (host, port) = address.rsplit_once(':').ok_or_else(refuse)?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(refuse)?;
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    let host_ok = match bare {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host.len() <= 253
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
        }
    };
    if !host_ok {
        return Err(refuse());
    }
    Ok((bare.unwrap_or(host).to_owned(), port))
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn check_mailbox(field: &str, value: &str) -> Result<String, FleetError> {
    value.parse::<Mailbox>().map_err(|_| {
        invalid(
            field,
            format!(
                "'{}' is not a mail address (name@example.com or \"Name <name@example.com>\")",
                echo(value)
            ),
        )
    })?;
    Ok(value.to_owned())
}

fn check_smtp(spec: &SmtpSpec) -> Result<ChannelTarget, FleetError> {
    let (host, port) = check_smtp_address(&spec.address)?;
    let security = match spec.security.as_str() {
        "" | "none" => SmtpSecurity::None,
        "starttls" => SmtpSecurity::Starttls,
        "tls" => SmtpSecurity::Tls,
        other => {
            return Err(invalid(
                "security",
                format!("'{}' is not one of none, starttls, tls", echo(other)),
            ));
        }
    };
    let from = check_mailbox("from", &spec.from)?;
    if spec.to.is_empty() || spec.to.len() > MAX_RECIPIENTS {
        return Err(invalid(
            "to",
            format!("give between 1 and {MAX_RECIPIENTS} recipients"),
        ));
    }
    let to = spec
        .to
        .iter()
        .map(|t| check_mailbox("to", t))
        .collect::<Result<Vec<_>, _>>()?;
    let (user, password) = match (spec.user.as_str(), spec.password.as_str()) {
        ("", "") => (None, None),
        ("", _) | (_, "") => {
            return Err(invalid("user", "a user and a password go together"));
        }
        (user, password) => {
            if user.len() > 256 || user.chars().any(char::is_control) {
                return Err(invalid(
                    "user",
                    format!(
                        "'{}' must be at most 256 characters, no control characters",
                        echo(user)
                    ),
                ));
            }
            if password.len() > MAX_SECRET {
                return Err(invalid(
                    "password",
                    format!("is longer than {MAX_SECRET} bytes"),
                ));
            }
            if security == SmtpSecurity::None && !is_loopback(&host) {
                return Err(invalid(
                    "password",
                    "would cross the network in clear: use --starttls or --tls",
                ));
            }
            (Some(user.to_owned()), Some(password.to_owned()))
        }
    };
    Ok(ChannelTarget::Smtp(SmtpRelay {
        host,
        port,
        security,
        from,
        to,
        user,
        password,
        ca_pem: check_ca("ca", &spec.ca_pem)?,
    }))
}

/// Checks every rule of a channel; nothing is stored.
pub fn check(spec: &ChannelSpec) -> Result<(ChannelTarget, String), FleetError> {
    validate_channel_name(&spec.name).map_err(|e| invalid("name", e.rule()))?;
    let min_level = check_level(&spec.min_level)?;
    let target = match (&spec.webhook, &spec.smtp) {
        (Some(webhook), None) => check_webhook(webhook)?,
        (None, Some(smtp)) => check_smtp(smtp)?,
        _ => {
            return Err(invalid(
                "channel",
                "give exactly one of --webhook URL or --smtp HOST:PORT",
            ));
        }
    };
    Ok((target, min_level))
}

/// Adds a channel; a channel of that name must not exist.
pub async fn add(
    state: &SharedState,
    actor: &Actor,
    spec: ChannelSpec,
    now_ms: i64,
) -> Result<ChannelRecord, FleetError> {
    actor.require(Access::Administer)?;
    let (target, min_level) = check(&spec)?;
    let record = ChannelRecord::new(spec.name, target, min_level, actor.label(), now_ms);
    state
        .store
        .write(move |w| {
            if w.channel(&record.name)?.is_some() {
                return Ok(Err(FleetError::AlreadyExists(format!(
                    "notification channel '{}' exists already; remove it first to change it",
                    record.name
                ))));
            }
            w.put_channel(&record)?;
            Ok(Ok(record))
        })
        .await?
}

/// How many messages wait for each channel.
fn pending_by_channel(state: &SharedState) -> Result<BTreeMap<String, usize>, FleetError> {
    let mut pending = BTreeMap::new();
    for message in state.store.outbox()? {
        *pending.entry(message.channel).or_default() += 1;
    }
    Ok(pending)
}

/// Every channel, with how many messages wait for each.
pub fn list(state: &SharedState, actor: &Actor) -> Result<Vec<(ChannelRecord, usize)>, FleetError> {
    actor.require(Access::Administer)?;
    let pending = pending_by_channel(state)?;
    Ok(state
        .store
        .channels()?
        .into_iter()
        .map(|c| {
            let waiting = pending.get(&c.name).copied().unwrap_or(0);
            (c, waiting)
        })
        .collect())
}

fn missing(name: &str) -> FleetError {
    FleetError::NotFound(format!(
        "notification channel '{}' does not exist (see `nasfleet notify list`)",
        echo(name)
    ))
}

/// One channel, with how many messages wait for it.
pub fn get(
    state: &SharedState,
    actor: &Actor,
    name: &str,
) -> Result<(ChannelRecord, usize), FleetError> {
    actor.require(Access::Administer)?;
    let channel = state.store.channel(name)?.ok_or_else(|| missing(name))?;
    let pending = pending_by_channel(state)?.get(name).copied().unwrap_or(0);
    Ok((channel, pending))
}

/// Removes a channel and the messages waiting for it.
pub async fn remove(
    state: &SharedState,
    actor: &Actor,
    name: &str,
) -> Result<ChannelRecord, FleetError> {
    actor.require(Access::Administer)?;
    let name = name.to_owned();
    state
        .store
        .write(move |w| {
            let Some(channel) = w.channel(&name)? else {
                return Ok(Err(missing(&name)));
            };
            w.remove_channel(&name)?;
            Ok(Ok(channel))
        })
        .await?
}

fn wants(channel: &ChannelRecord, alert: &AlertRecord) -> bool {
    let at_least = Level::parse(&channel.min_level).unwrap_or(Level::Warning);
    Level::parse(&alert.level).is_some_and(|level| level >= at_least)
}

/// Queues one message per raised or cleared alert for every channel whose
/// minimum level the alert reaches; part of the write that changes the
/// alerts, so a message is queued exactly when its change is stored.
pub fn queue_changes(
    w: &Write<'_>,
    changes: &AlertChanges,
    now_ms: i64,
) -> Result<usize, crate::store::StoreError> {
    let channels = w.channels()?;
    if channels.is_empty() {
        return Ok(0);
    }
    let events = changes
        .cleared
        .iter()
        .map(|a| ("cleared", a))
        .chain(changes.raised.iter().map(|a| ("raised", a)));
    let mut messages = Vec::new();
    for (event, alert) in events {
        for channel in channels.iter().filter(|c| wants(c, alert)) {
            messages.push(OutboxEntry {
                id: 0,
                channel: channel.name.clone(),
                event: event.to_owned(),
                alert: alert.clone(),
                queued_unix_ms: now_ms,
                attempts: 0,
                next_attempt_unix_ms: now_ms,
            });
        }
    }
    let queued = messages.len();
    if queued > 0 {
        w.queue_messages(messages)?;
    }
    Ok(queued)
}

/// How long to wait after the `failures`-th failed attempt in a row.
pub fn retry_delay(failures: u32) -> Duration {
    let doubled = FIRST_RETRY.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    doubled.min(LONGEST_RETRY)
}

/// The messages to try now, per channel in the order they were queued: a
/// channel's messages go out in order, so none is due while an older one
/// of its channel waits for a retry. At most `per_channel` each.
pub fn due(
    outbox: Vec<OutboxEntry>,
    now_ms: i64,
    per_channel: usize,
) -> BTreeMap<String, Vec<OutboxEntry>> {
    let mut due: BTreeMap<String, Vec<OutboxEntry>> = BTreeMap::new();
    let mut waiting = BTreeSet::new();
    for message in outbox {
        if waiting.contains(&message.channel) {
            continue;
        }
        let queue = due.entry(message.channel.clone()).or_default();
        if queue.is_empty() && message.next_attempt_unix_ms > now_ms {
            waiting.insert(message.channel.clone());
        } else if queue.len() < per_channel {
            queue.push(message);
        }
    }
    due.retain(|_, queue| !queue.is_empty());
    due
}

/// Whether a message has waited too long to be worth sending.
pub fn expired(entry: &OutboxEntry, now_ms: i64) -> bool {
    now_ms - entry.queued_unix_ms > MESSAGE_LIFETIME.as_millis() as i64
}

/// Records on the channel how one attempt went (a test message too).
pub fn record_attempt(
    w: &Write<'_>,
    channel_name: &str,
    outcome: &Result<(), String>,
    now_ms: i64,
) -> Result<(), crate::store::StoreError> {
    let Some(mut channel) = w.channel(channel_name)? else {
        return Ok(());
    };
    let stats = &mut channel.delivery;
    match outcome {
        Ok(()) => {
            stats.delivered += 1;
            stats.last_success_unix_ms = now_ms;
            stats.failures_in_a_row = 0;
        }
        Err(error) => {
            stats.last_error = Some(error.clone());
            stats.last_error_unix_ms = now_ms;
            stats.failures_in_a_row = stats.failures_in_a_row.saturating_add(1);
        }
    }
    w.put_channel(&channel)
}

/// Settles a queued message after an attempt: delivered ones leave the
/// outbox, failed ones wait for their retry or, once too old, are dropped.
pub fn settle_message(
    w: &Write<'_>,
    entry: &OutboxEntry,
    outcome: &Result<(), String>,
    now_ms: i64,
) -> Result<(), crate::store::StoreError> {
    record_attempt(w, &entry.channel, outcome, now_ms)?;
    // Removed (with its channel) while it was being sent.
    if !w.message_queued(entry.id)? {
        return Ok(());
    }
    match outcome {
        Ok(()) => w.remove_message(entry.id),
        Err(error) if expired(entry, now_ms) => {
            tracing::error!(channel = %entry.channel, alert = entry.alert.id, error = %error,
                "giving up on a notification after a day of failed attempts");
            w.drop_message(entry)
        }
        Err(_) => {
            let mut retry = entry.clone();
            retry.attempts += 1;
            retry.next_attempt_unix_ms = now_ms + retry_delay(retry.attempts).as_millis() as i64;
            w.put_message(&retry)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook(url: &str, headers: &[(&str, &str)]) -> ChannelSpec {
        ChannelSpec {
            name: "ops".into(),
            webhook: Some(WebhookSpec {
                url: url.into(),
                headers: headers
                    .iter()
                    .map(|(k, v)| ((*k).into(), (*v).into()))
                    .collect(),
                ca_pem: String::new(),
            }),
            ..Default::default()
        }
    }

    fn smtp(address: &str, security: &str, user: &str, password: &str) -> ChannelSpec {
        ChannelSpec {
            name: "mail".into(),
            smtp: Some(SmtpSpec {
                address: address.into(),
                security: security.into(),
                from: "nasfleet@example.com".into(),
                to: vec!["Admin <admin@example.com>".into()],
                user: user.into(),
                password: password.into(),
                ca_pem: String::new(),
            }),
            ..Default::default()
        }
    }

    fn refusal(spec: &ChannelSpec) -> String {
        match check(spec) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{spec:?} was accepted"),
        }
    }

    #[test]
    fn webhooks_are_http_urls_with_sane_headers() {
        let (target, level) = check(&webhook(
            "https://hooks.example.com/T0/B0/secret",
            &[("Authorization", "Bearer abc")],
        ))
        .expect("a good webhook");
        assert_eq!(level, "warning");
        assert!(matches!(target, ChannelTarget::Webhook { .. }));
        assert!(refusal(&webhook("file:///etc/passwd", &[])).starts_with("webhook: "));
        assert!(refusal(&webhook("not a url", &[])).contains("is not a URL"));
        assert!(
            refusal(&webhook("https://x.example/", &[("Host", "y")])).contains("set by nasfleet")
        );
        assert!(
            refusal(&webhook("https://x.example/", &[("Bad Name", "y")])).starts_with("header: ")
        );
        let secret = "line\r\nInjected: yes";
        let refused = refusal(&webhook("https://x.example/", &[("X-Token", secret)]));
        assert!(
            !refused.contains("Injected"),
            "the rule repeats no secret: {refused}"
        );
    }

    #[test]
    fn mail_channels_need_addresses_and_keep_passwords_off_plain_networks() {
        let (target, _) = check(&smtp("mail.example.com:587", "starttls", "u", "p")).expect("good");
        let ChannelTarget::Smtp(relay) = target else {
            panic!("not smtp")
        };
        assert_eq!((relay.host.as_str(), relay.port), ("mail.example.com", 587));
        check(&smtp("127.0.0.1:2525", "", "u", "p")).expect("loopback relays may be plain");
        check(&smtp("[::1]:25", "tls", "", "")).expect("bracketed IPv6");
        assert!(refusal(&smtp("mail.example.com:587", "", "u", "p")).starts_with("password: "));
        assert!(refusal(&smtp("mail.example.com", "", "", "")).starts_with("smtp: "));
        assert!(refusal(&smtp("mail.example.com:0", "", "", "")).starts_with("smtp: "));
        assert!(refusal(&smtp("a b:25", "", "", "")).starts_with("smtp: "));
        assert!(refusal(&smtp("m.example:25", "ssl", "", "")).starts_with("security: "));
        assert!(refusal(&smtp("m.example:25", "", "u", "")).starts_with("user: "));
        let mut bad_to = smtp("m.example:25", "", "", "");
        if let Some(s) = bad_to.smtp.as_mut() {
            s.to = vec!["nobody".into()];
        }
        assert!(refusal(&bad_to).starts_with("to: "));
    }

    #[test]
    fn a_channel_has_exactly_one_target_and_a_known_level() {
        let mut both = webhook("https://x.example/", &[]);
        both.smtp = smtp("m.example:25", "", "", "").smtp;
        assert!(refusal(&both).starts_with("channel: "));
        let mut level = webhook("https://x.example/", &[]);
        level.min_level = "loud".into();
        assert!(refusal(&level).starts_with("min_level: "));
        let mut name = webhook("https://x.example/", &[]);
        name.name = "a/b".into();
        assert!(refusal(&name).starts_with("name: "));
    }

    #[test]
    fn retries_back_off_to_a_ceiling() {
        assert_eq!(retry_delay(1), Duration::from_secs(10));
        assert_eq!(retry_delay(2), Duration::from_secs(20));
        assert_eq!(retry_delay(4), Duration::from_secs(80));
        assert_eq!(retry_delay(40), LONGEST_RETRY);
    }

    fn entry(id: u64, channel: &str, next: i64) -> OutboxEntry {
        OutboxEntry {
            id,
            next_attempt_unix_ms: next,
            ..crate::store::sample_message(channel)
        }
    }

    #[test]
    fn each_channel_sends_in_order_and_waits_behind_a_retry() {
        let outbox = vec![
            entry(1, "mail", 500),
            entry(2, "hook", 0),
            entry(3, "mail", 0),
            entry(4, "hook", 0),
            entry(5, "hook", 0),
            entry(6, "chat", 0),
        ];
        let due = due(outbox, 100, 2);
        let ids = |channel: &str| -> Vec<u64> {
            due.get(channel)
                .map(|q| q.iter().map(|m| m.id).collect())
                .unwrap_or_default()
        };
        // mail's oldest waits for its retry; the newer one waits behind it.
        assert_eq!(ids("mail"), Vec::<u64>::new());
        assert_eq!(ids("hook"), vec![2, 4]);
        assert_eq!(ids("chat"), vec![6]);
    }

    #[test]
    fn channels_get_the_levels_they_ask_for() {
        let webhook = ChannelTarget::Webhook {
            url: "http://127.0.0.1/".into(),
            headers: vec![],
            ca_pem: None,
        };
        let mut channel =
            ChannelRecord::new("c".into(), webhook, "critical".into(), "admin".into(), 0);
        let warning = entry(1, "c", 0).alert;
        assert!(!wants(&channel, &warning));
        channel.min_level = "info".into();
        assert!(wants(&channel, &warning));
    }
}
