//! The Adapters screen: the stored adapters, filtered and sorted, and picking them for Compose.

use std::collections::BTreeSet;

use soup_store::AdapterRecord;

use super::move_cursor;
use super::text_input;
use crate::dashboard::app::{Action, App, Command, InputTarget, Tab};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterSort {
    Name,
    Base,
    Skill,
    Rank,
    Method,
    Size,
    Date,
}

impl AdapterSort {
    pub const ALL: [AdapterSort; 7] = [
        AdapterSort::Name,
        AdapterSort::Base,
        AdapterSort::Skill,
        AdapterSort::Rank,
        AdapterSort::Method,
        AdapterSort::Size,
        AdapterSort::Date,
    ];

    pub fn label(self) -> &'static str {
        match self {
            AdapterSort::Name => "name",
            AdapterSort::Base => "base",
            AdapterSort::Skill => "skill",
            AdapterSort::Rank => "rank",
            AdapterSort::Method => "method",
            AdapterSort::Size => "size",
            AdapterSort::Date => "date",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdaptersState {
    pub items: Vec<AdapterRecord>,
    /// Indexes into `items`, filtered and sorted: what the list shows.
    pub view: Vec<usize>,
    pub cursor: usize,
    pub sort: AdapterSort,
    pub reverse: bool,
    pub filter: String,
    pub loaded: bool,
    pub skipped: usize,
    /// The CAT heat map shows each weight's change from its start instead of the weight.
    pub cat_delta: bool,
}

impl AdaptersState {
    pub fn selected(&self) -> Option<&AdapterRecord> {
        self.view.get(self.cursor).and_then(|i| self.items.get(*i))
    }

    /// Recomputes the view after the items, the filter or the sort changed, keeping the
    /// cursor on the same adapter when it is still shown.
    pub(super) fn rebuild_view(&mut self) {
        let keep = self.selected().map(|a| a.name.clone());
        let needle = self.filter.to_lowercase();
        let mut view: Vec<usize> = (0..self.items.len())
            .filter(|i| {
                needle.is_empty() || {
                    let a = &self.items[*i];
                    a.name.to_lowercase().contains(&needle)
                        || a.base_model.to_lowercase().contains(&needle)
                        || a.skill
                            .as_deref()
                            .is_some_and(|s| s.to_lowercase().contains(&needle))
                        || crate::dashboard::format::method(a.method).contains(&needle)
                }
            })
            .collect();
        let items = &self.items;
        let max_rank = |a: &AdapterRecord| a.modules.iter().map(|m| m.rank).max().unwrap_or(0);
        view.sort_by(|x, y| {
            let (a, b) = (&items[*x], &items[*y]);
            let order = match self.sort {
                AdapterSort::Name => a.name.cmp(&b.name),
                AdapterSort::Base => a.base_model.cmp(&b.base_model),
                AdapterSort::Skill => a.skill.cmp(&b.skill),
                AdapterSort::Rank => max_rank(a).cmp(&max_rank(b)),
                AdapterSort::Method => crate::dashboard::format::method(a.method)
                    .cmp(crate::dashboard::format::method(b.method)),
                AdapterSort::Size => a.size_bytes.cmp(&b.size_bytes),
                AdapterSort::Date => a.created.cmp(&b.created),
            };
            order.then_with(|| a.name.cmp(&b.name))
        });
        if self.reverse {
            view.reverse();
        }
        self.view = view;
        self.cursor = keep
            .and_then(|name| self.view.iter().position(|i| self.items[*i].name == name))
            .unwrap_or(0);
    }

    pub fn new() -> Self {
        AdaptersState {
            items: Vec::new(),
            view: Vec::new(),
            cursor: 0,
            sort: AdapterSort::Name,
            reverse: false,
            filter: String::new(),
            loaded: false,
            skipped: 0,
            cat_delta: false,
        }
    }
}

/// A fresh list from the store: the view is rebuilt, and picks of adapters that are gone are
/// dropped.
pub fn on_loaded(app: &mut App, adapters: Vec<AdapterRecord>, skipped: usize) -> Option<Command> {
    app.adapters.items = adapters;
    app.adapters.skipped = skipped;
    app.adapters.loaded = true;
    app.adapters.rebuild_view();
    let names: BTreeSet<String> = app.adapters.items.iter().map(|a| a.name.clone()).collect();
    app.compose.picked.retain(|p| names.contains(p));
    app.compose.adapter_cursor = app
        .compose
        .adapter_cursor
        .min(app.adapters.items.len().saturating_sub(1));
    None
}

/// The Adapters screen's keys: filter, sort, pick for Compose, switch the CAT heat map
/// between weights and Δ from the start (`t`).
pub fn update(app: &mut App, action: Action) -> Option<Command> {
    let state = &mut app.adapters;
    if app.input == Some(InputTarget::AdapterFilter) {
        if text_input(&mut state.filter, &action) {
            state.rebuild_view();
        } else if action == Action::InputSubmit {
            app.input = None;
        } else if action == Action::InputCancel {
            app.input = None;
            state.filter.clear();
            state.rebuild_view();
        }
        return None;
    }
    let len = state.view.len();
    if move_cursor(&mut state.cursor, len, &action) {
        return None;
    }
    match action {
        Action::StartInput => app.input = Some(InputTarget::AdapterFilter),
        Action::Back => {
            state.filter.clear();
            state.rebuild_view();
        }
        Action::CycleSort => {
            let at = AdapterSort::ALL
                .iter()
                .position(|s| *s == state.sort)
                .unwrap_or(0);
            state.sort = AdapterSort::ALL[(at + 1) % AdapterSort::ALL.len()];
            state.rebuild_view();
            let label = state.sort.label();
            app.info(format!("sorted by {label}"));
        }
        Action::ReverseSort => {
            state.reverse = !state.reverse;
            state.rebuild_view();
        }
        Action::Toggle => {
            if let Some(name) = state.selected().map(|a| a.name.clone()) {
                toggle_pick(app, name);
            }
        }
        Action::ToggleView => {
            if state.selected().is_some_and(|a| a.cat_weights.is_some()) {
                state.cat_delta = !state.cat_delta;
                let shown = if state.cat_delta {
                    "each CAT weight's change from its start (Δ)"
                } else {
                    "the learned CAT weights"
                };
                app.info(format!("heat map: {shown}"));
            } else {
                app.info("t switches a CAT adapter's heat map between its weights and their change from the start: select a CAT adapter");
            }
        }
        Action::Confirm => {
            if let Some(name) = state.selected().map(|a| a.name.clone()) {
                if !app.compose.picked.contains(&name) {
                    toggle_pick(app, name);
                }
                app.tab = Tab::Compose;
            }
        }
        _ => {}
    }
    None
}

/// Picks or unpicks an adapter for Compose.
pub(super) fn toggle_pick(app: &mut App, name: String) {
    if !app.compose.picked.remove(&name) {
        app.compose.picked.insert(name);
    }
    app.compose.error = None;
}
