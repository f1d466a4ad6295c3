//! `nasfleet run list|show|watch|cancel`: the history of task runs, live progress of one run, and cancelling it.

use super::status_error;
use crate::output::{
    OutputFormat, Table, cell, human_bytes, print_json, run_state_word, time_or_dash,
};
use anyhow::{anyhow, bail};
use chrono::Local;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nasfleet_proto::status::rfc3339_from_unix_ms;
use nasfleet_proto::v1::fleet_client::FleetClient;
use nasfleet_proto::v1::run_event::Body;
use nasfleet_proto::v1::{ListRunsRequest, Progress, Run, RunPart, RunRef, RunState, RunStep};
use serde::Serialize;
use std::io::IsTerminal;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Longest reason shown in a `run list` cell; `run show` has the whole text.
const REASON_CELL: usize = 60;

/// Plain (non-terminal) watch output repeats an unchanged phase at most this
/// often, so a log file of a long transfer is not one line per agent update.
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// A run as `run list -o json` prints it.
#[derive(Debug, Serialize)]
pub struct RunJson {
    pub id: u64,
    /// The task's name.
    pub task: String,
    pub task_id: u64,
    pub task_kind: String,
    pub system: String,
    pub state: &'static str,
    pub reason: Option<String>,
    /// `manual` or `scheduled`.
    pub trigger: String,
    pub triggered_by: Option<String>,
    pub scheduled_for: Option<String>,
    pub started: Option<String>,
    pub finished: Option<String>,
    pub bytes: u64,
}

