//! Users end to end with real certificates: an admin creates people, each logs in on "their own machine" (a directory of their own) with a single-use token, roles decide what each may call, removal revokes at once, and every change and refusal is in the audit log, also after a SIGKILL.

use anyhow::{Context, Result, ensure};
use nasfleet_tests::{Agent, Controller, TestDir};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const CREDENTIALS_REFUSED: i32 = 4;
const PERMISSION_DENIED: i32 = 5;
const INVALID: i32 = 2;
const NOT_FOUND: i32 = 6;

/// `nasfleet --config CONFIG ARGS` with HOME pointed at `home`: exit code,
/// stdout and stderr.
pub(super) fn cli_at(
    home: &Path,
    config: Option<&Path>,
    args: &[&str],
) -> Result<(Option<i32>, String, String)> {
    let mut cmd = Command::new(nasfleet_tests::binary("nasfleet")?);
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    cmd.args(args)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("NASFLEET_CONFIG")
        .env("NO_COLOR", "1");
    let out = nasfleet_tests::run_output(&mut cmd, Duration::from_secs(60))?;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// `user create NAME ARGS` as the admin; the login command's parts.
pub(super) fn create_user(controller: &Controller, name: &str, args: &[&str]) -> Result<Value> {
    let mut full = vec!["user", "create", name];
    full.extend_from_slice(args);
    controller.cli_json(&full)
}

/// Logs `name` in on a machine of their own (a home directory); returns
/// that home and the config `login` wrote there.
pub(super) fn login(dir: &TestDir, created: &Value) -> Result<(PathBuf, PathBuf)> {
    let name = created["user"]["name"].as_str().context("user name")?;
    let home = dir.path().join(format!("home-{name}"));
    std::fs::create_dir_all(&home)?;
    let (code, out, err) = cli_at(
        &home,
        None,
        &[
            "login",
            "--controller",
            created["controller"].as_str().context("controller")?,
            "--token",
            created["token"].as_str().context("token")?,
            "--ca-fingerprint",
            created["ca_fingerprint"].as_str().context("fingerprint")?,
        ],
    )?;
    ensure!(code == Some(0), "login of {name}: {code:?} {out} {err}");
    let config = home.join(".config/nasfleet/config.toml");
    ensure!(out.contains(&format!("Logged in as {name}")), "{out}");
    Ok((home, config))
}

fn mode_of(path: &Path) -> Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
}

