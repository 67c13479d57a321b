//! Deterministic demo workspace: a page tree with varied blocks, a "Tasks" database with a
//! few hundred rows, comments, five people. Everything is drawn from the store's seeded RNG.

use std::collections::BTreeMap;

use rand::Rng;
use rand::seq::IndexedRandom;
use serde_json::{Value, json};

use crate::DemoIds;
use crate::store::{Block, Comment, DataSource, Database, Meta, Page, Parent, PropSchema, Store};
use crate::time::{self, EPOCH_MS};
use crate::validate::rich_text;

/// Rows in the demo "Tasks" data source.
pub(crate) const DEMO_TASK_ROWS: usize = 240;

const PEOPLE: &[(&str, &str)] = &[
    ("Ada Lovelace", "ada@example.com"),
    ("Grace Hopper", "grace@example.com"),
    ("Alan Turing", "alan@example.com"),
    ("Barbara Liskov", "barbara@example.com"),
    ("Edsger Dijkstra", "edsger@example.com"),
];

const TEAMS: &[&str] = &["Engineering", "Product", "Design", "Operations"];
const TOPICS: &[&str] = &[
    "Roadmap",
    "Onboarding",
    "Meeting notes",
    "Runbooks",
    "Retrospectives",
    "Specs",
    "Hiring",
    "Ideas",
];
const WORDS: &[&str] = &[
    "cluster",
    "tenant",
    "agent",
    "notion",
    "page",
    "review",
    "deploy",
    "latency",
    "budget",
    "quorum",
    "shard",
    "lease",
    "audit",
    "policy",
    "token",
    "rollout",
    "backlog",
    "metric",
    "incident",
    "design",
    "customer",
    "launch",
    "migration",
    "schema",
    "search",
    "integration",
    "workspace",
    "approval",
    "replica",
    "snapshot",
    "throughput",
    "handoff",
    "simulation",
    "seed",
    "invariant",
    "dashboard",
    "alert",
    "runbook",
    "feedback",
    "milestone",
];

struct Builder<'a> {
    s: &'a mut Store,
    people: Vec<String>,
}

