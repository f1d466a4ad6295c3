//! The Replication screen: the task list with statuses, Run Now, edit and delete, and the four-step New Replication Task wizard (Sources, Target, Scheduler, Confirmation) whose state travels in the form and whose checks are the controller's own.

use super::ConsoleState;
use super::error::PageResult;
use super::form::FormData;
use super::layout::{self, Nav, csrf, field_error, page_number, paged};
use super::session::Person;
use super::task_tables::{
    replication_table, save_call, save_task, seen_task, with_hidden_settings,
};
use crate::api::subjects;
use crate::auth::Call;
use crate::engine::access::Access;
use crate::engine::error::FleetError;
use crate::engine::{systems, tasks};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use nasfleet_common::naming::DEFAULT_PERIODIC_SCHEMA;
use nasfleet_common::rate::human_bytes;
use nasfleet_common::replication_rules::{
    check_source, check_target, check_task_name, effective_schemas,
};
use nasfleet_common::replication_summary::{replication_spec, summary_lines};
use nasfleet_common::schedule::{Preset, Schedule};
use nasfleet_proto::v1::task_spec::Kind;
use nasfleet_proto::v1::{ReplicationSource, ReplicationTaskSpec, Task, TaskKind, TaskSpec};
use std::collections::HashMap;

pub async fn list(
    State(console): State<ConsoleState>,
    person: Person,
    Query(query): Query<HashMap<String, String>>,
) -> PageResult {
    person.allow(&console, Call::ListTasks, "").await?;
    let tasks = tasks::list(&console.state, &person.actor, TaskKind::Replication)?;
    let (shown, pager) = paged(&tasks, page_number(&query, "page"), "/replication", "page");
    let operate = person.can(Access::Operate);
    let body = html! {
        @if operate {
            p { a.button.primary href="/replication/wizard" #add-replication { "ADD REPLICATION TASK" } }
        }
        (replication_table(&console, &person, shown, "/replication"))
        (pager)
    };
    Ok(layout::page(
        &person,
        Nav::Replication,
        "Replication Tasks",
        body,
    ))
}

/// One source as the wizard holds it.
#[derive(Debug, Clone, Default)]
struct DraftSource {
    system: String,
    datasets: Vec<String>,
    recursive: bool,
    schema: String,
}

/// Everything the wizard has been told so far.
#[derive(Debug, Clone)]
struct Draft {
    /// The task being edited; `None` makes a new one.
    editing: Option<u64>,
    name: String,
    sources: Vec<DraftSource>,
    target_system: String,
    target_dataset: String,
    period: String,
    weekday: String,
    monthday: String,
    hour: String,
    minute: String,
}

impl Default for Draft {
    fn default() -> Self {
        Draft {
            editing: None,
            name: String::new(),
            sources: vec![DraftSource {
                schema: DEFAULT_PERIODIC_SCHEMA.to_owned(),
                recursive: false,
                ..Default::default()
            }],
            target_system: String::new(),
            target_dataset: String::new(),
            // The seeds' default: weekly, Sunday 00:00.
            period: "weekly".into(),
            weekday: "sun".into(),
            monthday: "1".into(),
            hour: "0".into(),
            minute: "0".into(),
        }
    }
}

/// Sources a wizard may hold; a form beyond it is refused, not grown.
const MAX_SOURCES: usize = 32;
const WEEKDAYS: [(&str, &str); 7] = [
    ("sun", "Sunday"),
    ("mon", "Monday"),
    ("tue", "Tuesday"),
    ("wed", "Wednesday"),
    ("thu", "Thursday"),
    ("fri", "Friday"),
    ("sat", "Saturday"),
];

impl Draft {
    fn from_form(form: &FormData) -> Draft {
        let count = form
            .text("sources")
            .parse::<usize>()
            .unwrap_or(1)
            .clamp(1, MAX_SOURCES);
        Draft {
            editing: form.text("editing").parse().ok(),
            name: form.text("name"),
            sources: (0..count)
                .map(|i| DraftSource {
                    system: form.text(&format!("src{i}_system")),
                    datasets: form
                        .all(&format!("src{i}_dataset"))
                        .into_iter()
                        .map(|d| d.trim().to_owned())
                        .filter(|d| !d.is_empty())
                        .collect(),
                    recursive: form.checked(&format!("src{i}_recursive")),
                    schema: form.text(&format!("src{i}_schema")),
                })
                .collect(),
            target_system: form.text("target_system"),
            target_dataset: form.text("target_dataset"),
            period: form.text("period"),
            weekday: form.text("weekday"),
            monthday: form.text("monthday"),
            hour: form.text("hour"),
            minute: form.text("minute"),
        }
    }

    fn from_task(task: &Task) -> Draft {
        let spec = replication_spec(task);
        let mut draft = Draft {
            editing: Some(task.id),
            name: spec.name.clone(),
            sources: spec
                .sources
                .iter()
                .map(|s| DraftSource {
                    system: s.system.clone(),
                    datasets: s.datasets.clone(),
                    recursive: s.recursive,
                    schema: effective_schemas(s).join(","),
                })
                .collect(),
            target_system: spec.target_system.clone(),
            target_dataset: spec.target_dataset.clone(),
            ..Draft::default()
        };
        // A schedule the four fields can say is shown in them; any other
        // (a cron expression from the CLI) is kept as it is unless changed.
        let fields: Vec<&str> = task.schedule.split_whitespace().collect();
        if let [minute, hour, dom, "*", dow] = fields[..] {
            draft.minute = minute.to_owned();
            draft.hour = hour.to_owned();
            match (dom, dow) {
                ("*", "*") => draft.period = "daily".into(),
                ("*", day) => {
                    draft.period = "weekly".into();
                    draft.weekday = day.to_owned();
                }
                (day, "*") => {
                    draft.period = "monthly".into();
                    draft.monthday = day.to_owned();
                }
                _ => {}
            }
            if hour == "*" {
                draft.period = "hourly".into();
                draft.hour = "0".into();
            }
        }
        draft
    }

    fn spec(&self) -> ReplicationTaskSpec {
        ReplicationTaskSpec {
            name: self.name.clone(),
            sources: self
                .sources
                .iter()
                .map(|s| ReplicationSource {
                    system: s.system.clone(),
                    datasets: s.datasets.clone(),
                    recursive: s.recursive,
                    naming_schemas: s
                        .schema
                        .split(',')
                        .map(|x| x.trim().to_owned())
                        .filter(|x| !x.is_empty())
                        .collect(),
                })
                .collect(),
            target_system: self.target_system.clone(),
            target_dataset: self.target_dataset.clone(),
            ..Default::default()
        }
    }

    /// The schedule the Scheduler step describes, with the CLI's rules and
    /// words (`period`, `day`, `at`).
    fn schedule(&self) -> Result<Schedule, FleetError> {
        let period: Preset =
            self.period
                .parse()
                .map_err(|e: nasfleet_common::schedule::ScheduleError| {
                    FleetError::invalid_message(&e.to_string())
                })?;
        let day = match period {
            Preset::Weekly => Some(self.weekday.as_str()),
            Preset::Monthly => Some(self.monthday.as_str()),
            Preset::Hourly | Preset::Daily => None,
        };
        let at = match period {
            Preset::Hourly => self.minute.clone(),
            _ => format!("{}:{:0>2}", self.hour, self.minute),
        };
        Schedule::from_period(period, day, Some(&at))
            .map_err(|e| FleetError::invalid_message(&e.to_string()))
    }

    fn task_spec(&self) -> Result<TaskSpec, FleetError> {
        Ok(TaskSpec {
            schedule: self.schedule()?.expression().to_owned(),
            enabled: true,
            kind: Some(Kind::Replication(self.spec())),
            ..Default::default()
        })
    }
}

/// The wizard step a field's error belongs on.
fn step_of(field: &str) -> u8 {
    match field {
        "name" | "sources" | "system" | "datasets" | "naming_schema" | "recursive" => 1,
        f if f.starts_with("sources") => 1,
        "target" | "target_system" | "target_dataset" => 2,
        "schedule" | "period" | "day" | "at" | "cron" | "timezone" => 3,
        _ => 4,
    }
}

/// Checks a step with the rules the controller applies, as field errors.
fn check_step(draft: &Draft, step: u8) -> Vec<(String, String)> {
    let spec = draft.spec();
    let mut errors = Vec::new();
    let mut push = |field: &str, message: String| errors.push((field.to_owned(), message));
    match step {
        1 => {
            if let Err(e) = check_task_name(&spec.name) {
                push(e.field(), e.to_string());
            }
            for source in &spec.sources {
                if let Err(e) = check_source(source) {
                    push(e.field(), e.to_string());
                }
            }
        }
        2 => {
            if let Err(e) = check_target(&spec) {
                push(e.field(), e.to_string());
            }
        }
        3 => {
            if let Err(FleetError::Invalid { field, rule }) = draft.schedule() {
                push(&field, format!("{field}: {rule}"));
            }
        }
        _ => {}
    }
    errors
}

pub async fn wizard_start(State(console): State<ConsoleState>, person: Person) -> PageResult {
    person
        .allow(&console, Call::ValidateTask, &subjects::task(""))
        .await?;
    wizard(&console, &person, &Draft::default(), 1, &[]).await
}

pub async fn edit(
    State(console): State<ConsoleState>,
    person: Person,
    Path(id): Path<u64>,
) -> PageResult {
    let task = seen_task(
        &console,
        &person,
        id,
        Call::UpdateTask,
        TaskKind::Replication,
    )
    .await?;
    wizard(&console, &person, &Draft::from_task(&task), 1, &[]).await
}

pub async fn wizard_step(
    State(console): State<ConsoleState>,
    person: Person,
    form: FormData,
) -> PageResult<Response> {
    let mut draft = Draft::from_form(&form);
    let step: u8 = form.text("step").parse().unwrap_or(1).clamp(1, 4);
    let go = form.text("go");
    let (call, reference) = save_call(draft.editing);
    person
        .allow(&console, call, &subjects::task(&reference))
        .await?;
    let next = match go.as_str() {
        "add_source" => {
            if draft.sources.len() < MAX_SOURCES {
                draft.sources.push(DraftSource {
                    schema: DEFAULT_PERIODIC_SCHEMA.to_owned(),
                    ..Default::default()
                });
            }
            step
        }
        "next" => {
            let errors = check_step(&draft, step);
            if !errors.is_empty() {
                return wizard(&console, &person, &draft, step, &errors).await;
            }
            (step + 1).min(4)
        }
        "back" => step.saturating_sub(1).max(1),
        "confirm" => return confirm(&console, &person, &draft).await,
        other => match other
            .strip_prefix("remove_source_")
            .and_then(|i| i.parse::<usize>().ok())
        {
            Some(i) if i < draft.sources.len() && draft.sources.len() > 1 => {
                draft.sources.remove(i);
                step
            }
            _ => other
                .strip_prefix("step")
                .and_then(|n| n.parse::<u8>().ok())
                .map(|n| n.clamp(1, 4))
                .unwrap_or(step),
        },
    };
    wizard(&console, &person, &draft, next, &[]).await
}

async fn confirm(console: &ConsoleState, person: &Person, draft: &Draft) -> PageResult<Response> {
    let spec = match draft.task_spec() {
        Ok(spec) => spec,
        Err(e) => return wizard_error(console, person, draft, e).await,
    };
    match save_task(console, person, draft.editing, spec).await {
        Ok(_) => Ok(Redirect::to("/replication").into_response()),
        Err(e @ FleetError::Invalid { .. }) => wizard_error(console, person, draft, e).await,
        Err(e) => Err(e.into()),
    }
}

/// Shows a rule the controller refused on the step its field is on.
async fn wizard_error(
    console: &ConsoleState,
    person: &Person,
    draft: &Draft,
    error: FleetError,
) -> PageResult<Response> {
    let field = match &error {
        FleetError::Invalid { field, .. } => field.clone(),
        _ => String::new(),
    };
    let step = step_of(&field);
    wizard(console, person, draft, step, &[(field, error.to_string())]).await
}

/// The hidden fields that carry every step's answers through the others.
fn carried(draft: &Draft, shown: u8) -> Markup {
    html! {
        input type="hidden" name="sources" value=(draft.sources.len());
        @if let Some(id) = draft.editing { input type="hidden" name="editing" value=(id); }
        @if shown != 1 {
            input type="hidden" name="name" value=(draft.name);
            @for (i, s) in draft.sources.iter().enumerate() {
                input type="hidden" name={ "src" (i) "_system" } value=(s.system);
                @for d in &s.datasets { input type="hidden" name={ "src" (i) "_dataset" } value=(d); }
                @if s.recursive { input type="hidden" name={ "src" (i) "_recursive" } value="on"; }
                input type="hidden" name={ "src" (i) "_schema" } value=(s.schema);
            }
        }
        @if shown != 2 {
            input type="hidden" name="target_system" value=(draft.target_system);
            input type="hidden" name="target_dataset" value=(draft.target_dataset);
        }
        @if shown != 3 {
            input type="hidden" name="period" value=(draft.period);
            input type="hidden" name="weekday" value=(draft.weekday);
            input type="hidden" name="monthday" value=(draft.monthday);
            input type="hidden" name="hour" value=(draft.hour);
            input type="hidden" name="minute" value=(draft.minute);
        }
    }
}

const STEPS: [&str; 4] = ["Sources", "Target", "Scheduler", "Confirmation"];

async fn wizard(
    console: &ConsoleState,
    person: &Person,
    draft: &Draft,
    step: u8,
    errors: &[(String, String)],
) -> PageResult<Response> {
    let system_names = person.system_names(console)?;
    let content = match step {
        1 => sources_step(console, person, draft, &system_names, errors).await?,
        2 => target_step(console, person, draft, &system_names, errors).await?,
        3 => scheduler_step(draft, errors),
        _ => confirmation_step(console, person, draft).await,
    };
    let title = if draft.editing.is_some() {
        "Edit Replication Task"
    } else {
        "New Replication Task"
    };
    let body = html! {
        ol.steps #wizard-steps {
            @for (i, label) in STEPS.iter().enumerate() {
                @let n = (i + 1) as u8;
                li class=[(n == step).then_some("current")] {
                    button.link form="wizard" type="submit" name="go" value={ "step" (n) } data-step=(n) { (n) ". " (label) }
                }
            }
        }
        form.wizard #wizard method="post" action="/replication/wizard" data-step=(step) {
            (csrf(person))
            input type="hidden" name="step" value=(step);
            (carried(draft, step))
            @for (field, message) in errors {
                @if step_of(field) == 4 || step == 4 { p.error.wizard-error data-field=(field) { (message) } }
            }
            (content)
            div.actions {
                @if step > 1 { button type="submit" name="go" value="back" #wizard-back { "BACK" } }
                @if step < 4 { button.primary type="submit" name="go" value="next" #wizard-next { "NEXT" } }
                @if step == 4 { button.primary type="submit" name="go" value="confirm" #wizard-confirm { "CONFIRM" } }
            }
        }
    };
    Ok(layout::page(person, Nav::Replication, title, body))
}

async fn sources_step(
    console: &ConsoleState,
    person: &Person,
    draft: &Draft,
    system_names: &[String],
    errors: &[(String, String)],
) -> PageResult<Markup> {
    let mut blocks = Vec::new();
    for (i, source) in draft.sources.iter().enumerate() {
        let datasets = if source.system.is_empty() {
            Vec::new()
        } else {
            dataset_names(console, person, &source.system).await
        };
        blocks.push(html! {
            fieldset.source data-source=(i) {
                legend { "Source " (i + 1) }
                label { "System"
                    select name={ "src" (i) "_system" } data-reload="true" {
                        option value="" { "Choose a system" }
                        @for name in system_names {
                            option value=(name) selected[*name == source.system] { (name) }
                        }
                    }
                }
                button type="submit" name="go" value="pick" .reload { "SHOW DATASETS" }
                div.tree data-source-tree=(i) {
                    @if source.system.is_empty() { p.muted { "Choose a system to pick its datasets." } }
                    @for name in &datasets {
                        @let depth = name.matches('/').count();
                        label.node data-dataset=(name) data-depth=(depth) {
                            input type="checkbox" name={ "src" (i) "_dataset" } value=(name)
                                checked[source.datasets.contains(name)];
                            span { (name) }
                        }
                    }
                    // Datasets already chosen that the inventory does not list.
                    @for name in source.datasets.iter().filter(|d| !datasets.contains(d)) {
                        label.node.missing { input type="checkbox" name={ "src" (i) "_dataset" } value=(name) checked; span { (name) " (not in the inventory)" } }
                    }
                }
                label.check { input type="checkbox" name={ "src" (i) "_recursive" } checked[source.recursive]; "Recursive" }
                label { "Naming schema" input name={ "src" (i) "_schema" } value=(source.schema); }
                @if draft.sources.len() > 1 {
                    button type="submit" name="go" value={ "remove_source_" (i) } { "REMOVE SOURCE" }
                }
            }
        });
    }
    Ok(html! {
        label { "Name" input #task-name name="name" value=(draft.name) placeholder="offsite"; }
        (field_error(errors, "name"))
        @for block in blocks { (block) }
        (field_error(errors, "sources"))
        (field_error(errors, "system"))
        (field_error(errors, "datasets"))
        (field_error(errors, "naming_schema"))
        button type="submit" name="go" value="add_source" #add-source { "ADD SOURCE" }
    })
}

/// The datasets a system's inventory lists; none when it cannot be read
/// (the step then says so through the empty tree).
async fn dataset_names(console: &ConsoleState, person: &Person, system: &str) -> Vec<String> {
    match systems::datasets(&console.state, &person.actor, system, false).await {
        Ok(list) => list
            .into_iter()
            .filter_map(|d| d.dataset.map(|d| d.name))
            .collect(),
        Err(_) => Vec::new(),
    }
}

async fn target_step(
    console: &ConsoleState,
    person: &Person,
    draft: &Draft,
    system_names: &[String],
    errors: &[(String, String)],
) -> PageResult<Markup> {
    let known = if draft.target_system.is_empty() {
        Vec::new()
    } else {
        dataset_names(console, person, &draft.target_system).await
    };
    Ok(html! {
        label { "System"
            select #target-system name="target_system" {
                option value="" { "Choose a system" }
                @for name in system_names {
                    option value=(name) selected[*name == draft.target_system] { (name) }
                }
            }
        }
        (field_error(errors, "target_system"))
        label { "Dataset" input #target-dataset name="target_dataset" value=(draft.target_dataset) list="target-datasets" placeholder="backup"; }
        datalist #target-datasets { @for name in &known { option value=(name) {} } }
        (field_error(errors, "target_dataset"))
        (field_error(errors, "target"))
        p.hint { "Each source dataset lands at TARGET/SOURCE-SYSTEM/DATASET." }
    })
}

fn scheduler_step(draft: &Draft, errors: &[(String, String)]) -> Markup {
    html! {
        label { "Period"
            select #period name="period" {
                @for p in Preset::ALL {
                    option value=(p.name()) selected[p.name() == draft.period] { (p.name()) }
                }
            }
        }
        (field_error(errors, "period"))
        label data-period="weekly" { "Day of week"
            select #weekday name="weekday" {
                @for (value, label) in WEEKDAYS {
                    option value=(value) selected[value == draft.weekday] { (label) }
                }
            }
        }
        label data-period="monthly" { "Day of month" input #monthday name="monthday" value=(draft.monthday) size="3"; }
        (field_error(errors, "day"))
        div.row {
            label data-period="daily weekly monthly" { "Hour"
                select #hour name="hour" { @for h in 0..24 { option value=(h) selected[h.to_string() == draft.hour] { (format!("{h:02}")) } } }
            }
            label { "Minute"
                select #minute name="minute" { @for m in 0..60 { option value=(m) selected[m.to_string() == draft.minute] { (format!("{m:02}")) } } }
            }
        }
        (field_error(errors, "at"))
        (field_error(errors, "schedule"))
    }
}

async fn confirmation_step(console: &ConsoleState, person: &Person, draft: &Draft) -> Markup {
    let reference = draft.editing.map(|id| id.to_string()).unwrap_or_default();
    let spec = draft
        .task_spec()
        .and_then(|spec| with_hidden_settings(console, draft.editing, spec));
    let checked = match spec {
        Ok(spec) => tasks::check(
            &console.state,
            &person.actor,
            &reference,
            Some(spec.clone()),
        )
        .await
        .map(|task| (task, spec)),
        Err(e) => Err(e),
    };
    let (task, spec) = match checked {
        Ok(pair) => pair,
        Err(e) => {
            return html! { p.error.wizard-error { (e.to_string()) } };
        }
    };
    let next_run = layout::when(console.state.timezone, task.next_run_unix_ms);
    let summary = summary_lines("Replication task", &task, &next_run).join("\n");
    let estimate = tasks::estimate(&console.state, &person.actor, &reference, Some(spec)).await;
    html! {
        pre.summary #summary { (summary) }
        h2 { "Plan (dry run)" }
        @match estimate {
            Err(e) => p.error { "The sources could not estimate: " (e.to_string()) },
            Ok(estimate) => table #plan {
                thead { tr { th { "Source" } th { "Target" } th { "Snapshots" } th { "Estimated bytes" } th { "Base" } } }
                tbody {
                    @for d in &estimate.datasets {
                        tr {
                            td { (d.source) }
                            td { (d.target) }
                            @if d.error.is_empty() {
                                td { (d.snapshots) }
                                td { @if d.bytes_known { (human_bytes(d.bytes)) } @else { "not known (this ZFS cannot estimate)" } }
                                td { @if d.base.is_empty() { "full stream" } @else { (d.base) } }
                            } @else {
                                td colspan="3" .error { (d.error) }
                            }
                        }
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_schedule_is_weekly_sunday_midnight() {
        let draft = Draft::default();
        assert_eq!(draft.schedule().unwrap().expression(), "0 0 * * sun");
        assert_eq!(draft.sources[0].schema, DEFAULT_PERIODIC_SCHEMA);
    }

    #[test]
    fn an_edited_task_shows_its_schedule_in_the_scheduler_fields() {
        let task = Task {
            id: 7,
            schedule: "30 2 * * mon".into(),
            spec: Some(TaskSpec {
                kind: Some(Kind::Replication(ReplicationTaskSpec {
                    name: "offsite".into(),
                    sources: vec![ReplicationSource {
                        system: "nas1".into(),
                        datasets: vec!["tank/a".into()],
                        recursive: true,
                        naming_schemas: Vec::new(),
                    }],
                    target_system: "nas2".into(),
                    target_dataset: "backup".into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        let draft = Draft::from_task(&task);
        assert_eq!(draft.editing, Some(7));
        assert_eq!(
            (draft.period.as_str(), draft.weekday.as_str()),
            ("weekly", "mon")
        );
        assert_eq!(draft.schedule().unwrap().expression(), "30 2 * * mon");
        let spec = draft.spec();
        assert_eq!(
            spec.sources[0].naming_schemas,
            vec![DEFAULT_PERIODIC_SCHEMA]
        );
        assert!(spec.sources[0].recursive);
    }

    #[test]
    fn errors_land_on_the_step_of_their_field() {
        assert_eq!(step_of("name"), 1);
        assert_eq!(step_of("sources"), 1);
        assert_eq!(step_of("target"), 2);
        assert_eq!(step_of("day"), 3);
        assert_eq!(step_of("spec"), 4);
        let errors = check_step(&Draft::default(), 1);
        assert!(
            errors
                .iter()
                .any(|(field, message)| field == "name" && message.starts_with("name:"))
        );
        let draft = Draft {
            period: "fortnightly".into(),
            ..Draft::default()
        };
        let errors = check_step(&draft, 3);
        assert!(
            errors.iter().any(|(field, _)| field == "period"),
            "{errors:?}"
        );
    }
}
