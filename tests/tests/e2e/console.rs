//! The web console in a real headless Chromium against the real controller, agents, sshd and rsync daemon: password and link sign-in, the dashboard, the replication wizard to a two-source task that runs to FINISHED without a reload, an rsync task made on its screen that runs SUCCESS, a failed run's reason, a viewer's limits and forged posts, CSRF, scope, and a screenshot of every screen under `target/console-screenshots`.
//!
//! The OpenZFS guest has no browser; this module runs on the host tier
//! (deploy/test.sh skips `console::` in the guest and says so).

use super::common::*;
use super::replication::{RUN_TIMEOUT, two_systems};
use super::users::{cli_at, create_user, login};
use anyhow::{Context, Result, ensure};
use nasfleet_tests::browser::{Browser, Driver, UI_TIMEOUT, ensure_browser};
use nasfleet_tests::{TestDir, TestPool, TestRsyncd, TestSshd, ensure_zfs};
use serde_json::Value;
use std::time::Duration;

const ADMIN_PASSWORD: &str = "correct horse battery staple";

/// `fetch` from inside the page: the status of a POST to `path`, with the
/// page's CSRF token or without it.
async fn post_status(browser: &Browser, path: &str, with_csrf: bool) -> Result<u64> {
    let headers = if with_csrf {
        "{'X-CSRF-Token': document.body.dataset.csrf}"
    } else {
        "{}"
    };
    let script = format!(
        "const done = arguments[arguments.length - 1];
         fetch({path:?}, {{method: 'POST', headers: {headers}, redirect: 'manual'}})
           .then(r => done(r.type === 'opaqueredirect' ? 303 : r.status), e => done(String(e)));"
    );
    let answer = browser.script(&script).await?;
    answer
        .as_u64()
        .with_context(|| format!("POST {path} from the page answered {answer}"))
}

fn runs_of(controller: &nasfleet_tests::Controller, task: &str) -> Result<usize> {
    let runs = controller.cli_json(&["run", "list", "--task", task])?;
    Ok(runs
        .as_array()
        .or_else(|| runs["runs"].as_array())
        .map(Vec::len)
        .unwrap_or(0))
}