impl From<&Run> for RunJson {
    fn from(r: &Run) -> Self {
        let text = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
        RunJson {
            id: r.id,
            task: r.task_name.clone(),
            task_id: r.task_id,
            task_kind: r.task_kind.clone(),
            system: r.system.clone(),
            state: run_state_word(r.state()),
            reason: text(&r.reason),
            trigger: r.trigger.clone(),
            triggered_by: text(&r.triggered_by),
            scheduled_for: rfc3339_from_unix_ms(r.scheduled_for_unix_ms),
            started: rfc3339_from_unix_ms(r.started_unix_ms),
            finished: rfc3339_from_unix_ms(r.finished_unix_ms),
            bytes: r.bytes,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct StepJson {
    pub name: String,
    pub state: &'static str,
    pub detail: String,
    pub bytes: u64,
}

impl From<&RunStep> for StepJson {
    fn from(s: &RunStep) -> Self {
        StepJson {
            name: s.name.clone(),
            state: run_state_word(s.state()),
            detail: s.detail.clone(),
            bytes: s.bytes,
        }
    }
}

/// One system's share of a run that spans several (replication).
#[derive(Debug, Serialize)]
pub struct PartJson {
    pub system: String,
    pub state: &'static str,
    pub reason: Option<String>,
}

impl From<&RunPart> for PartJson {
    fn from(p: &RunPart) -> Self {
        PartJson {
            system: p.system.clone(),
            state: run_state_word(p.state()),
            reason: Some(p.reason.clone()).filter(|r| !r.is_empty()),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ProgressJson {
    pub phase: String,
    pub step: String,
    pub bytes_done: u64,
    /// `null` when the total is unknown.
    pub bytes_total: Option<u64>,
    pub bytes_per_second: u64,
}

impl From<&Progress> for ProgressJson {
    fn from(p: &Progress) -> Self {
        ProgressJson {
            phase: p.phase.clone(),
            step: p.step.clone(),
            bytes_done: p.bytes_done,
            bytes_total: Some(p.bytes_total).filter(|t| *t > 0),
            bytes_per_second: p.bytes_per_second,
        }
    }
}

/// A run as `run show -o json` prints it: the list fields plus parts, steps, log and progress.
#[derive(Debug, Serialize)]
pub struct RunDetailJson {
    #[serde(flatten)]
    pub run: RunJson,
    pub parts: Vec<PartJson>,
    pub steps: Vec<StepJson>,
    pub log_tail: Vec<String>,
    pub progress: Option<ProgressJson>,
}

impl From<&Run> for RunDetailJson {
    fn from(r: &Run) -> Self {
        RunDetailJson {
            run: RunJson::from(r),
            parts: r.parts.iter().map(PartJson::from).collect(),
            steps: r.steps.iter().map(StepJson::from).collect(),
            log_tail: r.log_tail.clone(),
            progress: r.progress.as_ref().map(ProgressJson::from),
        }
    }
}

/// A state no run leaves again.
pub fn is_final(state: RunState) -> bool {
    matches!(
        state,
        RunState::Finished
            | RunState::Success
            | RunState::Failed
            | RunState::Skipped
            | RunState::Missed
    )
}

/// What a finished watch means for the exit status: `None` while the run is
/// still going, `Some(Ok)` for success, `Some(Err("Run N FAILED: reason"))` otherwise.
pub fn outcome(run: &Run) -> Option<anyhow::Result<()>> {
    let state = run.state();
    match state {
        RunState::Finished | RunState::Success => Some(Ok(())),
        RunState::Failed | RunState::Skipped | RunState::Missed => {
            let word = run_state_word(state);
            Some(Err(if run.reason.trim().is_empty() {
                anyhow!("Run {} {word} (the controller gave no reason)", run.id)
            } else {
                anyhow!("Run {} {word}: {}", run.id, run.reason.trim())
            }))
        }
        RunState::Pending | RunState::Running | RunState::Unspecified => None,
    }
}

/// `3s`, `2m05s`, `1h02m`: how long a run took.
pub fn human_elapsed(ms: i64) -> String {
    let secs = (ms.max(0) + 500) / 1000;
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

fn duration_text(run: &Run) -> Option<String> {
    (run.started_unix_ms > 0 && run.finished_unix_ms >= run.started_unix_ms)
        .then(|| human_elapsed(run.finished_unix_ms - run.started_unix_ms))
}

/// `sending (tank/data)`: what the agent is doing, for progress lines.
fn progress_label(p: &Progress) -> String {
    let phase = if p.phase.trim().is_empty() {
        "working"
    } else {
        p.phase.trim()
    };
    if p.step.trim().is_empty() {
        phase.to_owned()
    } else {
        format!("{phase} ({})", p.step.trim())
    }
}

/// `12.3M of 40.0M, 4.1M/s`, or less when the agent knows less.
fn progress_amount(p: &Progress) -> String {
    let mut out = String::new();
    if p.bytes_done > 0 || p.bytes_total > 0 {
        out.push_str(&human_bytes(p.bytes_done));
        if p.bytes_total > 0 {
            out.push_str(" of ");
            out.push_str(&human_bytes(p.bytes_total));
        }
    }
    if p.bytes_per_second > 0 {
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(&human_bytes(p.bytes_per_second));
        out.push_str("/s");
    }
    out
}

/// One plain progress line: `[12:00:01] sending: 12.3M of 40.0M, 4.1M/s`.
pub fn progress_line(clock: &str, p: &Progress) -> String {
    let amount = progress_amount(p);
    if amount.is_empty() {
        format!("[{clock}] {}", progress_label(p))
    } else {
        format!("[{clock}] {}: {amount}", progress_label(p))
    }
}

fn clock() -> String {
    Local::now().format("%H:%M:%S").to_string()
}

pub async fn list(
    channel: Channel,
    task: Option<&str>,
    limit: Option<u32>,
    output: OutputFormat,
) -> anyhow::Result<()> {
    let runs = FleetClient::new(channel)
        .list_runs(ListRunsRequest {
            task: task.unwrap_or_default().to_owned(),
            limit: limit.unwrap_or(0),
        })
        .await
        .map_err(status_error)?
        .into_inner()
        .runs;
    match output {
        OutputFormat::Json => {
            let rows: Vec<RunJson> = runs.iter().map(RunJson::from).collect();
            print_json(&rows)
        }
        OutputFormat::Table => {
            if runs.is_empty() {
                match task {
                    Some(task) => println!("Task '{task}' has not run yet."),
                    None => println!("No runs yet."),
                }
                return Ok(());
            }
            println!("{}", runs_table(&runs));
            Ok(())
        }
    }
}

fn runs_table(runs: &[Run]) -> String {
    let mut table = Table::new(&[
        "ID", "TASK", "STATE", "TRIGGER", "STARTED", "FINISHED", "REASON",
    ]);
    for r in runs {
        table.row(vec![
            r.id.to_string(),
            r.task_name.clone(),
            run_state_word(r.state()).into(),
            r.trigger.clone(),
            time_or_dash(r.started_unix_ms),
            time_or_dash(r.finished_unix_ms),
            cell(&r.reason, REASON_CELL),
        ]);
    }
    table.render()
}

async fn fetch(channel: Channel, id: u64) -> anyhow::Result<Run> {
    Ok(FleetClient::new(channel)
        .get_run(RunRef { id })
        .await
        .map_err(status_error)?
        .into_inner())
}

pub async fn show(channel: Channel, id: u64, output: OutputFormat) -> anyhow::Result<()> {
    let run = fetch(channel, id).await?;
    print_run(&run, output)
}

pub async fn cancel(channel: Channel, id: u64, output: OutputFormat) -> anyhow::Result<()> {
    let run = FleetClient::new(channel)
        .cancel_run(RunRef { id })
        .await
        .map_err(status_error)?
        .into_inner();
    if output == OutputFormat::Table {
        if is_final(run.state()) {
            println!("Run {} had already ended.\n", run.id);
        } else {
            println!("Cancellation of run {} requested.\n", run.id);
        }
    }
    print_run(&run, output)
}

fn print_run(run: &Run, output: OutputFormat) -> anyhow::Result<()> {
    match output {
        OutputFormat::Json => print_json(&RunDetailJson::from(run)),
        OutputFormat::Table => {
            println!("{}", run_detail_text(run));
            Ok(())
        }
    }
}

/// `run show` for people.
fn run_detail_text(r: &Run) -> String {
    let mut lines = vec![
        format!("Run:          {}", r.id),
        format!(
            "Task:         {} (id {}{})",
            r.task_name,
            r.task_id,
            if r.task_kind.is_empty() {
                String::new()
            } else {
                format!(", {}", r.task_kind)
            }
        ),
        format!("System:       {}", r.system),
        format!("State:        {}", run_state_word(r.state())),
    ];
    if !r.reason.is_empty() {
        lines.push(format!("Reason:       {}", r.reason));
    }
    let trigger = if r.triggered_by.is_empty() {
        r.trigger.clone()
    } else {
        format!("{} by {}", r.trigger, r.triggered_by)
    };
    lines.push(format!("Trigger:      {trigger}"));
    if r.scheduled_for_unix_ms > 0 {
        lines.push(format!(
            "Scheduled:    {}",
            time_or_dash(r.scheduled_for_unix_ms)
        ));
    }
    lines.push(format!("Started:      {}", time_or_dash(r.started_unix_ms)));
    lines.push(format!(
        "Finished:     {}",
        time_or_dash(r.finished_unix_ms)
    ));
    if let Some(took) = duration_text(r) {
        lines.push(format!("Duration:     {took}"));
    }
    lines.push(format!("Transferred:  {}", human_bytes(r.bytes)));
    if let Some(p) = r.progress.as_ref().filter(|_| !is_final(r.state())) {
        let amount = progress_amount(p);
        lines.push(if amount.is_empty() {
            format!("Progress:     {}", progress_label(p))
        } else {
            format!("Progress:     {}: {amount}", progress_label(p))
        });
    }
    if !r.parts.is_empty() {
        lines.push(String::new());
        lines.extend(parts_lines(&r.parts));
    }
    if !r.steps.is_empty() {
        lines.push(String::new());
        lines.push("Steps:".into());
        let mut table = Table::new(&["STEP", "STATE", "BYTES", "DETAIL"]);
        for s in &r.steps {
            table.row(vec![
                s.name.clone(),
                run_state_word(s.state()).into(),
                human_bytes(s.bytes),
                s.detail.clone(),
            ]);
        }
        lines.extend(table.render().lines().map(|l| format!("  {l}")));
    }
    if !r.log_tail.is_empty() {
        lines.push(String::new());
        lines.push(format!("Log (last {} lines):", r.log_tail.len()));
        lines.extend(r.log_tail.iter().map(|l| format!("  {l}")));
    }
    lines.join("\n")
}

/// `Systems:` and one indented table row per part of a multi-system run.
pub fn parts_lines(parts: &[RunPart]) -> Vec<String> {
    let mut lines = vec!["Systems:".to_owned()];
    let mut table = Table::new(&["SYSTEM", "STATE", "REASON"]);
    for p in parts {
        table.row(vec![
            p.system.clone(),
            run_state_word(p.state()).into(),
            p.reason.clone(),
        ]);
    }
    lines.extend(table.render().lines().map(|l| format!("  {l}")));
    lines
}

/// How `watch` shows what happens.
enum View {
    /// A terminal: one live progress bar, log lines printed above it.
    Bar {
        bar: ProgressBar,
        /// Whether the bar currently has a known total (bar) or not (spinner).
        sized: bool,
    },
    /// A pipe or file: timestamped lines.
    Plain {
        last_label: String,
        last_printed: Option<Instant>,
    },
    /// `-o json`: one JSON object per event and line.
    Json,
}

#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum EventJson<'a> {
    Run { run: Box<RunDetailJson> },
    Progress(ProgressJson),
    Log { line: &'a str },
}

fn style(template: &str) -> ProgressStyle {
    // The templates are constants; a bad one would be our bug, not worth a crash.
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_spinner())
}

impl View {
    fn new(output: OutputFormat, id: u64) -> View {
        match output {
            OutputFormat::Json => View::Json,
            OutputFormat::Table if std::io::stdout().is_terminal() => {
                let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout());
                bar.set_style(style("{spinner} {prefix}: {wide_msg}"));
                bar.set_prefix(format!("run {id}"));
                bar.set_message("waiting for the controller");
                // The tick runs on indicatif's own thread, never blocking the runtime.
                bar.enable_steady_tick(Duration::from_millis(120));
                View::Bar { bar, sized: false }
            }
            OutputFormat::Table => View::Plain {
                last_label: String::new(),
                last_printed: None,
            },
        }
    }

    fn line(&self, text: &str) {
        match self {
            View::Bar { bar, .. } => bar.println(text),
            View::Plain { .. } => println!("{text}"),
            View::Json => print_event(&EventJson::Log { line: text }),
        }
    }

    fn run(&mut self, run: &Run, first: bool, previous: Option<RunState>) {
        let state = run.state();
        if let View::Json = self {
            print_event(&EventJson::Run {
                run: Box::new(RunDetailJson::from(run)),
            });
            return;
        }
        if first {
            self.line(&format!(
                "Watching run {} of task {} on {}: {}",
                run.id,
                run.task_name,
                run.system,
                run_state_word(state)
            ));
            // The log so far, so a late watcher sees the same as an early one.
            for l in &run.log_tail {
                self.line(l);
            }
        } else if previous != Some(state) {
            self.line(&format!(
                "[{}] run {} {}",
                clock(),
                run.id,
                run_state_word(state)
            ));
        }
        if let Some(p) = run.progress.as_ref().filter(|_| !is_final(state)) {
            self.progress(p);
        }
    }

    fn progress(&mut self, p: &Progress) {
        match self {
            View::Json => print_event(&EventJson::Progress(ProgressJson::from(p))),
            View::Bar { bar, sized } => {
                let label = progress_label(p);
                if p.bytes_total > 0 {
                    if !*sized {
                        bar.set_style(style("{spinner} {prefix}: [{bar:30}] {wide_msg}"));
                        *sized = true;
                    }
                    bar.set_length(p.bytes_total);
                    bar.set_position(p.bytes_done.min(p.bytes_total));
                } else if *sized {
                    bar.set_style(style("{spinner} {prefix}: {wide_msg}"));
                    *sized = false;
                }
                let amount = progress_amount(p);
                bar.set_message(if amount.is_empty() {
                    label
                } else {
                    format!("{label}: {amount}")
                });
            }
            View::Plain {
                last_label,
                last_printed,
            } => {
                let label = progress_label(p);
                let due = last_printed.is_none_or(|t| t.elapsed() >= PLAIN_PROGRESS_EVERY);
                if label != *last_label || due {
                    println!("{}", progress_line(&clock(), p));
                    *last_label = label;
                    *last_printed = Some(Instant::now());
                }
            }
        }
    }

    fn finish(&self, run: &Run) {
        match self {
            View::Bar { bar, .. } => bar.finish_and_clear(),
            View::Plain { .. } | View::Json => {}
        }
        // Success gets a closing line on stdout; failure is the error main prints.
        if !matches!(self, View::Json) && matches!(outcome(run), Some(Ok(()))) {
            let mut text = format!("Run {} {}", run.id, run_state_word(run.state()));
            if let Some(took) = duration_text(run) {
                text.push_str(&format!(" in {took}"));
            }
            if run.bytes > 0 {
                text.push_str(&format!(", {} transferred", human_bytes(run.bytes)));
            }
            println!("{text}.");
        }
    }

    fn abandon(&self) {
        if let View::Bar { bar, .. } = self {
            bar.finish_and_clear();
        }
    }
}

fn print_event(event: &EventJson<'_>) {
    match serde_json::to_string(event) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("nasfleet: cannot encode a watch event: {e}"),
    }
}

/// Follows one run until it ends: live progress, log lines, and an exit
/// status that says whether it succeeded. Shared by `run watch` and
/// `snapshot-task run --watch`.
pub async fn watch_run(channel: Channel, id: u64, output: OutputFormat) -> anyhow::Result<()> {
    let mut stream = FleetClient::new(channel.clone())
        .watch_run(RunRef { id })
        .await
        .map_err(status_error)?
        .into_inner();
    let mut view = View::new(output, id);
    let mut state: Option<RunState> = None;
    // A broken stream is not the run's failure: fall back to asking once.
    let stream_error = loop {
        let event = match stream.message().await {
            Ok(Some(event)) => event,
            Ok(None) => break None,
            Err(status) => break Some(status_error(status)),
        };
        match event.body {
            Some(Body::Run(run)) => {
                view.run(&run, state.is_none(), state);
                state = Some(run.state());
                if let Some(result) = outcome(&run) {
                    view.finish(&run);
                    return result;
                }
            }
            Some(Body::Progress(p)) => view.progress(&p),
            Some(Body::LogLine(line)) => view.line(&line),
            // A newer controller may send events this CLI does not know yet.
            None => {}
        }
    };
    let run = match fetch(channel, id).await {
        Ok(run) => run,
        Err(e) => {
            view.abandon();
            return Err(match stream_error {
                Some(watch) => watch.context(format!("watching run {id} broke off")),
                None => e,
            });
        }
    };
    match outcome(&run) {
        Some(result) => {
            view.run(&run, state.is_none(), state);
            view.finish(&run);
            result
        }
        None => {
            view.abandon();
            match stream_error {
                Some(e) => Err(e.context(format!(
                    "watch ended before the run finished; run {id} is {}",
                    run_state_word(run.state())
                ))),
                None => bail!(
                    "watch ended before the run finished; run {id} is {}",
                    run_state_word(run.state())
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn failed_run() -> Run {
        Run {
            id: 12,
            task_id: 7,
            task_name: "nas1:tank/data (auto-%Y-%m-%d_%H-%M)".into(),
            system: "nas1".into(),
            trigger: "manual".into(),
            triggered_by: "admin".into(),
            scheduled_for_unix_ms: 0,
            started_unix_ms: 1_700_000_000_000,
            finished_unix_ms: 1_700_000_003_000,
            state: RunState::Failed as i32,
            reason: "Dataset 'tank/data' does not exist".into(),
            steps: vec![RunStep {
                name: "snapshot".into(),
                state: RunState::Failed as i32,
                detail: "cannot open 'tank/data'".into(),
                bytes: 0,
            }],
            bytes: 0,
            log_tail: vec!["zfs snapshot tank/data@auto-2023-11-14_22-13".into()],
            progress: None,
            task_kind: "snapshot".into(),
            parts: Vec::new(),
        }
    }

    #[test]
    fn run_json_shape() {
        let value = serde_json::to_value(RunJson::from(&failed_run())).unwrap();
        assert_eq!(
            value,
            json!({
                "id": 12,
                "task": "nas1:tank/data (auto-%Y-%m-%d_%H-%M)",
                "task_id": 7,
                "task_kind": "snapshot",
                "system": "nas1",
                "state": "FAILED",
                "reason": "Dataset 'tank/data' does not exist",
                "trigger": "manual",
                "triggered_by": "admin",
                "scheduled_for": null,
                "started": "2023-11-14T22:13:20Z",
                "finished": "2023-11-14T22:13:23Z",
                "bytes": 0,
            })
        );
    }

    #[test]
    fn run_detail_json_adds_steps_and_log() {
        let value = serde_json::to_value(RunDetailJson::from(&failed_run())).unwrap();
        assert_eq!(value["id"], 12);
        assert_eq!(
            value["steps"],
            json!([{"name": "snapshot", "state": "FAILED", "detail": "cannot open 'tank/data'", "bytes": 0}])
        );
        assert_eq!(
            value["log_tail"],
            json!(["zfs snapshot tank/data@auto-2023-11-14_22-13"])
        );
        assert_eq!(value["progress"], json!(null));
    }

    #[test]
    fn running_run_has_no_finish_time() {
        let mut run = failed_run();
        run.state = RunState::Running as i32;
        run.finished_unix_ms = 0;
        run.reason.clear();
        let value = serde_json::to_value(RunJson::from(&run)).unwrap();
        assert_eq!(value["state"], "RUNNING");
        assert_eq!(value["finished"], json!(null));
        assert_eq!(value["reason"], json!(null));
    }

    #[test]
    fn outcomes_follow_the_state() {
        let mut run = failed_run();
        let err = outcome(&run).unwrap().unwrap_err().to_string();
        assert_eq!(err, "Run 12 FAILED: Dataset 'tank/data' does not exist");
        run.state = RunState::Skipped as i32;
        run.reason = "the previous run was still running".into();
        let err = outcome(&run).unwrap().unwrap_err().to_string();
        assert_eq!(err, "Run 12 SKIPPED: the previous run was still running");
        for ok in [RunState::Finished, RunState::Success] {
            run.state = ok as i32;
            assert!(matches!(outcome(&run), Some(Ok(()))));
        }
        for going in [RunState::Pending, RunState::Running] {
            run.state = going as i32;
            assert!(outcome(&run).is_none());
        }
    }

    #[test]
    fn progress_lines() {
        let mut p = Progress {
            phase: "sending".into(),
            bytes_done: 12_897_484,
            bytes_total: 41_943_040,
            bytes_per_second: 4_299_161,
            step: String::new(),
        };
        assert_eq!(
            progress_line("12:00:01", &p),
            "[12:00:01] sending: 12.3M of 40.0M, 4.1M/s"
        );
        p.bytes_total = 0;
        p.step = "tank/data".into();
        assert_eq!(
            progress_line("12:00:01", &p),
            "[12:00:01] sending (tank/data): 12.3M, 4.1M/s"
        );
        let idle = Progress {
            phase: "snapshot".into(),
            ..Progress::default()
        };
        assert_eq!(progress_line("08:15:00", &idle), "[08:15:00] snapshot");
    }

    #[test]
    fn watch_json_lines_are_tagged() {
        let log = serde_json::to_value(EventJson::Log { line: "hello" }).unwrap();
        assert_eq!(log, json!({"event": "log", "line": "hello"}));
        let progress = serde_json::to_value(EventJson::Progress(ProgressJson::from(&Progress {
            phase: "sending".into(),
            bytes_done: 5,
            ..Progress::default()
        })))
        .unwrap();
        assert_eq!(
            progress,
            json!({"event": "progress", "phase": "sending", "step": "", "bytes_done": 5, "bytes_total": null, "bytes_per_second": 0})
        );
        let run = serde_json::to_value(EventJson::Run {
            run: Box::new(RunDetailJson::from(&failed_run())),
        })
        .unwrap();
        assert_eq!(run["event"], "run");
        assert_eq!(run["run"]["state"], "FAILED");
    }

    #[test]
    fn elapsed_is_short() {
        assert_eq!(human_elapsed(3_000), "3s");
        assert_eq!(human_elapsed(125_000), "2m05s");
        assert_eq!(human_elapsed(3_720_000), "1h02m");
    }

    #[test]
    fn list_truncates_reasons() {
        let mut run = failed_run();
        run.reason = "x".repeat(200);
        let table = runs_table(&[run]);
        let row = table.lines().nth(1).unwrap_or_default();
        assert!(row.ends_with('…'), "{row}");
        assert!(!row.contains(&"x".repeat(REASON_CELL)), "{row}");
    }

    #[test]
    fn show_text_has_steps_and_log() {
        let text = run_detail_text(&failed_run());
        assert!(text.contains("State:        FAILED"), "{text}");
        assert!(text.contains("Trigger:      manual by admin"), "{text}");
        assert!(text.contains("Duration:     3s"), "{text}");
        assert!(text.contains("snapshot  FAILED"), "{text}");
        assert!(
            text.contains("  zfs snapshot tank/data@auto-2023-11-14_22-13"),
            "{text}"
        );
    }

    #[test]
    fn multi_system_runs_show_their_parts() {
        let mut run = failed_run();
        run.parts = vec![
            RunPart {
                system: "nas1".into(),
                state: RunState::Finished as i32,
                reason: String::new(),
            },
            RunPart {
                system: "nas3".into(),
                state: RunState::Failed as i32,
                reason: "[EACCES] Unable to connect to port 22 on 127.0.0.3".into(),
            },
        ];
        let text = run_detail_text(&run);
        assert!(text.contains("Systems:"), "{text}");
        assert!(
            text.contains("  nas3    FAILED    [EACCES] Unable to connect"),
            "{text}"
        );
        let value = serde_json::to_value(RunDetailJson::from(&run)).unwrap();
        assert_eq!(
            value["parts"],
            json!([
                {"system": "nas1", "state": "FINISHED", "reason": null},
                {"system": "nas3", "state": "FAILED", "reason": "[EACCES] Unable to connect to port 22 on 127.0.0.3"},
            ])
        );
    }
}
