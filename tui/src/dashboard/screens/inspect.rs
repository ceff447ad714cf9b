//! The Inspect screen: an evaluation's graded answers page by page, filtered by verdict,
//! searched, and compared question by question with another run.

use std::collections::BTreeMap;

use soup_store::{RunId, StoredQuestion};

use super::{move_cursor, text_input};
use crate::dashboard::app::{
    Action, App, Command, DiscordantList, InputTarget, RecordRequest, RecordsPage,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InspectPane {
    Runs,
    Records,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InspectState {
    pub pane: InspectPane,
    /// Index into [`JobsState::eval_runs`].
    pub run_cursor: usize,
    pub open_run: Option<RunId>,
    pub verdict_counts: BTreeMap<String, u64>,
    pub verdict: Option<String>,
    /// The search being typed or applied.
    pub search: String,
    pub applied_search: Option<String>,
    pub page: Vec<StoredQuestion>,
    pub page_from: u64,
    /// Where the pages before this one started (paging back without reading backwards).
    pub back: Vec<u64>,
    pub next: Option<u64>,
    pub scanned: u64,
    pub cursor: usize,
    pub detail: bool,
    pub compare_run: Option<RunId>,
    /// The same question under `compare_run`; `None` while loading or missing.
    pub compare_record: Option<StoredQuestion>,
    pub compare_loaded: bool,
    /// Lines scrolled in the detail view.
    pub scroll: u16,
    /// Answers to older requests (another run, filter or page) are dropped.
    pub generation: u64,
    pub loading: bool,
    /// `d`: the questions the open run and the comparison run disagree on.
    pub discordant: Option<DiscordantView>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DiscordantView {
    /// `None` while it is read.
    pub list: Option<DiscordantList>,
    pub cursor: usize,
}

impl DiscordantView {
    pub fn selected(&self) -> Option<&(StoredQuestion, StoredQuestion)> {
        self.list.as_ref().and_then(|l| l.pairs.get(self.cursor))
    }
}

impl InspectState {
    pub fn selected(&self) -> Option<&StoredQuestion> {
        self.page.get(self.cursor)
    }

    pub fn new() -> Self {
        InspectState {
            pane: InspectPane::Runs,
            run_cursor: 0,
            open_run: None,
            verdict_counts: BTreeMap::new(),
            verdict: None,
            search: String::new(),
            applied_search: None,
            page: Vec::new(),
            page_from: 0,
            back: Vec::new(),
            next: None,
            scanned: 0,
            cursor: 0,
            detail: false,
            compare_run: None,
            compare_record: None,
            compare_loaded: false,
            scroll: 0,
            generation: 0,
            loading: false,
            discordant: None,
        }
    }
}

/// A page of records; answers to an older request are dropped.
pub fn on_records(app: &mut App, page: RecordsPage) -> Option<Command> {
    let inspect = &mut app.inspect;
    if page.generation != inspect.generation {
        return None;
    }
    inspect.loading = false;
    inspect.page = page.items;
    inspect.page_from = page.from;
    inspect.next = page.next;
    inspect.scanned = page.scanned;
    inspect.verdict_counts = page.verdict_counts;
    inspect.cursor = inspect.cursor.min(inspect.page.len().saturating_sub(1));
    if page.skipped > 0 {
        app.error(format!(
            "{} unreadable record(s) skipped on this page",
            page.skipped
        ));
    }
    compare_command(app)
}

/// The same question under the comparison run, if it is still the one asked for.
pub fn on_compare(
    app: &mut App,
    generation: u64,
    run: RunId,
    record: Option<Box<StoredQuestion>>,
) -> Option<Command> {
    if generation == app.inspect.generation && app.inspect.compare_run == Some(run) {
        app.inspect.compare_record = record.map(|r| *r);
        app.inspect.compare_loaded = true;
    }
    None
}

/// The discordant pairs, if they are still the ones asked for.
pub fn on_discordant(app: &mut App, list: DiscordantList) -> Option<Command> {
    let inspect = &mut app.inspect;
    let current = inspect.open_run == Some(list.a) && inspect.compare_run == Some(list.b);
    if let (Some(view), true) = (inspect.discordant.as_mut(), current) {
        if list.generation == inspect.generation {
            view.cursor = view.cursor.min(list.pairs.len().saturating_sub(1));
            view.list = Some(list);
        }
    }
    None
}

/// The comparison run after the current one (or the first), among the other evaluations.
fn next_compare_run(app: &App) -> (Option<RunId>, bool) {
    let open = app.inspect.open_run;
    let others: Vec<RunId> = app
        .jobs
        .eval_runs()
        .iter()
        .map(|r| r.id)
        .filter(|id| Some(*id) != open)
        .collect();
    let next = match app.inspect.compare_run {
        None => others.first().copied(),
        Some(current) => others
            .iter()
            .position(|id| *id == current)
            .and_then(|i| others.get(i + 1))
            .copied(),
    };
    (next, others.is_empty())
}

/// Asks for the discordant pairs of the open run and the comparison run (the first other
/// evaluation when none is chosen).
fn request_discordant(app: &mut App) -> Option<Command> {
    let Some(a) = app.inspect.open_run else {
        app.error("open a run first (Enter on it), then d lists where another run disagrees");
        return None;
    };
    if app.inspect.compare_run.is_none() {
        let (next, none) = next_compare_run(app);
        if none {
            app.error("no other evaluation run to compare with");
            return None;
        }
        app.inspect.compare_run = next;
    }
    let b = app.inspect.compare_run?;
    app.inspect.generation += 1;
    app.inspect.detail = false;
    app.inspect.scroll = 0;
    app.inspect.discordant = Some(DiscordantView {
        list: None,
        cursor: 0,
    });
    Some(Command::LoadDiscordant {
        generation: app.inspect.generation,
        a,
        b,
    })
}

/// Keys while the discordant list is open: move, Enter side by side, `c` next run, Esc back.
fn update_discordant(app: &mut App, action: Action) -> Option<Command> {
    let inspect = &mut app.inspect;
    let view = inspect.discordant.as_mut()?;
    let len = view.list.as_ref().map_or(0, |l| l.pairs.len());
    if move_cursor(&mut view.cursor, len, &action) {
        inspect.scroll = 0;
        return None;
    }
    match action {
        Action::Confirm => {
            inspect.detail = !inspect.detail && len > 0;
            inspect.scroll = 0;
        }
        Action::Back | Action::Left if inspect.detail => inspect.detail = false,
        Action::Back | Action::Left | Action::Discordant => {
            inspect.discordant = None;
            inspect.detail = false;
        }
        Action::ScrollDown => inspect.scroll = inspect.scroll.saturating_add(5),
        Action::ScrollUp => inspect.scroll = inspect.scroll.saturating_sub(5),
        Action::Compare => {
            let (next, _) = next_compare_run(app);
            app.inspect.compare_run = next;
            if next.is_none() {
                app.inspect.discordant = None;
                app.inspect.detail = false;
                return None;
            }
            return request_discordant(app);
        }
        _ => {}
    }
    None
}

/// The Inspect screen's keys: choose a run, page, filter and search its records, compare.
pub fn update(app: &mut App, action: Action) -> Option<Command> {
    if app.inspect.discordant.is_some() && app.input.is_none() {
        return update_discordant(app, action);
    }
    if app.input == Some(InputTarget::RecordSearch) {
        if text_input(&mut app.inspect.search, &action) {
            return None;
        }
        match action {
            Action::InputSubmit => {
                app.input = None;
                let search = app.inspect.search.trim().to_string();
                app.inspect.applied_search = (!search.is_empty()).then_some(search);
                return reload_records(app, 0);
            }
            Action::InputCancel => {
                app.input = None;
                app.inspect.search = app.inspect.applied_search.clone().unwrap_or_default();
            }
            _ => {}
        }
        return None;
    }
    let evals = app.jobs.eval_runs().len();
    match app.inspect.pane {
        InspectPane::Runs => {
            if move_cursor(&mut app.inspect.run_cursor, evals, &action) {
                return None;
            }
            match action {
                Action::Confirm | Action::Right => {
                    let id = app
                        .jobs
                        .eval_runs()
                        .get(app.inspect.run_cursor)
                        .map(|r| r.id);
                    match id {
                        Some(id) if app.inspect.open_run == Some(id) => {
                            app.inspect.pane = InspectPane::Records;
                            None
                        }
                        Some(id) => open_run(app, id),
                        None => None,
                    }
                }
                _ => None,
            }
        }
        InspectPane::Records => {
            let len = app.inspect.page.len();
            if matches!(action, Action::PageDown | Action::PageUp) {
                let next = if action == Action::PageDown {
                    Action::NextPage
                } else {
                    Action::PrevPage
                };
                return update(app, next);
            }
            if move_cursor(&mut app.inspect.cursor, len, &action) {
                app.inspect.scroll = 0;
                return compare_command(app);
            }
            match action {
                Action::Left | Action::Back if !app.inspect.detail => {
                    app.inspect.pane = InspectPane::Runs;
                    None
                }
                Action::Back => {
                    app.inspect.detail = false;
                    None
                }
                Action::Confirm => {
                    app.inspect.detail = !app.inspect.detail && !app.inspect.page.is_empty();
                    app.inspect.scroll = 0;
                    None
                }
                Action::ScrollDown => {
                    app.inspect.scroll = app.inspect.scroll.saturating_add(5);
                    None
                }
                Action::ScrollUp => {
                    app.inspect.scroll = app.inspect.scroll.saturating_sub(5);
                    None
                }
                Action::NextPage => match app.inspect.next {
                    Some(next) => {
                        let from = app.inspect.page_from;
                        app.inspect.back.push(from);
                        app.inspect.cursor = 0;
                        request_records(app, next)
                    }
                    None => {
                        app.info("last page");
                        None
                    }
                },
                Action::PrevPage => match app.inspect.back.pop() {
                    Some(from) => {
                        app.inspect.cursor = 0;
                        request_records(app, from)
                    }
                    None => None,
                },
                Action::CycleVerdict => {
                    let verdicts: Vec<&String> = app.inspect.verdict_counts.keys().collect();
                    let next = match &app.inspect.verdict {
                        None => verdicts.first().map(|v| (*v).clone()),
                        Some(current) => verdicts
                            .iter()
                            .position(|v| *v == current)
                            .and_then(|i| verdicts.get(i + 1))
                            .map(|v| (*v).clone()),
                    };
                    app.inspect.verdict = next;
                    reload_records(app, 0)
                }
                Action::StartInput => {
                    app.input = Some(InputTarget::RecordSearch);
                    None
                }
                Action::Discordant => request_discordant(app),
                Action::Compare => {
                    let (next, none) = next_compare_run(app);
                    app.inspect.compare_run = next;
                    app.inspect.compare_record = None;
                    app.inspect.compare_loaded = false;
                    match next {
                        Some(_) => {
                            app.inspect.detail = true;
                            compare_command(app)
                        }
                        None if none => {
                            app.error("no other evaluation run to compare with");
                            None
                        }
                        None => None,
                    }
                }
                _ => None,
            }
        }
    }
}

/// Opens a run's records at the first page, all verdicts, no search.
pub(super) fn open_run(app: &mut App, id: RunId) -> Option<Command> {
    let inspect = &mut app.inspect;
    inspect.open_run = Some(id);
    inspect.pane = InspectPane::Records;
    inspect.verdict = None;
    inspect.search.clear();
    inspect.applied_search = None;
    inspect.verdict_counts.clear();
    inspect.detail = false;
    inspect.discordant = None;
    if inspect.compare_run == Some(id) {
        inspect.compare_run = None;
    }
    reload_records(app, 0)
}

/// Reads from `from` again after the filter or the search changed: paging history restarts.
fn reload_records(app: &mut App, from: u64) -> Option<Command> {
    app.inspect.back.clear();
    app.inspect.cursor = 0;
    request_records(app, from)
}

pub fn request_records(app: &mut App, from: u64) -> Option<Command> {
    let inspect = &mut app.inspect;
    let run = inspect.open_run?;
    inspect.generation += 1;
    inspect.loading = true;
    inspect.compare_record = None;
    inspect.compare_loaded = false;
    Some(Command::LoadRecords(RecordRequest {
        generation: inspect.generation,
        run,
        verdict: inspect.verdict.clone(),
        search: inspect.applied_search.clone(),
        from,
    }))
}

/// Reads the selected question under the comparison run, when one is chosen.
fn compare_command(app: &mut App) -> Option<Command> {
    let inspect = &mut app.inspect;
    let run = inspect.compare_run?;
    let index = inspect.selected()?.index;
    inspect.compare_record = None;
    inspect.compare_loaded = false;
    Some(Command::LoadCompare {
        generation: inspect.generation,
        run,
        index,
    })
}