#[test]
fn the_console_in_a_real_browser() -> Result<()> {
    ensure_zfs()?;
    ensure_browser()?;
    let dir = TestDir::new("console")?;
    let pool1 = TestPool::create(dir.path(), "cons")?;
    let pool2 = TestPool::create(dir.path(), "cond")?;
    let sshd1 = TestSshd::start(dir.path())?;
    let sshd2 = TestSshd::start(dir.path())?;
    let data = pool1.create_dataset("data")?;
    let local = pool2.create_dataset("local")?;
    // Enough data that a run is seen RUNNING before it is FINISHED.
    let chunk: Vec<u8> = (0..16u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    pool1.write_file("data", "big.bin", &chunk)?;
    pool2.write_file("local", "a.txt", b"local")?;
    for (pool, dataset) in [(&pool1, "data"), (&pool2, "local")] {
        pool.snapshot(dataset, "auto-2026-01-01_00-00")?;
    }
    let module = dir.path().join("module");
    let rsyncd = TestRsyncd::start(dir.path(), &[("mod", &module)])?;
    let fleet = two_systems(&dir, &pool1, &sshd1, &pool2, &sshd2)?;
    let controller = &fleet.controller;
    let console = controller.web_url();

    let password_file = dir.path().join("admin.password");
    std::fs::write(&password_file, format!("{ADMIN_PASSWORD}\n"))?;
    let path = password_file.to_str().context("password path")?;
    let err = cli_error(
        controller,
        &[
            "user",
            "set-password",
            "admin",
            "--password-file",
            "/nonexistent",
        ],
    )?;
    ensure!(err.contains("--password-file"), "{err}");
    controller.cli_ok(&["user", "set-password", "admin", "--password-file", path])?;
    let users = controller.cli_json(&["user", "list"])?;
    ensure!(
        users.to_string().contains("\"password_set\":true"),
        "{users}"
    );

    // vic: a viewer of nas1 only, logged in on a machine of their own.
    let vic = create_user(controller, "vic", &["--role", "viewer", "--system", "nas1"])?;
    let (vic_home, vic_config) = login(&dir, &vic)?;

    // A task that fails: an rsync daemon port where nothing listens.
    let closed = nasfleet_tests::free_port(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))?;
    let data_path = pool1.dataset_mountpoint("data")?;
    let data_path = data_path.to_str().context("mountpoint")?.to_owned();
    controller.cli_ok(&[
        "rsync",
        "create",
        "--system",
        "nas1",
        "--path",
        &data_path,
        "--user",
        "root",
        "--direction",
        "push",
        "--remote-host",
        "127.0.0.1",
        "--remote-port",
        &closed.to_string(),
        "--remote-module",
        "mod",
        "--description",
        "broken",
    ])?;
    let failed = controller.cli_json(&["rsync", "run", "broken"])?;
    let failed_id = failed["id"].as_u64().context("run id")?;
    let failed = wait_run_final(controller, failed_id, RUN_TIMEOUT)?;
    ensure!(run_state(&failed)? == "FAILED", "{failed}");

    controller.cli_ok(&[
        "snapshot-task",
        "create",
        "--system",
        "nas1",
        "--dataset",
        &data,
        "--schedule",
        "hourly",
        "--lifetime",
        "2w",
    ])?;

    let driver = Driver::start(dir.path())?;
    runtime()?.block_on(async {
        let admin = driver.browser("admin").await?;

        // Password sign-in: a wrong password and an unknown user get one answer.
        admin.goto(&format!("{console}/")).await?;
        ensure!(
            admin.url().await.ends_with("/signin"),
            "{}",
            admin.url().await
        );
        admin.screenshot("signin").await?;
        admin.fill("#username", "admin").await?;
        admin.fill("#password", "wrong password here").await?;
        admin.click_to("#signin-submit").await?;
        let wrong = admin.text("#signin-error").await?;
        admin.fill("#username", "nobody").await?;
        admin.fill("#password", "wrong password here").await?;
        admin.click_to("#signin-submit").await?;
        let unknown = admin.text("#signin-error").await?;
        ensure!(
            wrong == unknown && wrong == "user name or password is wrong",
            "{wrong} / {unknown}"
        );
        admin.fill("#username", "admin").await?;
        admin.fill("#password", ADMIN_PASSWORD).await?;
        admin.click_to("#signin-submit").await?;
        ensure!(
            admin.text("#whoami").await?.contains("admin"),
            "not signed in"
        );

        // Dashboard: both systems ONLINE, with pools and SSH.
        for system in ["nas1", "nas2"] {
            let card = format!("a.card[data-system={system}] .card-head .status");
            admin
                .wait_text(&card, UI_TIMEOUT, |t| t == "ONLINE")
                .await?;
        }
        ensure!(admin.text("a.card[data-system=nas1] .ssh-state").await? == "RUNNING");
        ensure!(
            admin
                .exists(&format!(
                    "a.card[data-system=nas1] [data-pool={}]",
                    pool1.name()
                ))
                .await?
        );
        ensure!(
            admin.text("a.card[data-system=nas1] .failed-count").await? == "1",
            "the broken rsync task failed"
        );
        admin.screenshot("dashboard").await?;
        admin.click_to("a.card[data-system=nas1]").await?;
        admin
            .find(&format!("#datasets tr[data-dataset=\"{data}\"]"))
            .await?;
        ensure!(
            admin
                .text("#services tr[data-service=ssh]")
                .await?
                .contains("SHA256:"),
            "host keys shown"
        );
        // A manual snapshot from the system's page.
        admin
            .select("#take-snapshot select[name=dataset]", &data)
            .await?;
        admin.click_to("#take-snapshot button").await?;
        let notice = admin.text("#notice").await?;
        ensure!(
            notice.starts_with(&format!("Created {data}@manual-")),
            "{notice}"
        );
        admin.screenshot("system").await?;

        // The wizard: a rule broken on step 1 is shown on its field, in the CLI's words.
        admin.goto(&format!("{console}/replication")).await?;
        ensure!(
            admin
                .text("main")
                .await?
                .contains("No Replication Tasks configured")
        );
        admin.click_to("#add-replication").await?;
        admin.click_to("#wizard-next").await?;
        let name_error = admin.text(".field-error[data-field=name]").await?;
        ensure!(name_error.starts_with("name:"), "{name_error}");
        admin.fill("#task-name", "offsite").await?;
        admin.select_to("select[name=src0_system]", "nas1").await?;
        admin
            .click(&format!("label.node[data-dataset=\"{data}\"]"))
            .await?;
        admin.screenshot("wizard-sources").await?;
        admin.click_to("#add-source").await?;
        admin.select_to("select[name=src1_system]", "nas2").await?;
        admin
            .click(&format!(
                "fieldset[data-source=\"1\"] label.node[data-dataset=\"{local}\"]"
            ))
            .await?;
        // Click to select, and again to clear: the first source's dataset stays chosen.
        let chosen = admin
            .find(&format!(
                "fieldset[data-source=\"0\"] label.node[data-dataset=\"{data}\"] input"
            ))
            .await?
            .prop("checked")
            .await?;
        ensure!(chosen.as_deref() == Some("true"), "{chosen:?}");
        admin.click_to("#wizard-next").await?;
        admin.select("#target-system", "nas2").await?;
        admin.fill("#target-dataset", "bad name!").await?;
        admin.click_to("#wizard-next").await?;
        let target_error = admin.text(".field-error[data-field=target]").await?;
        ensure!(target_error.starts_with("target:"), "{target_error}");
        admin
            .fill("#target-dataset", &format!("{}/backup", pool2.name()))
            .await?;
        admin.screenshot("wizard-target").await?;
        admin.click_to("#wizard-next").await?;
        // The seeds' default schedule: weekly, Sunday 00:00.
        ensure!(admin.find("#period").await?.prop("value").await?.as_deref() == Some("weekly"));
        ensure!(
            admin
                .find("#weekday")
                .await?
                .prop("value")
                .await?
                .as_deref()
                == Some("sun")
        );
        admin.screenshot("wizard-scheduler").await?;
        admin.click_to("#wizard-next").await?;
        let summary = admin.text("#summary").await?;
        for expected in [
            format!("{}/backup/nas1/{data}", pool2.name()),
            format!("{}/backup/nas2/{local}", pool2.name()),
            "weekly (Sunday at 00:00)".to_owned(),
        ] {
            ensure!(summary.contains(&expected), "{expected} not in {summary}");
        }
        ensure!(admin.exists("#plan").await?, "the dry-run plan is shown");
        admin.screenshot("wizard-confirmation").await?;
        // BACK to any step keeps every answer.
        admin.click_to("button[data-step=\"1\"]").await?;
        ensure!(
            admin
                .find("#task-name")
                .await?
                .prop("value")
                .await?
                .as_deref()
                == Some("offsite")
        );
        for _ in 0..3 {
            admin.click_to("#wizard-next").await?;
        }
        admin.click_to("#wizard-confirm").await?;
        let row = "#replication-tasks tr[data-name=offsite]";
        admin
            .wait_text(&format!("{row} [data-task-status]"), UI_TIMEOUT, |t| {
                t.contains("PENDING")
            })
            .await?;
        admin.screenshot("replication").await?;

        // Run Now: the page stays (no reload) while the status goes live to FINISHED.
        admin
            .script("window.__stayed = true; arguments[0]();")
            .await?;
        admin.click(&format!("{row} button.run-now")).await?;
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + RUN_TIMEOUT;
        loop {
            let status = admin
                .text(&format!("{row} [data-task-status] .status"))
                .await?;
            if seen.last() != Some(&status) {
                seen.push(status.clone());
            }
            if status == "FINISHED" || status == "FAILED" || std::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ensure!(
            seen.last().map(String::as_str) == Some("FINISHED"),
            "statuses seen: {seen:?}"
        );
        ensure!(
            seen.iter().any(|s| s == "RUNNING"),
            "never shown RUNNING: {seen:?}"
        );
        let stayed = admin
            .script("arguments[0](window.__stayed === true);")
            .await?;
        ensure!(stayed == Value::Bool(true), "the page was reloaded");
        ensure!(nasfleet_tests::zfs::dataset_exists(&format!(
            "{}/backup/nas1/{data}",
            pool2.name()
        ))?);

        // An rsync task made on its screen runs SUCCESS.
        admin.goto(&format!("{console}/protection")).await?;
        admin.screenshot("data-protection").await?;
        admin.click_to("#add-rsync").await?;
        admin.select("#rsync-system", "nas1").await?;
        admin.fill("#rsync-path", &data_path).await?;
        admin.fill("#rsync-user", "root").await?;
        admin.fill("#rsync-description", "to-module").await?;
        admin.fill("#rsync-remote-host", &rsyncd.host()).await?;
        admin
            .fill("#rsync-port", &rsyncd.port().to_string())
            .await?;
        admin.fill("#rsync-module", "mod").await?;
        // SSH-only fields hide in module mode.
        ensure!(
            !admin
                .find("[data-mode=SSH] input")
                .await?
                .is_displayed()
                .await?
        );
        admin
            .fill("#rsync-aux", "--exclude=*.tmp\n--bwlimit=100M")
            .await?;
        admin.screenshot("rsync-form").await?;
        admin.click_to("#rsync-save").await?;
        let rsync_row = "#rsync-tasks tr[data-name=to-module]";
        admin.find(rsync_row).await?;
        admin.click(&format!("{rsync_row} button.run-now")).await?;
        admin
            .wait_text(
                &format!("{rsync_row} [data-task-status] .status"),
                RUN_TIMEOUT,
                |t| t == "SUCCESS" || t == "FAILED",
            )
            .await?;
        ensure!(
            admin
                .text(&format!("{rsync_row} [data-task-status] .status"))
                .await?
                == "SUCCESS"
        );
        ensure!(
            module.join("big.bin").is_file(),
            "the file reached the module"
        );

        // A failed run's reason opens from its status.
        let broken = "#rsync-tasks tr[data-name=broken]";
        admin
            .click(&format!("{broken} details.reason summary"))
            .await?;
        let reason = admin.text(&format!("{broken} .reason-text")).await?;
        ensure!(
            !reason.is_empty() && reason == failed["reason"].as_str().unwrap_or_default(),
            "{reason} / {failed}"
        );

        // Runs, one run live, and the admin pages.
        admin.goto(&format!("{console}/runs")).await?;
        admin.find("#runs").await?;
        admin.screenshot("runs").await?;
        admin.goto(&format!("{console}/runs/{failed_id}")).await?;
        ensure!(admin.text("#run-state").await?.contains("FAILED"));
        admin.screenshot("run").await?;
        admin.goto(&format!("{console}/protection")).await?;
        // Delete asks first; CANCEL keeps the task, CONFIRM deletes it.
        admin.click(&format!("{broken} button.delete")).await?;
        let question = admin.text("#confirm-text").await?;
        ensure!(question.contains("Delete task 'broken'"), "{question}");
        admin.click("#confirm-cancel").await?;
        ensure!(admin.exists(broken).await?, "cancel deleted the task");
        admin.click(&format!("{broken} button.delete")).await?;
        admin.click_to("#confirm-ok").await?;
        ensure!(!admin.exists(broken).await?, "the task is still listed");
        ensure!(
            admin.exists("#snapshot-tasks tr[data-task]").await?,
            "the snapshot task widget is empty"
        );
        admin.goto(&format!("{console}/users")).await?;
        admin.find("#users tr[data-user=vic]").await?;
        admin.screenshot("users").await?;
        admin.goto(&format!("{console}/tokens")).await?;
        admin.click_to("#create-token button").await?;
        ensure!(
            admin
                .text("#join-line")
                .await?
                .starts_with("nasfleet-agent join --controller")
        );
        admin.screenshot("tokens").await?;
        admin.goto(&format!("{console}/audit")).await?;
        let audit = admin.text("#audit").await?;
        ensure!(
            audit.contains("ConsoleSignIn") && audit.contains("CreateTask"),
            "{audit}"
        );
        admin.screenshot("audit").await?;

        // A POST without the CSRF token is refused and changes nothing.
        let rsync_id = controller.cli_json(&["rsync", "show", "to-module"])?["id"]
            .as_u64()
            .context("task id")?;
        let before = runs_of(controller, "to-module")?;
        ensure!(post_status(&admin, &format!("/tasks/{rsync_id}/run"), false).await? == 403);
        ensure!(
            runs_of(controller, "to-module")? == before,
            "a run started without a CSRF token"
        );

        // vic signs in with a link in a second browser: only nas1, no Run Now,
        // and a forged POST is refused by the handler.
        let (code, link, err) = cli_at(&vic_home, Some(&vic_config), &["ui"])?;
        ensure!(code == Some(0), "{err}");
        let link = link.trim().to_owned();
        ensure!(
            link.starts_with(&format!("{console}/signin/link?token=")),
            "{link}"
        );
        let viewer = driver.browser("vic").await?;
        viewer.goto(&link).await?;
        ensure!(
            viewer.text("#whoami").await?.contains("vic"),
            "vic not signed in"
        );
        viewer.find("a.card[data-system=nas1]").await?;
        ensure!(
            !viewer.exists("a.card[data-system=nas2]").await?,
            "vic sees nas2"
        );
        viewer.goto(&format!("{console}/protection")).await?;
        viewer.find("#rsync-tasks tr[data-name=to-module]").await?;
        ensure!(
            !viewer.exists("button.run-now").await?,
            "a viewer is offered Run Now"
        );
        ensure!(
            !viewer.exists("a[href='/users']").await?,
            "a viewer is offered the users page"
        );
        ensure!(post_status(&viewer, &format!("/tasks/{rsync_id}/run"), true).await? == 403);
        ensure!(
            runs_of(controller, "to-module")? == before,
            "a viewer started a run"
        );
        // The link worked once.
        let again = driver.browser("vic-again").await?;
        again.goto(&link).await?;
        ensure!(
            again.text("#problem").await?.contains("already used"),
            "a link worked twice"
        );
        again.close().await?;

        // Sign-out ends the session.
        admin.click_to("#signout").await?;
        admin.goto(&format!("{console}/")).await?;
        ensure!(
            admin.url().await.ends_with("/signin"),
            "still signed in after sign-out"
        );
        viewer.close().await?;
        admin.close().await?;
        Ok::<(), anyhow::Error>(())
    })?;
    let audit = controller.cli_json(&["audit", "list", "--user", "vic"])?;
    ensure!(
        audit.to_string().contains("this needs the operator role"),
        "{audit}"
    );
    Ok(())
}