impl Builder<'_> {
    fn sentence(&mut self, min: usize, max: usize) -> String {
        let n = self.s.rng.random_range(min..=max);
        let mut words: Vec<&str> = Vec::with_capacity(n);
        for _ in 0..n {
            words.push(WORDS.choose(&mut self.s.rng).copied().unwrap_or("notion"));
        }
        let mut text = words.join(" ");
        if let Some(first) = text.get(..1) {
            text = first.to_uppercase() + &text[1..];
        }
        text + "."
    }

    fn person(&mut self) -> String {
        self.people
            .choose(&mut self.s.rng)
            .cloned()
            .unwrap_or_default()
    }

    fn meta(&mut self) -> Meta {
        let minutes_ago = self.s.rng.random_range(60..=120 * 24 * 60_i64);
        let created_ms = EPOCH_MS - minutes_ago * 60_000;
        let edited_ms = created_ms + self.s.rng.random_range(0..=minutes_ago - 1) * 60_000;
        let created_by = self.person();
        let edited_by = self.person();
        Meta {
            created_ms,
            edited_ms,
            created_by,
            edited_by,
            in_trash: false,
        }
    }

    fn page(&mut self, parent: Parent, title: &str) -> String {
        let id = self.s.new_id();
        let meta = self.meta();
        let mut values = BTreeMap::new();
        values.insert("title".to_string(), rich_text(title));
        self.s.pages.insert(
            id.clone(),
            Page {
                id: id.clone(),
                parent: parent.clone(),
                values,
                icon: Value::Null,
                cover: Value::Null,
                meta,
                children: Vec::new(),
            },
        );
        self.attach(&parent, &id);
        id
    }

    fn attach(&mut self, parent: &Parent, id: &str) {
        let list = match parent {
            Parent::Page(p) => self.s.pages.get_mut(p).map(|x| &mut x.children),
            Parent::Block(b) => self.s.blocks.get_mut(b).map(|x| &mut x.children),
            Parent::DataSource(d) => self.s.data_sources.get_mut(d).map(|x| &mut x.rows),
            _ => None,
        };
        if let Some(list) = list {
            list.push(id.to_string());
        }
    }

    fn block(&mut self, parent: Parent, kind: &str, content: Value) -> String {
        let id = self.s.new_id();
        let meta = self.meta();
        self.s.blocks.insert(
            id.clone(),
            Block {
                parent: parent.clone(),
                kind: kind.to_string(),
                content,
                children: Vec::new(),
                meta,
            },
        );
        self.attach(&parent, &id);
        id
    }

    fn text_block(&mut self, parent: Parent, kind: &str) -> String {
        let text = self.sentence(4, 16);
        self.block(
            parent,
            kind,
            json!({"rich_text": rich_text(&text), "color": "default"}),
        )
    }

    /// A handful of varied blocks on a page.
    fn content(&mut self, page: &str) {
        let parent = Parent::Page(page.to_string());
        let heading = ["heading_1", "heading_2", "heading_3"]
            .choose(&mut self.s.rng)
            .copied()
            .unwrap_or("heading_2");
        let text = self.sentence(2, 5);
        self.block(
            parent.clone(),
            heading,
            json!({"rich_text": rich_text(&text), "color": "default", "is_toggleable": false}),
        );
        let n = self.s.rng.random_range(2..=6);
        for _ in 0..n {
            match self.s.rng.random_range(0..9) {
                0 | 1 => {
                    self.text_block(parent.clone(), "paragraph");
                }
                2 => {
                    for _ in 0..self.s.rng.random_range(2..=4) {
                        self.text_block(parent.clone(), "bulleted_list_item");
                    }
                }
                3 => {
                    for _ in 0..self.s.rng.random_range(2..=4) {
                        self.text_block(parent.clone(), "numbered_list_item");
                    }
                }
                4 => {
                    let text = self.sentence(3, 8);
                    let checked = self.s.rng.random_bool(0.5);
                    self.block(parent.clone(), "to_do", json!({"rich_text": rich_text(&text), "checked": checked, "color": "default"}));
                }
                5 => {
                    let text = self.sentence(2, 5);
                    let toggle = self.block(
                        parent.clone(),
                        "toggle",
                        json!({"rich_text": rich_text(&text), "color": "default"}),
                    );
                    for _ in 0..self.s.rng.random_range(1..=2) {
                        self.text_block(Parent::Block(toggle.clone()), "paragraph");
                    }
                }
                6 => {
                    let code = format!(
                        "fn main() {{\n    println!(\"{}\");\n}}",
                        self.sentence(2, 4)
                    );
                    self.block(
                        parent.clone(),
                        "code",
                        json!({"rich_text": rich_text(&code), "language": "rust", "caption": []}),
                    );
                }
                7 => {
                    let kind = if self.s.rng.random_bool(0.5) {
                        "quote"
                    } else {
                        "callout"
                    };
                    let text = self.sentence(5, 12);
                    let mut content = json!({"rich_text": rich_text(&text), "color": "default"});
                    if kind == "callout" {
                        content["icon"] = json!({"type": "emoji", "emoji": "💡"});
                    }
                    self.block(parent.clone(), kind, content);
                }
                _ => {
                    self.block(parent.clone(), "divider", json!({}));
                }
            }
        }
    }

    fn option(&mut self, name: &str, color: &str) -> Value {
        let id: String = (0..4)
            .map(|_| (b'a' + self.s.rng.random_range(0..26u8)) as char)
            .collect();
        json!({"id": id, "name": name, "color": color})
    }

    fn tasks(&mut self, root: &str) -> (String, String) {
        let db_id = self.s.new_id();
        let ds_id = self.s.new_id();
        let meta = self.meta();
        let prio: Vec<Value> = [
            ("Low", "gray"),
            ("Medium", "yellow"),
            ("High", "orange"),
            ("Urgent", "red"),
        ]
        .iter()
        .map(|(n, c)| self.option(n, c))
        .collect();
        let tags: Vec<Value> = [
            ("backend", "blue"),
            ("frontend", "purple"),
            ("docs", "green"),
            ("infra", "brown"),
            ("bug", "red"),
            ("research", "pink"),
        ]
        .iter()
        .map(|(n, c)| self.option(n, c))
        .collect();
        let status: Vec<Value> = [
            ("Not started", "default"),
            ("In progress", "blue"),
            ("Done", "green"),
        ]
        .iter()
        .map(|(n, c)| self.option(n, c))
        .collect();
        let mut props = BTreeMap::new();
        let mut add = |name: &str, id: &str, kind: &str, config: Value| {
            props.insert(
                name.to_string(),
                PropSchema {
                    id: id.to_string(),
                    kind: kind.to_string(),
                    config,
                },
            );
        };
        add("Name", "title", "title", json!({}));
        add("Notes", "nOts", "rich_text", json!({}));
        add("Points", "pOnt", "number", json!({"format": "number"}));
        add(
            "Priority",
            "pRio",
            "select",
            json!({"options": prio.clone()}),
        );
        add(
            "Tags",
            "tAgs",
            "multi_select",
            json!({"options": tags.clone()}),
        );
        add(
            "Status",
            "sTat",
            "status",
            json!({"options": status.clone()}),
        );
        add("Due", "dUe1", "date", json!({}));
        add("Done", "dOne", "checkbox", json!({}));
        add("Assignee", "aSgn", "people", json!({}));
        add("Link", "lInk", "url", json!({}));
        add("Contact", "cTct", "email", json!({}));
        add("Created", "cRtd", "created_time", json!({}));
        self.s.data_sources.insert(
            ds_id.clone(),
            DataSource {
                id: ds_id.clone(),
                database_id: db_id.clone(),
                title: rich_text("Tasks"),
                description: json!([]),
                properties: props,
                rows: Vec::new(),
                meta: meta.clone(),
            },
        );
        self.s.databases.insert(
            db_id.clone(),
            Database {
                id: db_id.clone(),
                parent: Parent::Page(root.to_string()),
                title: rich_text("Tasks"),
                description: rich_text("Work tracked across the Quire demo teams."),
                data_sources: vec![ds_id.clone()],
                is_inline: false,
                icon: Value::Null,
                meta,
            },
        );
        self.attach(&Parent::Page(root.to_string()), &db_id);
        for i in 0..DEMO_TASK_ROWS {
            let title = format!(
                "Task {:03}: {}",
                i + 1,
                self.sentence(2, 5).trim_end_matches('.')
            );
            let row = self.page(Parent::DataSource(ds_id.clone()), &title);
            let mut values = BTreeMap::new();
            values.insert("title".to_string(), rich_text(&title));
            let notes = if self.s.rng.random_bool(0.7) {
                rich_text(&self.sentence(4, 12))
            } else {
                json!([])
            };
            values.insert("nOts".into(), notes);
            let points = if self.s.rng.random_bool(0.9) {
                json!([1, 2, 3, 5, 8, 13][self.s.rng.random_range(0..6)])
            } else {
                Value::Null
            };
            values.insert("pOnt".into(), points);
            let p = if self.s.rng.random_bool(0.9) {
                prio[self.s.rng.random_range(0..prio.len())].clone()
            } else {
                Value::Null
            };
            values.insert("pRio".into(), p);
            let n_tags = self.s.rng.random_range(0..=3);
            let mut chosen: Vec<Value> = tags
                .choose_multiple(&mut self.s.rng, n_tags)
                .cloned()
                .collect();
            chosen.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
            values.insert("tAgs".into(), Value::Array(chosen));
            let st = status[self.s.rng.random_range(0..status.len())].clone();
            let done = st["name"] == "Done";
            values.insert("sTat".into(), st);
            let due = if self.s.rng.random_bool(0.8) {
                let day = EPOCH_MS + self.s.rng.random_range(-60..=90_i64) * 86_400_000;
                json!({"start": time::iso_date(day), "end": null, "time_zone": null})
            } else {
                Value::Null
            };
            values.insert("dUe1".into(), due);
            values.insert("dOne".into(), json!(done));
            let n_people = self.s.rng.random_range(0..=2);
            let assignees: Vec<Value> = self
                .people
                .clone()
                .choose_multiple(&mut self.s.rng, n_people)
                .map(|id| json!({"object": "user", "id": id}))
                .collect();
            values.insert("aSgn".into(), Value::Array(assignees));
            let link = if self.s.rng.random_bool(0.4) {
                json!(format!("https://example.com/tasks/{}", i + 1))
            } else {
                Value::Null
            };
            values.insert("lInk".into(), link);
            let contact = if self.s.rng.random_bool(0.3) {
                json!(PEOPLE[i % PEOPLE.len()].1)
            } else {
                Value::Null
            };
            values.insert("cTct".into(), contact);
            if let Some(page) = self.s.pages.get_mut(&row) {
                page.values = values;
            }
            if i % 10 == 0 {
                self.content(&row);
            }
        }
        (db_id, ds_id)
    }

    fn comments(&mut self, pages: &[String]) {
        let n = pages.len().min(25);
        let chosen: Vec<String> = pages.choose_multiple(&mut self.s.rng, n).cloned().collect();
        for page in chosen {
            let discussion = self.s.new_id();
            for _ in 0..self.s.rng.random_range(1..=3) {
                let id = self.s.new_id();
                let text = self.sentence(3, 10);
                let author = self.person();
                let created_ms = EPOCH_MS - self.s.rng.random_range(1..=30 * 24 * 60_i64) * 60_000;
                self.s.seq += 1;
                let seq = self.s.seq;
                self.s.comments.insert(
                    id.clone(),
                    Comment {
                        id,
                        parent: Parent::Page(page.clone()),
                        discussion_id: discussion.clone(),
                        rich_text: rich_text(&text),
                        created_ms,
                        created_by: author,
                        seq,
                    },
                );
            }
        }
    }
}

