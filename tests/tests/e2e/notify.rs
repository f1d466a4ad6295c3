//! Notification channels end to end: a real SMTP server (aiosmtpd, plain and with STARTTLS) and a local webhook receiver get one message when a task's failure raises an alert and one when its recovery clears it; a refused webhook delivery is retried; a channel that keeps failing raises its own alert; secrets never come back out of the controller.

use super::alerts::{
    ALERT_TIMEOUT, alerts, create_rsync_task, id_of, run_rsync_task, wait_cleared, wait_raised,
};
use super::common::*;
use anyhow::{Context, Result, ensure};
use nasfleet_tests::receivers::{TestSmtpd, TestWebhook};
use nasfleet_tests::{
    Agent, Controller, TestDir, TestPool, TestRsyncd, ensure_zfs, wait_for_status,
};
use serde_json::Value;
use std::time::Duration;

/// A refused delivery is retried after 10 s; with a margin.
const RETRY_TIMEOUT: Duration = Duration::from_secs(45);

const HOOK_SECRET_PATH: &str = "hooks/T0/B0/path-secret-123";
const HOOK_TOKEN: &str = "Bearer header-secret-456";

fn channel<'a>(channels: &'a Value, name: &str) -> Result<&'a Value> {
    channels
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name))
        .with_context(|| format!("no channel {name} in {channels}"))
}