#[test]
fn people_log_in_with_their_own_keys_roles_decide_and_the_audit_log_keeps_everything() -> Result<()>
{
    let dir = TestDir::new("users")?;
    let mut controller = Controller::init(dir.path())?;
    controller.start()?;
    // Systems to scope people to; their agents need not run.
    let _nas1 = Agent::join(&controller, "nas1")?;
    let _nas2 = Agent::join(&controller, "nas2")?;

    let ann = create_user(
        &controller,
        "ann",
        &["--role", "operator", "--system", "nas1"],
    )?;
    let vic = create_user(&controller, "vic", &["--role", "viewer", "--all-systems"])?;
    ensure!(
        ann["token"]
            .as_str()
            .is_some_and(|t| t.starts_with("nfu1.")),
        "{ann}"
    );
    let (ann_home, ann_config) = login(&dir, &ann)?;
    let (vic_home, vic_config) = login(&dir, &vic)?;
    // The key was made on "her machine" and is hers alone.
    ensure!(mode_of(&ann_config)? == 0o600, "config mode");
    ensure!(
        mode_of(&ann_home.join(".config/nasfleet/ann.key"))? == 0o600,
        "key mode"
    );
    // The token is single-use.
    let (code, _, err) = cli_at(
        &dir.path().join("home-ann"),
        Some(&dir.path().join("elsewhere.toml")),
        &[
            "login",
            "--controller",
            ann["controller"].as_str().context("controller")?,
            "--token",
            ann["token"].as_str().context("token")?,
            "--ca-fingerprint",
            ann["ca_fingerprint"].as_str().context("fingerprint")?,
        ],
    )?;
    ensure!(code == Some(CREDENTIALS_REFUSED), "{code:?}: {err}");
    ensure!(err.contains("already used"), "{err}");

    // A viewer reads and is refused changes, with the role it needs named.
    let (code, out, err) = cli_at(
        &vic_home,
        Some(&vic_config),
        &["-o", "json", "system", "list"],
    )?;
    ensure!(code == Some(0), "{err}");
    ensure!(out.contains("nas1"), "{out}");
    let (code, _, err) = cli_at(&vic_home, Some(&vic_config), &["token", "create"])?;
    ensure!(code == Some(PERMISSION_DENIED), "{code:?}: {err}");
    ensure!(
        err.contains("needs the admin role; user 'vic' is a viewer"),
        "{err}"
    );
    let (code, _, err) = cli_at(
        &vic_home,
        Some(&vic_config),
        &["snapshot", "create", "nas1", "tank"],
    )?;
    ensure!(code == Some(PERMISSION_DENIED), "{code:?}: {err}");
    ensure!(err.contains("needs the operator role"), "{err}");
    // A person scoped to nas1 does not see nas2 at all: lists omit it, a
    // lookup says not found (not forbidden), a task naming it is refused
    // with the same words.
    let (code, out, err) = cli_at(
        &ann_home,
        Some(&ann_config),
        &["-o", "json", "system", "list"],
    )?;
    ensure!(code == Some(0), "{err}");
    ensure!(out.contains("nas1") && !out.contains("nas2"), "{out}");
    let (code, _, err) = cli_at(&ann_home, Some(&ann_config), &["system", "show", "nas2"])?;
    ensure!(code == Some(NOT_FOUND), "{code:?}: {err}");
    ensure!(err.contains("system 'nas2' is not enrolled"), "{err}");
    let (code, _, err) = cli_at(
        &ann_home,
        Some(&ann_config),
        &[
            "snapshot-task",
            "create",
            "--system",
            "nas2",
            "--dataset",
            "tank/a",
        ],
    )?;
    ensure!(code == Some(INVALID), "{code:?}: {err}");
    ensure!(
        err.contains("system: System 'nas2' is not enrolled"),
        "{err}"
    );
    let (code, _, err) = cli_at(&ann_home, Some(&ann_config), &["system", "show", "nas9"])?;
    ensure!(code == Some(NOT_FOUND), "{code:?}: {err}");
    ensure!(err.contains("system 'nas9' is not enrolled"), "{err}");
    // An operator may not manage people.
    let (code, _, err) = cli_at(&ann_home, Some(&ann_config), &["user", "list"])?;
    ensure!(code == Some(PERMISSION_DENIED), "{code:?}: {err}");
    ensure!(
        err.contains("needs the admin role; user 'ann' is an operator"),
        "{err}"
    );

    // `user list` shows roles, systems and certificate expiry.
    let users = controller.cli_json(&["user", "list"])?;
    let listed = users.as_array().context("user list")?;
    ensure!(listed.len() == 3, "{users}");
    let ann_row = listed
        .iter()
        .find(|u| u["name"] == "ann")
        .context("ann listed")?;
    ensure!(
        ann_row["role"] == "operator" && ann_row["systems"][0] == "nas1",
        "{ann_row}"
    );
    ensure!(ann_row["certificate_expires"].is_string(), "{ann_row}");

    // Bad input names the field and changes nothing.
    let out = controller.cli(&["user", "create", "bob", "--role", "root", "--all-systems"])?;
    ensure!(out.status.code() == Some(INVALID), "{out:?}");
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("role: must be admin, operator or viewer")
    );
    // The last admin stays.
    let out = controller.cli(&["user", "remove", "admin", "--yes"])?;
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("last admin and cannot be removed"),
        "{out:?}"
    );

    // Removal revokes at once.
    controller.cli_ok(&["user", "remove", "vic", "--yes"])?;
    let (code, _, err) = cli_at(&vic_home, Some(&vic_config), &["system", "list"])?;
    ensure!(code == Some(CREDENTIALS_REFUSED), "{code:?}: {err}");

    // A change acknowledged just before a SIGKILL keeps its audit entry.
    controller.cli_ok(&["user", "edit", "ann", "--role", "viewer"])?;
    controller.kill()?;
    controller.start()?;
    let audit = controller.cli_json(&["audit", "list", "--limit", "50"])?;
    let entries = audit["entries"].as_array().context("entries")?;
    let has = |action: &str, actor: &str, outcome: &str| {
        entries
            .iter()
            .any(|e| e["action"] == action && e["actor"] == actor && e["outcome"] == outcome)
    };
    ensure!(has("UpdateUser", "user:admin", "ok"), "{audit}");
    ensure!(has("RemoveUser", "user:admin", "ok"), "{audit}");
    ensure!(has("CreateUser", "user:admin", "ok"), "{audit}");
    ensure!(has("Login", "user:ann", "ok"), "{audit}");
    ensure!(has("Login", "unknown", "refused"), "{audit}");
    ensure!(has("CreateToken", "user:vic", "refused"), "{audit}");
    // A refusal names what was asked of, too.
    ensure!(
        entries.iter().any(|e| e["action"] == "CreateSnapshot"
            && e["actor"] == "user:vic"
            && e["object"] == "snapshot of 'tank' on system 'nas1'"),
        "{audit}"
    );
    ensure!(has("ListUsers", "user:ann", "refused"), "{audit}");
    ensure!(has("RemoveUser", "user:admin", "refused"), "{audit}");
    // Secrets never appear in the log.
    let text = audit.to_string();
    for secret in [&ann["token"], &vic["token"]] {
        let secret = secret.as_str().context("token")?;
        ensure!(!text.contains(secret), "a token is in the audit log");
    }
    // Filters.
    let only = controller.cli_json(&["audit", "list", "--user", "ann", "--action", "login"])?;
    let only = only["entries"].as_array().context("entries")?;
    ensure!(
        only.len() == 1 && only[0]["actor"] == "user:ann",
        "{only:?}"
    );
    Ok(())
}