/// Fills the store with the demo workspace and shares it: `alpha` sees everything,
/// `beta` only the "Product" team space.
pub(crate) fn build(s: &mut Store, alpha: usize, beta: usize) -> DemoIds {
    let people: Vec<String> = PEOPLE
        .iter()
        .map(|(name, email)| s.add_user(name, Some((*email).to_string())))
        .collect();
    let mut b = Builder {
        s,
        people: people.clone(),
    };
    let root = b.page(Parent::Workspace, "Quire Demo");
    b.block(Parent::Page(root.clone()), "heading_1", json!({"rich_text": rich_text("Welcome to the Quire demo workspace"), "color": "default", "is_toggleable": false}));
    b.block(Parent::Page(root.clone()), "callout", json!({"rich_text": rich_text("Everything here is generated from the sandbox seed."), "color": "default", "icon": {"type": "emoji", "emoji": "🧪"}}));
    b.content(&root);
    let mut team_pages = Vec::new();
    let mut topic_pages = Vec::new();
    let mut all_pages = vec![root.clone()];
    for team in TEAMS {
        let team_page = b.page(Parent::Page(root.clone()), team);
        b.content(&team_page);
        team_pages.push(team_page.clone());
        all_pages.push(team_page.clone());
        for topic in TOPICS {
            let topic_page = b.page(Parent::Page(team_page.clone()), &format!("{team} {topic}"));
            b.content(&topic_page);
            topic_pages.push(topic_page.clone());
            all_pages.push(topic_page.clone());
            for n in 1..=6 {
                let sub = b.page(Parent::Page(topic_page.clone()), &format!("{topic} {n}"));
                b.content(&sub);
                all_pages.push(sub.clone());
                if n % 3 == 0 {
                    let detail = b.page(Parent::Page(sub.clone()), &format!("{topic} {n} details"));
                    b.content(&detail);
                    all_pages.push(detail);
                }
            }
        }
    }
    let (database_id, data_source_id) = b.tasks(&root);
    b.comments(&all_pages);
    let engineering = team_pages[0].clone();
    let product = team_pages[1].clone();
    if let Some(i) = s.integrations.get_mut(alpha) {
        i.shares.insert(root.clone());
    }
    if let Some(i) = s.integrations.get_mut(beta) {
        i.shares.insert(product.clone());
    }
    let mut page_ids = team_pages.clone();
    page_ids.extend(topic_pages.iter().step_by(TOPICS.len()).cloned());
    DemoIds {
        root_page_id: root,
        page_ids,
        database_id,
        data_source_id,
        alpha_only_page_id: engineering,
        beta_page_id: product,
        user_ids: people,
    }
}
