//! `nasfleet run list|show|watch|cancel`: the history of task runs, live progress of one run, and cancelling it.

use super::status_error;
use crate::context::Context;
use crate::failure::RunFailed;
use crate::output::{OutputFormat, Table, cell, human_bytes, print_json, time_or_dash};
use anyhow::{Context as _, anyhow};
use chrono::Local;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nasfleet_common::status::{rfc3339_from_unix_ms, run_state_word, task_kind_word, trigger_word};
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

#[derive(Subcommand)]
pub enum RunCommand {
    /// Recent runs, newest first.
    List {
        /// Only runs of this task (id or name).
        #[arg(long)]
        task: Option<String>,
        /// How many runs (default: the controller's, 20).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// One run with its steps and log.
    Show { id: u64 },
    /// Follow a run live until it ends; exits non-zero unless it succeeded.
    Watch { id: u64 },
    /// Ask the controller to cancel a run.
    Cancel { id: u64 },
}

impl RunCommand {
    /// Runs one `run` subcommand; clap has checked its flags already.
    pub async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        let channel = ctx.connect().await?;
        let output = ctx.output;
        match self {
            RunCommand::List { task, limit } => list(channel, task.as_deref(), limit, output).await,
            RunCommand::Show { id } => show(channel, id, output).await,
            RunCommand::Watch { id } => watch_run(channel, id, output).await,
            RunCommand::Cancel { id } => cancel(channel, id, output).await,
        }
    }
}

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
            task_kind: task_kind_word(r.task_kind()).to_owned(),
            system: r.system.clone(),
            state: run_state_word(r.state()),
            reason: text(&r.reason),
            trigger: trigger_word(r.trigger()).to_owned(),
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
/// still going, `Some(Ok)` for success, `Some(Err(RunFailed))` otherwise.
pub fn outcome(run: &Run) -> Option<anyhow::Result<()>> {
    let state = run.state();
    match state {
        RunState::Finished | RunState::Success => Some(Ok(())),
        RunState::Failed | RunState::Skipped | RunState::Missed => {
            Some(Err(anyhow::Error::new(RunFailed {
                id: run.id,
                state: run_state_word(state),
                reason: run.reason.trim().to_owned(),
            })))
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
    // A step's cue names it in both fields; once is enough.
    if p.step.trim().is_empty() || p.step.trim() == phase {
        phase.to_owned()
    } else {
        format!("{phase} ({})", p.step.trim())
    }
}

/// `12.3M of 40.0M (30%), 4.1M/s, 7s left`, or less when the agent knows
/// less (no total: no percentage and no time left).
fn progress_amount(p: &Progress) -> String {
    let mut out = String::new();
    if p.bytes_done > 0 || p.bytes_total > 0 {
        out.push_str(&human_bytes(p.bytes_done));
        if p.bytes_total > 0 {
            // An estimate can fall short of what moves: never past 100 %.
            let percent =
                (p.bytes_done.min(p.bytes_total) as f64 / p.bytes_total as f64 * 100.0).floor();
            out.push_str(&format!(" of {} ({percent}%)", human_bytes(p.bytes_total)));
        }
    }
    if p.bytes_per_second > 0 {
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(&human_bytes(p.bytes_per_second));
        out.push_str("/s");
        if p.bytes_total > p.bytes_done {
            let left = (p.bytes_total - p.bytes_done).div_ceil(p.bytes_per_second);
            out.push_str(&format!(", {} left", human_seconds(left)));
        }
    }
    out
}

/// `7s`, `2m05s`, `1h02m`: a time left, as precise as it is worth.
fn human_seconds(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
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
                    Some(task) => outln!("Task '{task}' has not run yet.")?,
                    None => outln!("No runs yet.")?,
                }
                return Ok(());
            }
            outln!("{}", runs_table(&runs))?;
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
            trigger_word(r.trigger()).into(),
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
            outln!("Run {} had already ended.\n", run.id)?;
        } else {
            outln!("Cancellation of run {} requested.\n", run.id)?;
        }
    }
    print_run(&run, output)
}