/// An agent whose certificate lives 45 s renews it at 30 s over its link,
/// with the key made on the agent; the controller revokes the old one once
/// the new one is in use, and the system never shows OFFLINE.
#[test]
fn agents_renew_their_certificate_before_it_expires_without_going_offline() -> Result<()> {
    nasfleet_tests::ensure_zfs()?;
    let dir = TestDir::new("renewal")?;
    let pool = nasfleet_tests::TestPool::create(dir.path(), "renew")?;
    let mut controller = Controller::init(dir.path())?;
    let config = controller.data_dir().join("controller.toml");
    let text = std::fs::read_to_string(&config)?;
    ensure!(text.contains("cert_lifetime = \"5y\""), "{text}");
    std::fs::write(
        &config,
        text.replace("cert_lifetime = \"5y\"", "cert_lifetime = \"45s\""),
    )?;
    controller.start()?;
    let mut agent = Agent::join(&controller, "renew1")?;
    agent.start(&[pool.name()], None)?;
    nasfleet_tests::wait_for_status(&controller, "renew1", "ONLINE", Duration::from_secs(60))?;
    let first = controller.cli_json(&["system", "show", "renew1"])?;
    let first_serial = first["certificate_serial"]
        .as_str()
        .context("serial")?
        .to_owned();
    ensure!(first["certificate_expires"].is_string(), "{first}");

    // Watch until the serial changes: ONLINE at every look.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let renewed = loop {
        let now = controller.cli_json(&["system", "show", "renew1"])?;
        ensure!(
            now["status"] == "ONLINE",
            "went {} during renewal: {now}",
            now["status"]
        );
        let serial = now["certificate_serial"].as_str().context("serial")?;
        if serial != first_serial {
            break now;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "no renewal within 90 s; agent log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    ensure!(
        !controller.log().contains("system OFFLINE"),
        "the controller saw the system go OFFLINE:\n{}",
        controller.log()
    );
    ensure!(
        agent
            .log()
            .contains("certificate renewed; connecting with it"),
        "{}",
        agent.log()
    );
    // The new key was made on the agent: the state dir holds it, 0600.
    let key = agent.state_dir().join("agent.key");
    ensure!(mode_of(&key)? == 0o600, "key mode");
    ensure!(
        !agent.state_dir().join("agent.next.crt").exists(),
        "renewal left its files"
    );
    ensure!(
        renewed["certificate_expires"] != first["certificate_expires"],
        "{renewed}"
    );
    // The agent keeps working with the new certificate.
    agent.restart()?;
    nasfleet_tests::wait_for_status(&controller, "renew1", "ONLINE", Duration::from_secs(60))?;
    Ok(())
}
