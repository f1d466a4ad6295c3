//! The words of a notification: one alert raised or cleared (or a test), as a mail's subject and body and as a webhook's JSON with a Slack-compatible `text`.

use crate::engine::state::local_time;
use crate::store::AlertRecord;
use serde_json::json;

/// One message, ready for any channel.
#[derive(Debug, Clone)]
pub struct Message {
    pub subject: String,
    pub body: String,
    pub json: serde_json::Value,
}

/// Where the message says it comes from and where to look.
#[derive(Debug, Clone)]
pub struct Sender {
    pub controller_url: String,
    pub console_url: Option<String>,
    pub timezone: chrono_tz::Tz,
}

/// `event` is `raised`, `cleared` or `test`.
pub fn render(sender: &Sender, event: &str, alert: &AlertRecord) -> Message {
    let level = alert.level.to_uppercase();
    let headline = match event {
        "raised" => format!("{level} raised: {}", alert.object),
        "cleared" => format!("cleared: {}", alert.object),
        _ => format!("test: {}", alert.object),
    };
    let subject = format!("[nasfleet] {headline}");
    let when = |ms: i64| local_time(sender.timezone, ms);
    let mut body = format!("{headline}\n\n{}\n\n", alert.text);
    body.push_str(&format!(
        "Alert {} ({}, {})\n",
        alert.id, alert.kind, alert.level
    ));
    if !alert.systems.is_empty() {
        body.push_str(&format!("Systems: {}\n", alert.systems.join(", ")));
    }
    body.push_str(&format!("First seen: {}\n", when(alert.first_seen_unix_ms)));
    if let Some(cleared) = alert.cleared_unix_ms {
        body.push_str(&format!("Cleared: {}\n", when(cleared)));
    }
    body.push_str(&format!("Controller: {}\n", sender.controller_url));
    match &sender.console_url {
        Some(console) => body.push_str(&format!(
            "See `nasfleet alert list` or the console: {console}\n"
        )),
        None => body.push_str("See `nasfleet alert list`.\n"),
    }
    let text = format!("[nasfleet] {headline} — {}", alert.text);
    let json = json!({
        "text": text,
        "event": event,
        "controller": sender.controller_url,
        "alert": {
            "id": alert.id,
            "kind": alert.kind,
            "level": alert.level,
            "systems": alert.systems,
            "object": alert.object,
            "text": alert.text,
            "first_seen_unix_ms": alert.first_seen_unix_ms,
            "last_seen_unix_ms": alert.last_seen_unix_ms,
            "cleared_unix_ms": alert.cleared_unix_ms,
        },
    });
    Message {
        subject,
        body,
        json,
    }
}

/// The alert a test message is about.
pub fn test_alert(channel: &str, now_ms: i64) -> AlertRecord {
    AlertRecord {
        id: 0,
        key: format!("test:{channel}"),
        kind: "test".into(),
        level: "info".into(),
        systems: Vec::new(),
        object: format!("notification channel '{channel}'"),
        text: format!(
            "This is a test message from nasfleet. If you read it, notification channel '{channel}' works."
        ),
        first_seen_unix_ms: now_ms,
        last_seen_unix_ms: now_ms,
        cleared_unix_ms: None,
        dismissed_by: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_changed_and_where_to_look() {
        let sender = Sender {
            controller_url: "https://ctl:7443".into(),
            console_url: Some("https://ctl:7444".into()),
            timezone: chrono_tz::UTC,
        };
        let mut alert = test_alert("ops", 1_764_547_200_000);
        alert.kind = "system-offline".into();
        alert.level = "critical".into();
        alert.object = "system nas1".into();
        alert.text = "nas1 is OFFLINE".into();
        alert.systems = vec!["nas1".into()];
        let raised = render(&sender, "raised", &alert);
        assert_eq!(raised.subject, "[nasfleet] CRITICAL raised: system nas1");
        assert!(raised.body.contains("nas1 is OFFLINE"));
        assert!(raised.body.contains("https://ctl:7444"));
        assert_eq!(raised.json["event"], "raised");
        assert_eq!(raised.json["alert"]["kind"], "system-offline");
        assert!(
            raised.json["text"]
                .as_str()
                .is_some_and(|t| t.contains("nas1 is OFFLINE"))
        );
        alert.cleared_unix_ms = Some(1_764_547_260_000);
        let cleared = render(&sender, "cleared", &alert);
        assert_eq!(cleared.subject, "[nasfleet] cleared: system nas1");
        assert!(cleared.body.contains("Cleared: 2025-12-01 00:01:00"));
    }
}