fn print_run(run: &Run, output: OutputFormat) -> anyhow::Result<()> {
    match output {
        OutputFormat::Json => print_json(&RunDetailJson::from(run)),
        OutputFormat::Table => {
            outln!("{}", run_detail_text(run))?;
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
            match task_kind_word(r.task_kind()) {
                "" => String::new(),
                kind => format!(", {kind}"),
            }
        ),
        format!("System:       {}", r.system),
        format!("State:        {}", run_state_word(r.state())),
    ];
    if !r.reason.is_empty() {
        lines.push(format!("Reason:       {}", r.reason));
    }
    let trigger = trigger_word(r.trigger());
    let trigger = if r.triggered_by.is_empty() {
        trigger.to_owned()
    } else {
        format!("{trigger} by {}", r.triggered_by)
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

/// The agent announces each step start and end as a progress report whose
/// phase is the step's name and which carries no figures. The watch stream
/// does not carry the step itself, so such a report is the cue to read the
/// run's steps (see [`StepLog`]) rather than a progress line of its own.
pub fn is_step_cue(p: &Progress) -> bool {
    !p.step.trim().is_empty()
        && p.phase.trim() == p.step.trim()
        && p.bytes_done == 0
        && p.bytes_total == 0
        && p.bytes_per_second == 0
}

/// `[06:00:27] nas2 snapshot started`.
pub fn step_start_line(clock: &str, step: &RunStep) -> String {
    format!("[{clock}] {} started", step.name)
}

/// `[06:00:29] nas2 snapshot FINISHED (1.2M): created tank/data@auto-…`: the
/// outcome and what the agent reported about it.
pub fn step_end_line(clock: &str, step: &RunStep) -> String {
    let mut line = format!("[{clock}] {} {}", step.name, run_state_word(step.state()));
    if step.bytes > 0 {
        line.push_str(&format!(" ({})", human_bytes(step.bytes)));
    }
    let detail = step.detail.trim();
    if !detail.is_empty() {
        line.push_str(": ");
        line.push_str(detail);
    }
    line
}

/// Which step starts and ends `watch` has printed, so each is printed once
/// however often the run's steps are read.
#[derive(Default)]
pub struct StepLog {
    /// Step name and whether its end was printed, in order of appearance.
    printed: Vec<(String, bool)>,
}

impl StepLog {
    /// The lines for what changed in `steps` since the last call.
    pub fn update(&mut self, clock: &str, steps: &[RunStep]) -> Vec<String> {
        let mut lines = Vec::new();
        for step in steps {
            let ended = is_final(step.state());
            let index = match self.printed.iter().position(|(name, _)| *name == step.name) {
                Some(index) => index,
                None => {
                    if !ended {
                        lines.push(step_start_line(clock, step));
                    }
                    self.printed.push((step.name.clone(), false));
                    self.printed.len() - 1
                }
            };
            let end_printed = &mut self.printed[index].1;
            if ended && !*end_printed {
                lines.push(step_end_line(clock, step));
                *end_printed = true;
            }
        }
        lines
    }
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

    /// Step lines are for people; `-o json` has the steps in its run events.
    fn shows_steps(&self) -> bool {
        !matches!(self, View::Json)
    }

    fn line(&self, text: &str) -> anyhow::Result<()> {
        match self {
            View::Bar { bar, .. } => {
                bar.println(text);
                Ok(())
            }
            View::Plain { .. } => outln!("{text}"),
            View::Json => print_event(&EventJson::Log { line: text }),
        }
    }

    fn steps(&self, log: &mut StepLog, steps: &[RunStep]) -> anyhow::Result<()> {
        if self.shows_steps() {
            for line in log.update(&clock(), steps) {
                self.line(&line)?;
            }
        }
        Ok(())
    }

    fn run(
        &mut self,
        run: &Run,
        first: bool,
        previous: Option<RunState>,
        log: &mut StepLog,
    ) -> anyhow::Result<()> {
        let state = run.state();
        if let View::Json = self {
            return print_event(&EventJson::Run {
                run: Box::new(RunDetailJson::from(run)),
            });
        }
        if first {
            self.line(&format!(
                "Watching run {} of task {} on {}: {}",
                run.id,
                run.task_name,
                run.system,
                run_state_word(state)
            ))?;
            // The log so far, so a late watcher sees the same as an early one.
            for l in &run.log_tail {
                self.line(l)?;
            }
        }
        self.steps(log, &run.steps)?;
        // A success ends with its own summary line (see `finish`).
        if !first && previous != Some(state) && !matches!(outcome(run), Some(Ok(()))) {
            self.line(&format!(
                "[{}] run {} {}",
                clock(),
                run.id,
                run_state_word(state)
            ))?;
        }
        match run.progress.as_ref().filter(|_| !is_final(state)) {
            Some(p) => self.progress(p),
            None => Ok(()),
        }
    }

    fn progress(&mut self, p: &Progress) -> anyhow::Result<()> {
        match self {
            View::Json => print_event(&EventJson::Progress(ProgressJson::from(p)))?,
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
            // Step lines say when a step starts and ends.
            View::Plain { .. } if is_step_cue(p) => {}
            View::Plain {
                last_label,
                last_printed,
            } => {
                let label = progress_label(p);
                let due = last_printed.is_none_or(|t| t.elapsed() >= PLAIN_PROGRESS_EVERY);
                if label != *last_label || due {
                    outln!("{}", progress_line(&clock(), p))?;
                    *last_label = label;
                    *last_printed = Some(Instant::now());
                }
            }
        }
        Ok(())
    }

    fn finish(&self, run: &Run) -> anyhow::Result<()> {
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
            outln!("{text}.")?;
        }
        Ok(())
    }

    fn abandon(&self) {
        if let View::Bar { bar, .. } = self {
            bar.finish_and_clear();
        }
    }
}

fn print_event(event: &EventJson<'_>) -> anyhow::Result<()> {
    let text = serde_json::to_string(event).context("cannot encode a watch event")?;
    outln!("{text}")
}

/// Follows one run until it ends: live progress, log lines, and an exit
/// status that says whether it succeeded. Shared by `run watch` and
/// `snapshot-task run --watch`.
pub async fn watch_run(channel: Channel, id: u64, output: OutputFormat) -> anyhow::Result<()> {
    let mut view = View::new(output, id);
    let result = follow(channel, id, &mut view).await;
    if result.is_err() {
        view.abandon();
    }
    result
}

async fn follow(channel: Channel, id: u64, view: &mut View) -> anyhow::Result<()> {
    let mut stream = FleetClient::new(channel.clone())
        .watch_run(RunRef { id })
        .await
        .map_err(status_error)?
        .into_inner();
    let mut steps = StepLog::default();
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
                view.run(&run, state.is_none(), state, &mut steps)?;
                state = Some(run.state());
                if let Some(result) = outcome(&run) {
                    view.finish(&run)?;
                    return result;
                }
            }
            Some(Body::Progress(p)) => {
                if is_step_cue(&p) && view.shows_steps() {
                    // Only a cue: when the run cannot be read, its final
                    // record still brings every step's end.
                    if let Ok(run) = fetch(channel.clone(), id).await {
                        view.steps(&mut steps, &run.steps)?;
                    }
                }
                view.progress(&p)?;
            }
            Some(Body::LogLine(line)) => view.line(&line)?,
            // A newer controller may send events this CLI does not know yet.
            None => {}
        }
    };
    let run = match fetch(channel, id).await {
        Ok(run) => run,
        Err(e) => {
            return Err(match stream_error {
                Some(watch) => watch.context(format!("watching run {id} broke off")),
                None => e,
            });
        }
    };
    match outcome(&run) {
        Some(result) => {
            view.run(&run, state.is_none(), state, &mut steps)?;
            view.finish(&run)?;
            result
        }
        None => {
            let ended = format!(
                "watch ended before the run finished; run {id} is {}",
                run_state_word(run.state())
            );
            match stream_error {
                Some(e) => Err(e.context(ended)),
                None => Err(anyhow!(ended)),
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
            trigger: nasfleet_proto::v1::RunTrigger::Manual.into(),
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
            task_kind: nasfleet_proto::v1::TaskKind::Snapshot.into(),
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
            "[12:00:01] sending: 12.3M of 40.0M (30%), 4.1M/s, 7s left"
        );
        p.bytes_per_second = 100_000;
        assert_eq!(
            progress_line("12:00:01", &p),
            "[12:00:01] sending: 12.3M of 40.0M (30%), 97.7K/s, 4m51s left"
        );
        p.bytes_done = 50_000_000;
        assert_eq!(
            progress_line("12:00:01", &p),
            "[12:00:01] sending: 47.7M of 40.0M (100%), 97.7K/s"
        );
        assert_eq!(human_seconds(3725), "1h02m");
        p.bytes_done = 12_897_484;
        p.bytes_per_second = 4_299_161;
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

    fn step(name: &str, state: RunState, detail: &str, bytes: u64) -> RunStep {
        RunStep {
            name: name.into(),
            state: state as i32,
            detail: detail.into(),
            bytes,
        }
    }

    #[test]
    fn a_step_is_one_line_when_it_starts_and_one_when_it_ends() {
        let running = step("nas2 snapshot", RunState::Running, "", 0);
        assert_eq!(
            step_start_line("06:00:27", &running),
            "[06:00:27] nas2 snapshot started"
        );
        let done = step(
            "nas2 snapshot",
            RunState::Finished,
            "created tank/data@auto-2026-11-30_06-00",
            0,
        );
        assert_eq!(
            step_end_line("06:00:28", &done),
            "[06:00:28] nas2 snapshot FINISHED: created tank/data@auto-2026-11-30_06-00"
        );
        let sent = step("nas1:tank/a", RunState::Finished, "", 1_572_864);
        assert_eq!(
            step_end_line("06:00:31", &sent),
            "[06:00:31] nas1:tank/a FINISHED (1.5M)"
        );
        let failed = step("retention", RunState::Failed, "cannot destroy x", 0);
        assert_eq!(
            step_end_line("06:00:32", &failed),
            "[06:00:32] retention FAILED: cannot destroy x"
        );
    }

    #[test]
    fn step_log_prints_each_start_and_end_once() {
        let mut log = StepLog::default();
        let running = step("nas2 snapshot", RunState::Running, "", 0);
        assert_eq!(
            log.update("06:00:27", std::slice::from_ref(&running)),
            ["[06:00:27] nas2 snapshot started"]
        );
        // The same state read again (the agent's second cue, a run event).
        assert!(
            log.update("06:00:27", std::slice::from_ref(&running))
                .is_empty()
        );
        let done = step("nas2 snapshot", RunState::Finished, "created 1", 0);
        let next = step("retention", RunState::Finished, "destroyed 0", 0);
        assert_eq!(
            log.update("06:00:28", &[done.clone(), next.clone()]),
            [
                "[06:00:28] nas2 snapshot FINISHED: created 1",
                // Started and ended between two reads: its end says enough.
                "[06:00:28] retention FINISHED: destroyed 0",
            ]
        );
        assert!(log.update("06:00:29", &[done, next]).is_empty());
    }

    #[test]
    fn step_cues_are_told_from_progress() {
        let cue = Progress {
            phase: "nas2 snapshot".into(),
            step: "nas2 snapshot".into(),
            ..Progress::default()
        };
        assert!(is_step_cue(&cue));
        // Named once where a cue is shown as progress (`run show`).
        assert_eq!(progress_line("06:00:27", &cue), "[06:00:27] nas2 snapshot");
        let sending = Progress {
            phase: "sending tank/a@s1".into(),
            step: "nas1:tank/a".into(),
            bytes_done: 10,
            ..Progress::default()
        };
        assert!(!is_step_cue(&sending));
        let rsync = Progress {
            phase: "rsync: 0 file(s)".into(),
            step: "rsync".into(),
            ..Progress::default()
        };
        assert!(!is_step_cue(&rsync));
    }
}