#[test]
fn alert_changes_reach_a_mail_relay_and_a_webhook_once_each() -> Result<()> {
    ensure_zfs()?;
    let dir = TestDir::new("notify")?;
    let pool = TestPool::create(dir.path(), "ntfy")?;
    let module = dir.path().join("module");
    let rsyncd = TestRsyncd::start(dir.path(), &[("mod", &module)])?;
    let smtpd = TestSmtpd::start(dir.path(), "smtpd", None)?;
    let (ca, cert, key) = loopback_server_certificate(dir.path())?;
    let smtpd_tls = TestSmtpd::start(dir.path(), "smtpd-tls", Some((&cert, &key)))?;
    // The first request is refused: the raised message comes on the retry.
    let hook = TestWebhook::start(1)?;
    let mut controller = Controller::init(dir.path())?;
    controller.extra_run_args = ["--alert-interval", "1s"].map(String::from).to_vec();
    controller.start()?;
    let mut agent = Agent::join(&controller, "nas1")?;
    agent.start(&[pool.name()], None)?;
    wait_for_status(&controller, "nas1", "ONLINE", STATUS_TIMEOUT)?;
    pool.create_dataset("data")?;
    let data = pool.dataset_mountpoint("data")?;
    std::fs::write(data.join("a.txt"), b"protected")?;
    let data = data.to_str().context("mountpoint")?.to_owned();

    // Channels: plain SMTP on loopback, STARTTLS with a private CA, a
    // webhook with a secret path and header, a critical-only webhook, and
    // one that cannot be reached.
    let smtp = smtpd.address();
    controller.cli_ok(&[
        "notify",
        "add",
        "mail",
        "--smtp",
        &smtp,
        "--from",
        "nasfleet@test.invalid",
        "--to",
        "admin@test.invalid",
    ])?;
    let smtp_tls = smtpd_tls.address();
    let ca = ca.to_str().context("ca path")?;
    controller.cli_ok(&[
        "notify",
        "add",
        "mail-tls",
        "--smtp",
        &smtp_tls,
        "--starttls",
        "--ca-file",
        ca,
        "--from",
        "nasfleet@test.invalid",
        "--to",
        "ops@test.invalid",
    ])?;
    let hook_url = format!("{}/{HOOK_SECRET_PATH}", hook.url());
    let header = format!("Authorization={HOOK_TOKEN}");
    let added = controller.cli_ok(&[
        "notify",
        "add",
        "hook",
        "--webhook",
        &hook_url,
        "--header",
        &header,
    ])?;
    ensure!(added.contains("notify test hook"), "{added}");
    let critical_url = format!("{}/critical-only", hook.url());
    controller.cli_ok(&[
        "notify",
        "add",
        "pager",
        "--webhook",
        &critical_url,
        "--min-level",
        "critical",
    ])?;
    let closed = nasfleet_tests::free_port(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))?;
    let broken_url = format!("http://127.0.0.1:{closed}/nobody-listens");
    controller.cli_ok(&["notify", "add", "broken", "--webhook", &broken_url])?;

    // Bad channels are refused with the field and the rule, and change nothing.
    let refused = controller.cli(&["notify", "add", "bad", "--webhook", "file:///etc/passwd"])?;
    let words = String::from_utf8_lossy(&refused.stderr);
    ensure!(
        !refused.status.success() && words.contains("webhook:"),
        "{words}"
    );
    let refused = controller.cli(&[
        "notify",
        "add",
        "bad",
        "--smtp",
        "mail.example.com:587",
        "--from",
        "a@b.invalid",
        "--to",
        "c@d.invalid",
        "--user",
        "u",
        "--password-file",
        "/dev/null",
    ])?;
    ensure!(
        !refused.status.success(),
        "an empty password file was accepted"
    );

    // Secrets never come back: not in the list, not in the audit log.
    let listed = controller.cli_ok(&["-o", "json", "notify", "list"])?;
    let audit = controller.cli_ok(&["-o", "json", "audit", "list"])?;
    for secret in ["path-secret-123", "header-secret-456"] {
        ensure!(
            !listed.contains(secret),
            "notify list shows {secret}: {listed}"
        );
        ensure!(
            !audit.contains(secret),
            "the audit log shows {secret}: {audit}"
        );
    }
    let channels: Value = serde_json::from_str(&listed)?;
    ensure!(channels.as_array().map(Vec::len) == Some(5), "{channels}");
    ensure!(
        channel(&channels, "hook")?["header_names"][0] == "Authorization",
        "{channels}"
    );
    ensure!(audit.contains("AddChannel"), "{audit}");

    // Test messages: over plain SMTP, over STARTTLS, and a failure's reason.
    controller.cli_ok(&["notify", "test", "mail"])?;
    controller.cli_ok(&["notify", "test", "mail-tls"])?;
    let tls_mail = smtpd_tls.mails()?;
    ensure!(
        tls_mail.len() == 1 && tls_mail[0].subject.contains("test"),
        "{tls_mail:?}"
    );
    let failed = controller.cli(&["notify", "test", "broken"])?;
    let words = String::from_utf8_lossy(&failed.stderr);
    ensure!(
        !failed.status.success()
            && words.contains("cannot connect")
            && !words.contains("nobody-listens"),
        "{words}"
    );

    // A failed run raises an alert: one mail, one webhook message.
    let task_id = create_rsync_task(&controller, &data, "127.0.0.1", closed)?;
    ensure!(run_rsync_task(&controller, &task_id)? == "FAILED");
    let raised = wait_raised(&controller, "task-failed", "nas1")?;
    let raised_subject = "[nasfleet] WARNING raised: rsync task 'offsite-copy'";
    nasfleet_tests::wait_until(ALERT_TIMEOUT, Duration::from_millis(250), || {
        Ok(smtpd.mails()?.iter().any(|m| m.subject == raised_subject))
    })
    .with_context(|| format!("no mail for the failure: {:?}", smtpd.mails()))?;
    nasfleet_tests::wait_until(RETRY_TIMEOUT, Duration::from_millis(250), || {
        Ok(hook
            .received()
            .iter()
            .any(|r| r.accepted && r.body["event"] == "raised"))
    })
    .with_context(|| format!("no webhook for the failure: {:?}", hook.received()))?;
    let first = &hook.received()[0];
    ensure!(
        !first.accepted,
        "the first request was to be refused: {first:?}"
    );
    let delivered = hook
        .received()
        .into_iter()
        .find(|r| r.accepted)
        .context("an accepted request")?;
    ensure!(
        delivered.path == format!("/{HOOK_SECRET_PATH}"),
        "{delivered:?}"
    );
    ensure!(
        delivered
            .headers
            .iter()
            .any(|(n, v)| n == "authorization" && v == HOOK_TOKEN),
        "{delivered:?}"
    );
    let text = delivered.body["text"].as_str().unwrap_or_default();
    ensure!(
        text.contains("offsite-copy") && text.contains("FAILED"),
        "{text}"
    );
    ensure!(
        delivered.body["alert"]["id"] == raised["id"],
        "{delivered:?}"
    );

    // Its recovery clears it: one more of each.
    let port = rsyncd.port().to_string();
    controller.cli_ok(&[
        "rsync",
        "edit",
        &task_id,
        "--remote-host",
        &rsyncd.host(),
        "--remote-port",
        &port,
    ])?;
    ensure!(run_rsync_task(&controller, &task_id)? == "SUCCESS");
    wait_cleared(&controller, id_of(&raised)?)?;
    let cleared_subject = "[nasfleet] cleared: rsync task 'offsite-copy'";
    nasfleet_tests::wait_until(ALERT_TIMEOUT, Duration::from_millis(250), || {
        Ok(smtpd.mails()?.iter().any(|m| m.subject == cleared_subject)
            && hook.received().iter().any(|r| r.body["event"] == "cleared"))
    })
    .with_context(|| {
        format!(
            "no message for the recovery: {:?} {:?}",
            smtpd.mails(),
            hook.received()
        )
    })?;

    // The channel that keeps failing raises its own alert.
    let mut failing = None;
    nasfleet_tests::wait_until(RETRY_TIMEOUT, Duration::from_millis(500), || {
        failing = alerts(&controller, false)?
            .into_iter()
            .find(|a| a["kind"] == "notification-failing");
        Ok(failing.is_some())
    })
    .with_context(|| {
        format!(
            "no alert for the failing channel: {}",
            controller.cli_ok(&["notify", "list"]).unwrap_or_default()
        )
    })?;
    let failing = failing.context("alert")?;
    ensure!(
        failing["object"] == "notification channel 'broken'"
            && failing["text"]
                .as_str()
                .unwrap_or_default()
                .contains("cannot connect"),
        "{failing}"
    );
    let listed: Value =
        serde_json::from_str(&controller.cli_ok(&["-o", "json", "notify", "list"])?)?;
    let broken = channel(&listed, "broken")?;
    ensure!(
        broken["failures_in_a_row"].as_u64() >= Some(3)
            && broken["last_error"]
                .as_str()
                .unwrap_or_default()
                .contains("cannot connect"),
        "{broken}"
    );
    let table = controller.cli_ok(&["notify", "list"])?;
    ensure!(table.contains("failed in a row"), "{table}");
    // Removing it clears the alert.
    controller.cli_ok(&["notify", "remove", "broken"])?;
    wait_cleared(&controller, id_of(&failing)?)?;

    // Exactly one message per change, after several more evaluations.
    std::thread::sleep(Duration::from_secs(3));
    let mails = smtpd.mails()?;
    let count = |subject: &str| mails.iter().filter(|m| m.subject == subject).count();
    ensure!(
        count(raised_subject) == 1 && count(cleared_subject) == 1,
        "{mails:?}"
    );
    let about_task: Vec<_> = hook
        .received()
        .into_iter()
        .filter(|r| r.accepted && r.body["alert"]["id"] == raised["id"])
        .collect();
    ensure!(
        about_task.len() == 2
            && about_task[0].body["event"] == "raised"
            && about_task[1].body["event"] == "cleared",
        "{about_task:?}"
    );
    // The critical-only channel heard nothing of warnings.
    ensure!(
        hook.received()
            .iter()
            .filter(|r| r.path == "/critical-only")
            .all(|r| r.body["alert"]["level"] == "critical"),
        "{:?}",
        hook.received()
    );
    let listed: Value =
        serde_json::from_str(&controller.cli_ok(&["-o", "json", "notify", "list"])?)?;
    let hook_channel = channel(&listed, "hook")?;
    ensure!(
        hook_channel["delivered"].as_u64() >= Some(2)
            && hook_channel["last_error"]
                .as_str()
                .unwrap_or_default()
                .contains("500"),
        "{hook_channel}"
    );
    Ok(())
}
