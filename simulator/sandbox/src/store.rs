//! The in-memory workspace: pages, blocks, databases, data sources, comments, users and
//! integrations, in ordered maps behind one mutex. Every operation checks that the calling
//! integration can see what it touches, validates everything before it changes anything,
//! and answers Notion's JSON shapes.

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::errors::ApiError;
use crate::query;
use crate::ratelimit::{SlidingWindow, TokenBucket};
use crate::time;
use crate::validate::{self, NormBlock, rich_text};
use crate::{DemoIds, IntegrationStats};

/// Select/multi-select options a write adds to a schema: (property name, option).
type NewOptions = Vec<(String, Value)>;

/// Most objects (pages, blocks, databases, data sources, comments) the sandbox holds.
pub(crate) const MAX_OBJECTS: usize = 250_000;
/// Longest parent chain walked when checking sharing.
const MAX_PARENT_DEPTH: usize = 1_000;
/// Most options a select, multi-select or status property may have.
const MAX_OPTIONS: usize = 100;
/// Most properties in one data source schema.
const MAX_PROPERTIES: usize = 100;
/// Most data sources in one database.
const MAX_DATA_SOURCES: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Parent {
    Workspace,
    Page(String),
    Block(String),
    DataSource(String),
}

impl Parent {
    fn id(&self) -> Option<&str> {
        match self {
            Parent::Workspace => None,
            Parent::Page(id) | Parent::Block(id) | Parent::DataSource(id) => Some(id),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub created_ms: i64,
    pub edited_ms: i64,
    pub created_by: String,
    pub edited_by: String,
    pub in_trash: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Page {
    pub id: String,
    pub parent: Parent,
    /// Property values by property id; a plain page has only `title`.
    pub values: BTreeMap<String, Value>,
    pub icon: Value,
    pub cover: Value,
    pub meta: Meta,
    /// Child blocks, child pages and child databases, in order.
    pub children: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Block {
    pub parent: Parent,
    pub kind: String,
    pub content: Value,
    pub children: Vec<String>,
    pub meta: Meta,
}

#[derive(Debug, Clone)]
pub(crate) struct Database {
    pub id: String,
    pub parent: Parent,
    pub title: Value,
    pub description: Value,
    pub data_sources: Vec<String>,
    pub is_inline: bool,
    pub icon: Value,
    pub meta: Meta,
}

#[derive(Debug, Clone)]
pub(crate) struct PropSchema {
    pub id: String,
    pub kind: String,
    /// The type-specific configuration, e.g. `{"options": [...]}` for a select.
    pub config: Value,
}

#[derive(Debug, Clone)]
pub(crate) struct DataSource {
    pub id: String,
    pub database_id: String,
    pub title: Value,
    pub description: Value,
    /// Schema by property name.
    pub properties: BTreeMap<String, PropSchema>,
    pub rows: Vec<String>,
    pub meta: Meta,
}

#[derive(Debug, Clone)]
pub(crate) struct Comment {
    pub id: String,
    /// The page or block the discussion is on.
    pub parent: Parent,
    pub discussion_id: String,
    pub rich_text: Value,
    pub created_ms: i64,
    pub created_by: String,
    pub seq: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct User {
    pub id: String,
    pub name: String,
    /// `None` for a bot.
    pub email: Option<String>,
    pub seq: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct Integration {
    pub name: String,
    pub token: String,
    pub bot_user_id: String,
    pub shares: BTreeSet<String>,
    pub bucket: Option<TokenBucket>,
    pub window: SlidingWindow,
    pub requests: u64,
    pub rate_limited: u64,
    pub senders: Senders,
}

impl Integration {
    pub fn stats(&self) -> IntegrationStats {
        IntegrationStats {
            requests: self.requests,
            rate_limited: self.rate_limited,
            max_per_second: self.window.max(),
            senders: self.senders.seen.len() as u64,
            sender_switches: self.senders.switches,
        }
    }
}

/// Who sent an integration's admitted requests, in the order they arrived.
#[derive(Debug, Clone, Default)]
pub(crate) struct Senders {
    /// Distinct senders (at most [`MAX_SENDERS`] remembered).
    seen: BTreeSet<String>,
    last: Option<String>,
    /// Admitted requests whose sender was not the previous admitted request's.
    switches: u64,
}

/// Distinct senders remembered per integration.
const MAX_SENDERS: usize = 1_024;

impl Senders {
    pub fn record(&mut self, sender: &str) {
        if self.last.as_deref() == Some(sender) {
            return;
        }
        if self.last.is_some() {
            self.switches += 1;
        }
        if self.seen.len() < MAX_SENDERS {
            self.seen.insert(sender.to_owned());
        }
        self.last = Some(sender.to_owned());
    }

    pub fn reset(&mut self) {
        *self = Senders::default();
    }
}

/// What an id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Page,
    Block,
    Database,
    DataSource,
}

pub(crate) struct Store {
    pub rng: ChaCha8Rng,
    pub start: Instant,
    pub seq: u64,
    pub pages: BTreeMap<String, Page>,
    pub blocks: BTreeMap<String, Block>,
    pub databases: BTreeMap<String, Database>,
    pub data_sources: BTreeMap<String, DataSource>,
    pub comments: BTreeMap<String, Comment>,
    pub users: BTreeMap<String, User>,
    pub integrations: Vec<Integration>,
    pub demo: DemoIds,
}

fn user_ref(id: &str) -> Value {
    json!({"object": "user", "id": id})
}

fn nodash(id: &str) -> String {
    id.chars().filter(|c| *c != '-').collect()
}

fn list(results: Vec<Value>, next_cursor: Option<String>, kind: &str) -> Value {
    let mut out = Map::new();
    out.insert("object".into(), json!("list"));
    out.insert("results".into(), Value::Array(results));
    out.insert("has_more".into(), Value::Bool(next_cursor.is_some()));
    out.insert(
        "next_cursor".into(),
        next_cursor.map_or(Value::Null, Value::String),
    );
    out.insert("type".into(), json!(kind));
    out.insert(kind.into(), json!({}));
    Value::Object(out)
}

/// The slice of `ids` one page of results covers, and the cursor of the next page.
pub(crate) fn paginate(
    ids: &[String],
    start_cursor: Option<&str>,
    page_size: usize,
) -> Result<(std::ops::Range<usize>, Option<String>), ApiError> {
    let from = match start_cursor {
        None => 0,
        Some(c) => ids.iter().position(|id| id == c).ok_or_else(|| {
            ApiError::validation(format!("start_cursor provided is invalid: {c}"))
        })?,
    };
    let to = (from + page_size).min(ids.len());
    let next = ids.get(to).cloned();
    Ok((from..to, next))
}

fn obj<'a>(body: &'a Value, at: &str) -> Result<&'a Map<String, Value>, ApiError> {
    body.as_object().ok_or_else(|| {
        ApiError::validation(format!("body failed validation: {at} should be an object."))
    })
}

fn opt_bool(body: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::validation(format!(
            "body failed validation: body.{key} should be a boolean."
        ))),
    }
}

/// `in_trash` or its older name `archived`.
fn trash_flag(body: &Map<String, Value>) -> Result<Option<bool>, ApiError> {
    Ok(opt_bool(body, "in_trash")?.or(opt_bool(body, "archived")?))
}

impl Store {
    pub fn now_ms(&self) -> i64 {
        let elapsed = Instant::now()
            .saturating_duration_since(self.start)
            .as_millis();
        time::EPOCH_MS + i64::try_from(elapsed).unwrap_or(i64::MAX / 2)
    }

    pub fn new_id(&mut self) -> String {
        validate::new_uuid(&mut self.rng)
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn new_meta(&self, actor: &str) -> Meta {
        let now = self.now_ms();
        Meta {
            created_ms: now,
            edited_ms: now,
            created_by: actor.to_string(),
            edited_by: actor.to_string(),
            in_trash: false,
        }
    }

    fn object_count(&self) -> usize {
        self.pages.len()
            + self.blocks.len()
            + self.databases.len()
            + self.data_sources.len()
            + self.comments.len()
    }

    fn ensure_room(&self, adding: usize) -> Result<(), ApiError> {
        if self.object_count() + adding > MAX_OBJECTS {
            return Err(ApiError::validation(format!(
                "The sandbox holds at most {MAX_OBJECTS} objects; restart it or trash content before adding more."
            )));
        }
        Ok(())
    }

    pub fn kind_of(&self, id: &str) -> Option<Kind> {
        if self.pages.contains_key(id) {
            Some(Kind::Page)
        } else if self.blocks.contains_key(id) {
            Some(Kind::Block)
        } else if self.databases.contains_key(id) {
            Some(Kind::Database)
        } else if self.data_sources.contains_key(id) {
            Some(Kind::DataSource)
        } else {
            None
        }
    }

    fn parent_of(&self, id: &str) -> Option<&str> {
        if let Some(p) = self.pages.get(id) {
            p.parent.id()
        } else if let Some(b) = self.blocks.get(id) {
            b.parent.id()
        } else if let Some(d) = self.databases.get(id) {
            d.parent.id()
        } else if let Some(ds) = self.data_sources.get(id) {
            Some(&ds.database_id)
        } else {
            None
        }
    }

    /// Whether `id` or one of its ancestors is shared with the integration.
    pub fn visible(&self, integ: usize, id: &str) -> bool {
        let Some(integration) = self.integrations.get(integ) else {
            return false;
        };
        let mut cur = id;
        for _ in 0..MAX_PARENT_DEPTH {
            if integration.shares.contains(cur) {
                return true;
            }
            match self.parent_of(cur) {
                Some(p) => cur = p,
                None => return false,
            }
        }
        false
    }

    /// Whether `id` is `ancestor` or lies below it.
    fn is_within(&self, id: &str, ancestor: &str) -> bool {
        let mut cur = id;
        for _ in 0..MAX_PARENT_DEPTH {
            if cur == ancestor {
                return true;
            }
            match self.parent_of(cur) {
                Some(p) => cur = p,
                None => return false,
            }
        }
        false
    }

    fn require(&self, integ: usize, id: &str, kind: Kind) -> Result<(), ApiError> {
        let name = match kind {
            Kind::Page => "page",
            Kind::Block => "block",
            Kind::Database => "database",
            Kind::DataSource => "data_source",
        };
        let exists = match kind {
            Kind::Page => self.pages.contains_key(id),
            Kind::Block => self.kind_of(id).is_some_and(|k| k != Kind::DataSource),
            Kind::Database => self.databases.contains_key(id),
            Kind::DataSource => self.data_sources.contains_key(id),
        };
        if exists && self.visible(integ, id) {
            Ok(())
        } else {
            Err(ApiError::not_found(name, id))
        }
    }

    // ---------------------------------------------------------------- rendering

    fn render_parent(&self, parent: &Parent) -> Value {
        match parent {
            Parent::Workspace => json!({"type": "workspace", "workspace": true}),
            Parent::Page(id) => json!({"type": "page_id", "page_id": id}),
            Parent::Block(id) => json!({"type": "block_id", "block_id": id}),
            Parent::DataSource(id) => {
                let db = self
                    .data_sources
                    .get(id)
                    .map_or(Value::Null, |ds| json!(ds.database_id));
                json!({"type": "data_source_id", "data_source_id": id, "database_id": db})
            }
        }
    }

    fn meta_fields(out: &mut Map<String, Value>, meta: &Meta) {
        out.insert("created_time".into(), json!(time::iso(meta.created_ms)));
        out.insert("last_edited_time".into(), json!(time::iso(meta.edited_ms)));
        out.insert("created_by".into(), user_ref(&meta.created_by));
        out.insert("last_edited_by".into(), user_ref(&meta.edited_by));
        out.insert("in_trash".into(), json!(meta.in_trash));
        out.insert("archived".into(), json!(meta.in_trash));
    }

    pub fn page_title(&self, page: &Page) -> String {
        page.values
            .get("title")
            .map(validate::plain_text)
            .unwrap_or_default()
    }

    fn row_value(page: &Page, prop: &PropSchema) -> Value {
        match prop.kind.as_str() {
            "created_time" => json!(time::iso(page.meta.created_ms)),
            "last_edited_time" => json!(time::iso(page.meta.edited_ms)),
            "created_by" => user_ref(&page.meta.created_by),
            "last_edited_by" => user_ref(&page.meta.edited_by),
            _ => page
                .values
                .get(&prop.id)
                .cloned()
                .unwrap_or_else(|| empty_value(&prop.kind)),
        }
    }

    /// A page's properties by name, in Notion's shape.
    pub fn page_properties(&self, page: &Page) -> Map<String, Value> {
        let mut out = Map::new();
        if let Parent::DataSource(ds_id) = &page.parent
            && let Some(ds) = self.data_sources.get(ds_id)
        {
            for (name, prop) in &ds.properties {
                let mut v = Map::new();
                v.insert("id".into(), json!(prop.id));
                v.insert("type".into(), json!(prop.kind));
                v.insert(prop.kind.clone(), Self::row_value(page, prop));
                out.insert(name.clone(), Value::Object(v));
            }
            return out;
        }
        let title = page
            .values
            .get("title")
            .cloned()
            .unwrap_or_else(|| json!([]));
        out.insert(
            "title".into(),
            json!({"id": "title", "type": "title", "title": title}),
        );
        out
    }

    pub fn render_page(&self, page: &Page) -> Value {
        let mut out = Map::new();
        out.insert("object".into(), json!("page"));
        out.insert("id".into(), json!(page.id));
        Self::meta_fields(&mut out, &page.meta);
        out.insert("parent".into(), self.render_parent(&page.parent));
        out.insert("icon".into(), page.icon.clone());
        out.insert("cover".into(), page.cover.clone());
        out.insert("is_locked".into(), json!(false));
        out.insert(
            "properties".into(),
            Value::Object(self.page_properties(page)),
        );
        out.insert(
            "url".into(),
            json!(format!("https://www.notion.so/{}", nodash(&page.id))),
        );
        out.insert("public_url".into(), Value::Null);
        Value::Object(out)
    }

    fn has_live_children(&self, children: &[String]) -> bool {
        children.iter().any(|c| self.is_live(c))
    }

    fn is_live(&self, id: &str) -> bool {
        match self.kind_of(id) {
            Some(Kind::Page) => self.pages.get(id).is_some_and(|p| !p.meta.in_trash),
            Some(Kind::Block) => self.blocks.get(id).is_some_and(|b| !b.meta.in_trash),
            Some(Kind::Database) => self.databases.get(id).is_some_and(|d| !d.meta.in_trash),
            _ => false,
        }
    }

    /// Any page, block or database rendered as a block (`child_page`, `child_database`).
    pub fn render_block(&self, id: &str) -> Option<Value> {
        let mut out = Map::new();
        out.insert("object".into(), json!("block"));
        out.insert("id".into(), json!(id));
        let (parent, meta, kind, content, has_children) = if let Some(b) = self.blocks.get(id) {
            (
                &b.parent,
                &b.meta,
                b.kind.clone(),
                b.content.clone(),
                self.has_live_children(&b.children),
            )
        } else if let Some(p) = self.pages.get(id) {
            (
                &p.parent,
                &p.meta,
                "child_page".to_string(),
                json!({"title": self.page_title(p)}),
                self.has_live_children(&p.children),
            )
        } else if let Some(d) = self.databases.get(id) {
            (
                &d.parent,
                &d.meta,
                "child_database".to_string(),
                json!({"title": validate::plain_text(&d.title)}),
                false,
            )
        } else {
            return None;
        };
        out.insert("parent".into(), self.render_parent(parent));
        Self::meta_fields(&mut out, meta);
        out.insert("has_children".into(), json!(has_children));
        out.insert("type".into(), json!(kind));
        out.insert(kind, content);
        Some(Value::Object(out))
    }

    fn render_database(&self, db: &Database) -> Value {
        let mut out = Map::new();
        out.insert("object".into(), json!("database"));
        out.insert("id".into(), json!(db.id));
        Self::meta_fields(&mut out, &db.meta);
        out.insert("title".into(), db.title.clone());
        out.insert("description".into(), db.description.clone());
        out.insert("parent".into(), self.render_parent(&db.parent));
        out.insert("is_inline".into(), json!(db.is_inline));
        out.insert("is_locked".into(), json!(false));
        out.insert("icon".into(), db.icon.clone());
        out.insert("cover".into(), Value::Null);
        let sources: Vec<Value> = db
            .data_sources
            .iter()
            .filter_map(|id| self.data_sources.get(id))
            .filter(|ds| !ds.meta.in_trash)
            .map(|ds| json!({"id": ds.id, "name": validate::plain_text(&ds.title)}))
            .collect();
        out.insert("data_sources".into(), Value::Array(sources));
        out.insert(
            "url".into(),
            json!(format!("https://www.notion.so/{}", nodash(&db.id))),
        );
        out.insert("public_url".into(), Value::Null);
        Value::Object(out)
    }

    pub fn render_data_source(&self, ds: &DataSource) -> Value {
        let mut out = Map::new();
        out.insert("object".into(), json!("data_source"));
        out.insert("id".into(), json!(ds.id));
        Self::meta_fields(&mut out, &ds.meta);
        out.insert("title".into(), ds.title.clone());
        out.insert("description".into(), ds.description.clone());
        out.insert(
            "parent".into(),
            json!({"type": "database_id", "database_id": ds.database_id}),
        );
        let db_parent = self
            .databases
            .get(&ds.database_id)
            .map_or(Value::Null, |db| self.render_parent(&db.parent));
        out.insert("database_parent".into(), db_parent);
        let mut props = Map::new();
        for (name, p) in &ds.properties {
            let mut v = Map::new();
            v.insert("id".into(), json!(p.id));
            v.insert("name".into(), json!(name));
            v.insert("type".into(), json!(p.kind));
            v.insert(p.kind.clone(), p.config.clone());
            props.insert(name.clone(), Value::Object(v));
        }
        out.insert("properties".into(), Value::Object(props));
        out.insert("icon".into(), Value::Null);
        out.insert("cover".into(), Value::Null);
        out.insert(
            "url".into(),
            json!(format!("https://www.notion.so/{}", nodash(&ds.id))),
        );
        Value::Object(out)
    }

    fn render_user(&self, user: &User) -> Value {
        match &user.email {
            Some(email) => json!({
                "object": "user", "id": user.id, "type": "person", "name": user.name,
                "avatar_url": null, "person": {"email": email},
            }),
            None => json!({
                "object": "user", "id": user.id, "type": "bot", "name": user.name,
                "avatar_url": null,
                "bot": {"owner": {"type": "workspace", "workspace": true}, "workspace_name": "Quire Sandbox"},
            }),
        }
    }

    fn render_comment(&self, c: &Comment) -> Value {
        json!({
            "object": "comment",
            "id": c.id,
            "parent": self.render_parent(&c.parent),
            "discussion_id": c.discussion_id,
            "created_time": time::iso(c.created_ms),
            "last_edited_time": time::iso(c.created_ms),
            "created_by": user_ref(&c.created_by),
            "rich_text": c.rich_text,
        })
    }

    // ---------------------------------------------------------------- insertion helpers

    pub fn insert_blocks(
        &mut self,
        parent: &Parent,
        blocks: &[NormBlock],
        actor: &str,
    ) -> Vec<String> {
        let mut ids = Vec::with_capacity(blocks.len());
        for nb in blocks {
            let id = self.new_id();
            let block = Block {
                parent: parent.clone(),
                kind: nb.kind.clone(),
                content: nb.content.clone(),
                children: Vec::new(),
                meta: self.new_meta(actor),
            };
            self.blocks.insert(id.clone(), block);
            let kids = self.insert_blocks(&Parent::Block(id.clone()), &nb.children, actor);
            if let Some(b) = self.blocks.get_mut(&id) {
                b.children = kids;
            }
            ids.push(id);
        }
        ids
    }

    fn count_blocks(blocks: &[NormBlock]) -> usize {
        blocks
            .iter()
            .map(|b| 1 + Self::count_blocks(&b.children))
            .sum()
    }

    fn children_mut(&mut self, parent: &Parent) -> Option<&mut Vec<String>> {
        match parent {
            Parent::Page(id) => self.pages.get_mut(id).map(|p| &mut p.children),
            Parent::Block(id) => self.blocks.get_mut(id).map(|b| &mut b.children),
            Parent::DataSource(id) => self.data_sources.get_mut(id).map(|d| &mut d.rows),
            Parent::Workspace => None,
        }
    }

    fn touch(&mut self, id: &str, actor: &str) {
        let now = self.now_ms();
        let meta = if let Some(p) = self.pages.get_mut(id) {
            &mut p.meta
        } else if let Some(b) = self.blocks.get_mut(id) {
            &mut b.meta
        } else if let Some(d) = self.databases.get_mut(id) {
            &mut d.meta
        } else if let Some(d) = self.data_sources.get_mut(id) {
            &mut d.meta
        } else {
            return;
        };
        meta.edited_ms = now;
        meta.edited_by = actor.to_string();
    }

    // ---------------------------------------------------------------- property values

    fn find_prop<'a>(ds: &'a DataSource, key: &str) -> Option<(&'a String, &'a PropSchema)> {
        ds.properties
            .get_key_value(key)
            .or_else(|| ds.properties.iter().find(|(_, p)| p.id == key))
    }

    /// Validates `properties` of a create/update against a data source's schema. Returns
    /// the values by property id and the select/multi-select options to add to the schema.
    fn row_values(
        &mut self,
        ds_id: &str,
        props: &Map<String, Value>,
    ) -> Result<(BTreeMap<String, Value>, NewOptions), ApiError> {
        let Some(ds) = self.data_sources.get(ds_id).cloned() else {
            return Err(ApiError::not_found("data_source", ds_id));
        };
        let mut values = BTreeMap::new();
        let mut new_options: Vec<(String, Value)> = Vec::new();
        for (key, given) in props {
            let (name, prop) = Self::find_prop(&ds, key).ok_or_else(|| {
                ApiError::validation(format!(
                    "{} is not a property that exists.",
                    validate::truncate(key, 100)
                ))
            })?;
            let at = format!("body.properties.{name}");
            let kind = prop.kind.as_str();
            let inner = match given {
                Value::Object(m) => m.get(kind).ok_or_else(|| {
                    ApiError::validation(format!("{name} is expected to be {kind}."))
                })?,
                Value::Array(_) if kind == "title" || kind == "rich_text" => given,
                _ => {
                    return Err(ApiError::validation(format!(
                        "{name} is expected to be {kind}."
                    )));
                }
            };
            let value = match kind {
                "title" | "rich_text" => {
                    validate::normalize_rich_text(inner, &format!("{at}.{kind}"))?
                }
                "number" => match inner {
                    Value::Null => Value::Null,
                    Value::Number(n) if n.as_f64().is_some_and(f64::is_finite) => inner.clone(),
                    _ => {
                        return Err(ApiError::validation(format!(
                            "{at}.number should be a number or null."
                        )));
                    }
                },
                "checkbox" => match inner {
                    Value::Bool(_) => inner.clone(),
                    _ => {
                        return Err(ApiError::validation(format!(
                            "{at}.checkbox should be a boolean."
                        )));
                    }
                },
                "url" | "email" | "phone_number" => match inner {
                    Value::Null => Value::Null,
                    Value::String(s) if s.chars().count() <= max_chars(kind) => inner.clone(),
                    _ => {
                        return Err(ApiError::validation(format!(
                            "{at}.{kind} should be a string of at most {} characters, or null.",
                            max_chars(kind)
                        )));
                    }
                },
                "date" => match inner {
                    Value::Null => Value::Null,
                    Value::Object(d) => {
                        let start = d
                            .get("start")
                            .and_then(Value::as_str)
                            .filter(|s| time::parse_ms(s).is_some());
                        let Some(start) = start else {
                            return Err(ApiError::validation(format!(
                                "{at}.date.start should be an ISO 8601 date or date-time."
                            )));
                        };
                        let end = match d.get("end") {
                            None | Some(Value::Null) => Value::Null,
                            Some(Value::String(e)) if time::parse_ms(e).is_some() => json!(e),
                            Some(_) => {
                                return Err(ApiError::validation(format!(
                                    "{at}.date.end should be an ISO 8601 date or date-time, or null."
                                )));
                            }
                        };
                        let tz = d.get("time_zone").cloned().unwrap_or(Value::Null);
                        json!({"start": start, "end": end, "time_zone": tz})
                    }
                    _ => {
                        return Err(ApiError::validation(format!(
                            "{at}.date should be an object or null."
                        )));
                    }
                },
                "people" => {
                    let items = inner.as_array().ok_or_else(|| {
                        ApiError::validation(format!("{at}.people should be an array."))
                    })?;
                    let mut out = Vec::new();
                    for (i, item) in items.iter().enumerate() {
                        let id =
                            validate::body_id(item.get("id"), &format!("{at}.people[{i}].id"))?;
                        if !self.users.contains_key(&id) {
                            return Err(ApiError::validation(format!(
                                "{at}.people[{i}].id `{id}` is not a user in this workspace."
                            )));
                        }
                        out.push(user_ref(&id));
                    }
                    Value::Array(out)
                }
                "select" | "status" => match inner {
                    Value::Null => Value::Null,
                    Value::Object(_) => {
                        self.resolve_option(&ds, name, prop, inner, &at, &mut new_options)?
                    }
                    _ => {
                        return Err(ApiError::validation(format!(
                            "{at}.{kind} should be an object or null."
                        )));
                    }
                },
                "multi_select" => {
                    let items = inner.as_array().ok_or_else(|| {
                        ApiError::validation(format!("{at}.multi_select should be an array."))
                    })?;
                    let mut out = Vec::new();
                    for item in items {
                        out.push(self.resolve_option(
                            &ds,
                            name,
                            prop,
                            item,
                            &at,
                            &mut new_options,
                        )?);
                    }
                    Value::Array(out)
                }
                _ => {
                    return Err(ApiError::validation(format!(
                        "{name} is a `{kind}` property, which Notion computes; it cannot be set."
                    )));
                }
            };
            values.insert(prop.id.clone(), value);
        }
        Ok((values, new_options))
    }

    fn resolve_option(
        &mut self,
        ds: &DataSource,
        name: &str,
        prop: &PropSchema,
        given: &Value,
        at: &str,
        new_options: &mut Vec<(String, Value)>,
    ) -> Result<Value, ApiError> {
        let options = prop
            .config
            .get("options")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let pending: Vec<&Value> = new_options
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, o)| o)
            .collect();
        let by_id = given.get("id").and_then(Value::as_str);
        let by_name = given.get("name").and_then(Value::as_str);
        let found = options.iter().chain(pending.iter().copied()).find(|o| {
            by_id.is_some_and(|id| o.get("id").and_then(Value::as_str) == Some(id))
                || by_name.is_some_and(|n| o.get("name").and_then(Value::as_str) == Some(n))
        });
        if let Some(o) = found {
            return Ok(json!({"id": o["id"], "name": o["name"], "color": o["color"]}));
        }
        let _ = ds;
        match (prop.kind.as_str(), by_name) {
            ("status", _) | (_, None) => Err(ApiError::validation(format!(
                "{at}: option `{}` does not exist for property {name}.",
                validate::truncate(by_name.or(by_id).unwrap_or(""), 100)
            ))),
            (_, Some(n)) => {
                if n.contains(',') || n.is_empty() || n.chars().count() > 100 {
                    return Err(ApiError::validation(format!(
                        "{at}: option names must be 1 to 100 characters without commas, got `{}`.",
                        validate::truncate(n, 100)
                    )));
                }
                if options.len() + pending.len() >= MAX_OPTIONS {
                    return Err(ApiError::validation(format!(
                        "{at}: property {name} already has {MAX_OPTIONS} options."
                    )));
                }
                let option = json!({"id": self.short_id(), "name": n, "color": "default"});
                new_options.push((name.to_string(), option.clone()));
                Ok(option)
            }
        }
    }

    fn short_id(&mut self) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        (0..4)
            .map(|_| ALPHABET[self.rng.random_range(0..ALPHABET.len())] as char)
            .collect()
    }

    fn add_options(&mut self, ds_id: &str, options: Vec<(String, Value)>) {
        if let Some(ds) = self.data_sources.get_mut(ds_id) {
            for (name, option) in options {
                if let Some(prop) = ds.properties.get_mut(&name)
                    && let Some(list) = prop.config.get_mut("options").and_then(Value::as_array_mut)
                {
                    list.push(option);
                }
            }
        }
    }

    fn default_row_values(&self, ds_id: &str) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        if let Some(ds) = self.data_sources.get(ds_id) {
            for prop in ds.properties.values() {
                if prop.kind == "status" {
                    let first = prop.config.get("options").and_then(|o| o.get(0)).cloned();
                    if let Some(o) = first {
                        out.insert(
                            prop.id.clone(),
                            json!({"id": o["id"], "name": o["name"], "color": o["color"]}),
                        );
                    }
                } else if !is_computed(&prop.kind) {
                    out.insert(prop.id.clone(), empty_value(&prop.kind));
                }
            }
        }
        out
    }

    /// Parses a data source schema (`{"Name": {"title": {}}, ...}`).
    fn parse_schema(
        &mut self,
        given: &Map<String, Value>,
        require_title: bool,
    ) -> Result<BTreeMap<String, PropSchema>, ApiError> {
        if given.len() > MAX_PROPERTIES {
            return Err(ApiError::validation(format!(
                "body failed validation: a data source may have at most {MAX_PROPERTIES} properties."
            )));
        }
        let mut out = BTreeMap::new();
        let mut titles = 0;
        for (name, spec) in given {
            let prop = self.parse_prop(name, spec)?;
            if prop.kind == "title" {
                titles += 1;
            }
            out.insert(name.clone(), prop);
        }
        if titles > 1 {
            return Err(ApiError::validation(
                "A data source must have exactly one title property.",
            ));
        }
        if titles == 0 && require_title {
            out.insert(
                "Name".into(),
                PropSchema {
                    id: "title".into(),
                    kind: "title".into(),
                    config: json!({}),
                },
            );
        }
        Ok(out)
    }

    fn parse_prop(&mut self, name: &str, spec: &Value) -> Result<PropSchema, ApiError> {
        if name.is_empty() || name.chars().count() > 100 {
            return Err(ApiError::validation(
                "Property names must be 1 to 100 characters.",
            ));
        }
        let at = format!("body.properties.{name}");
        let spec = obj(spec, &at)?;
        let kind = match spec.get("type").and_then(Value::as_str) {
            Some(k) => k.to_string(),
            None => spec
                .keys()
                .find(|k| PROPERTY_TYPES.contains(&k.as_str()))
                .cloned()
                .ok_or_else(|| ApiError::validation(format!("body failed validation: {at} should define a property type such as `rich_text`.")))?,
        };
        if !PROPERTY_TYPES.contains(&kind.as_str()) {
            return Err(ApiError::validation(format!(
                "body failed validation: {at}.type `{}` is not a property type the sandbox supports.",
                validate::truncate(&kind, 64)
            )));
        }
        let config = spec.get(&kind).cloned().unwrap_or_else(|| json!({}));
        let config = match kind.as_str() {
            "select" | "multi_select" | "status" => {
                let given = config
                    .get("options")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let mut options = Vec::new();
                for o in &given {
                    let n = o.get("name").and_then(Value::as_str).ok_or_else(|| {
                        ApiError::validation(format!(
                            "body failed validation: {at}.options[].name should be a string."
                        ))
                    })?;
                    if n.contains(',') || n.is_empty() {
                        return Err(ApiError::validation(format!(
                            "body failed validation: {at}: option names must be non-empty without commas."
                        )));
                    }
                    let color = o.get("color").and_then(Value::as_str).unwrap_or("default");
                    options.push(json!({"id": self.short_id(), "name": n, "color": color}));
                }
                if kind == "status" && options.is_empty() {
                    for (n, c) in [
                        ("Not started", "default"),
                        ("In progress", "blue"),
                        ("Done", "green"),
                    ] {
                        options.push(json!({"id": self.short_id(), "name": n, "color": c}));
                    }
                }
                json!({"options": options})
            }
            "number" => {
                json!({"format": config.get("format").and_then(Value::as_str).unwrap_or("number")})
            }
            _ => json!({}),
        };
        let id = if kind == "title" {
            "title".to_string()
        } else {
            self.short_id()
        };
        Ok(PropSchema { id, kind, config })
    }

    fn resolve_parent(
        &self,
        integ: usize,
        parent: &Value,
        allow_ds: bool,
    ) -> Result<Parent, ApiError> {
        let p = obj(parent, "body.parent")?;
        if let Some(v) = p.get("page_id") {
            let id = validate::body_id(Some(v), "body.parent.page_id")?;
            self.require(integ, &id, Kind::Page)?;
            return Ok(Parent::Page(id));
        }
        if allow_ds {
            if let Some(v) = p.get("data_source_id") {
                let id = validate::body_id(Some(v), "body.parent.data_source_id")?;
                self.require(integ, &id, Kind::DataSource)?;
                return Ok(Parent::DataSource(id));
            }
            if let Some(v) = p.get("database_id") {
                let id = validate::body_id(Some(v), "body.parent.database_id")?;
                self.require(integ, &id, Kind::Database)?;
                let db = self
                    .databases
                    .get(&id)
                    .ok_or_else(|| ApiError::not_found("database", &id))?;
                let live: Vec<&String> = db
                    .data_sources
                    .iter()
                    .filter(|d| self.data_sources.get(*d).is_some_and(|d| !d.meta.in_trash))
                    .collect();
                if live.len() != 1 {
                    return Err(ApiError::validation(format!(
                        "Database {id} has {} data sources; use parent.data_source_id to choose one (API version 2025-09-03).",
                        live.len()
                    )));
                }
                return Ok(Parent::DataSource(live[0].clone()));
            }
        }
        Err(ApiError::validation(if allow_ds {
            "body failed validation: body.parent should define `page_id` or `data_source_id`."
        } else {
            "body failed validation: body.parent should define `page_id`."
        }))
    }

    fn container_trashed(&self, parent: &Parent) -> bool {
        match parent {
            Parent::Page(id) => self.pages.get(id).is_some_and(|p| p.meta.in_trash),
            Parent::Block(id) => self.blocks.get(id).is_some_and(|b| b.meta.in_trash),
            Parent::DataSource(id) => self.data_sources.get(id).is_some_and(|d| d.meta.in_trash),
            Parent::Workspace => false,
        }
    }

    fn plain_page_values(props: &Map<String, Value>) -> Result<BTreeMap<String, Value>, ApiError> {
        let mut values = BTreeMap::new();
        for (key, v) in props {
            if key != "title" && key != "Title" && key != "Name" {
                return Err(ApiError::validation(format!(
                    "Invalid property identifier for a page whose parent is a page: `{}`; only `title` can be set.",
                    validate::truncate(key, 100)
                )));
            }
            let rt = match v {
                Value::Array(_) => v,
                Value::Object(m) => m.get("title").ok_or_else(|| {
                    ApiError::validation("body.properties.title should be `{\"title\": [...]}`.")
                })?,
                _ => {
                    return Err(ApiError::validation(
                        "body.properties.title should be a rich text array.",
                    ));
                }
            };
            values.insert(
                "title".to_string(),
                validate::normalize_rich_text(rt, "body.properties.title.title")?,
            );
        }
        Ok(values)
    }

    // ---------------------------------------------------------------- pages

    pub fn get_page(&self, integ: usize, id: &str) -> Result<Value, ApiError> {
        self.require(integ, id, Kind::Page)?;
        let page = self
            .pages
            .get(id)
            .ok_or_else(|| ApiError::not_found("page", id))?;
        Ok(self.render_page(page))
    }

    pub fn create_page(
        &mut self,
        integ: usize,
        actor: &str,
        body: &Value,
    ) -> Result<Value, ApiError> {
        let body = obj(body, "body")?;
        let parent =
            self.resolve_parent(integ, body.get("parent").unwrap_or(&Value::Null), true)?;
        if self.container_trashed(&parent) {
            return Err(ApiError::archived());
        }
        let empty = Map::new();
        let props = match body.get("properties") {
            None => &empty,
            Some(v) => obj(v, "body.properties")?,
        };
        let (values, new_options) = match &parent {
            Parent::DataSource(ds) => {
                let (given, opts) = self.row_values(ds, props)?;
                let mut values = self.default_row_values(ds);
                values.extend(given);
                (values, opts)
            }
            _ => {
                let mut v = Self::plain_page_values(props)?;
                v.entry("title".into()).or_insert_with(|| json!([]));
                (v, Vec::new())
            }
        };
        let mut count = 0;
        let blocks = match body.get("children") {
            Some(c) => validate::normalize_blocks(c, "body.children", 1, &mut count)?,
            None => Vec::new(),
        };
        let icon = body.get("icon").cloned().unwrap_or(Value::Null);
        let cover = body.get("cover").cloned().unwrap_or(Value::Null);
        self.ensure_room(1 + count)?;
        // Everything is valid: change state.
        if let Parent::DataSource(ds) = &parent {
            self.add_options(ds, new_options);
        }
        let id = self.new_id();
        let page = Page {
            id: id.clone(),
            parent: parent.clone(),
            values,
            icon,
            cover,
            meta: self.new_meta(actor),
            children: Vec::new(),
        };
        self.pages.insert(id.clone(), page);
        let kids = self.insert_blocks(&Parent::Page(id.clone()), &blocks, actor);
        if let Some(p) = self.pages.get_mut(&id) {
            p.children = kids;
        }
        if let Some(list) = self.children_mut(&parent) {
            list.push(id.clone());
        }
        self.get_page(integ, &id)
    }

    pub fn update_page(
        &mut self,
        integ: usize,
        actor: &str,
        id: &str,
        body: &Value,
    ) -> Result<Value, ApiError> {
        self.require(integ, id, Kind::Page)?;
        let body = obj(body, "body")?;
        let page = self
            .pages
            .get(id)
            .cloned()
            .ok_or_else(|| ApiError::not_found("page", id))?;
        let trash = trash_flag(body)?;
        let empty = Map::new();
        let props = match body.get("properties") {
            None => &empty,
            Some(v) => obj(v, "body.properties")?,
        };
        if page.meta.in_trash
            && trash != Some(false)
            && (!props.is_empty() || body.contains_key("icon") || body.contains_key("cover"))
        {
            return Err(ApiError::archived());
        }
        let (values, new_options) = match &page.parent {
            Parent::DataSource(ds) => self.row_values(ds, props)?,
            _ => (Self::plain_page_values(props)?, Vec::new()),
        };
        if let Parent::DataSource(ds) = &page.parent {
            self.add_options(ds, new_options);
        }
        let now = self.now_ms();
        if let Some(p) = self.pages.get_mut(id) {
            p.values.extend(values);
            if let Some(icon) = body.get("icon") {
                p.icon = icon.clone();
            }
            if let Some(cover) = body.get("cover") {
                p.cover = cover.clone();
            }
            if let Some(t) = trash {
                p.meta.in_trash = t;
            }
            p.meta.edited_ms = now;
            p.meta.edited_by = actor.to_string();
        }
        self.get_page(integ, id)
    }

    pub fn get_page_property(
        &self,
        integ: usize,
        id: &str,
        prop_key: &str,
        query: &BTreeMap<String, String>,
    ) -> Result<Value, ApiError> {
        self.require(integ, id, Kind::Page)?;
        let page = self
            .pages
            .get(id)
            .ok_or_else(|| ApiError::not_found("page", id))?;
        let props = self.page_properties(page);
        let found = props.iter().find(|(name, v)| {
            v.get("id").and_then(Value::as_str) == Some(prop_key) || name.as_str() == prop_key
        });
        let Some((_, value)) = found else {
            return Err(ApiError::not_found("property", prop_key));
        };
        let kind = value
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let prop_id = value.get("id").cloned().unwrap_or(Value::Null);
        let inner = value.get(&kind).cloned().unwrap_or(Value::Null);
        if matches!(kind.as_str(), "title" | "rich_text" | "people") {
            let items: Vec<Value> = inner.as_array().cloned().unwrap_or_default();
            let size = validate::page_size(
                query
                    .get("page_size")
                    .map(|s| Value::String(s.clone()))
                    .as_ref(),
            )?;
            let from = match query.get("start_cursor") {
                None => 0,
                Some(c) => c
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n <= items.len())
                    .ok_or_else(|| {
                        ApiError::validation(format!(
                            "start_cursor provided is invalid: {}",
                            validate::truncate(c, 64)
                        ))
                    })?,
            };
            let to = (from + size).min(items.len());
            let results: Vec<Value> = items[from..to]
                .iter()
                .map(|item| {
                    let mut m = Map::new();
                    m.insert("object".into(), json!("property_item"));
                    m.insert("id".into(), prop_id.clone());
                    m.insert("type".into(), json!(kind));
                    m.insert(kind.clone(), item.clone());
                    Value::Object(m)
                })
                .collect();
            let next = (to < items.len()).then(|| to.to_string());
            let mut out = list(results, next, "property_item");
            out["property_item"] =
                json!({"id": prop_id, "next_url": null, "type": kind, kind.clone(): {}});
            return Ok(out);
        }
        let mut m = Map::new();
        m.insert("object".into(), json!("property_item"));
        m.insert("id".into(), prop_id);
        m.insert("type".into(), json!(kind));
        m.insert(kind, inner);
        Ok(Value::Object(m))
    }

    pub fn move_page(
        &mut self,
        integ: usize,
        actor: &str,
        id: &str,
        body: &Value,
    ) -> Result<Value, ApiError> {
        self.require(integ, id, Kind::Page)?;
        let body = obj(body, "body")?;
        let target =
            self.resolve_parent(integ, body.get("parent").unwrap_or(&Value::Null), true)?;
        let page = self
            .pages
            .get(id)
            .cloned()
            .ok_or_else(|| ApiError::not_found("page", id))?;
        if page.meta.in_trash || self.container_trashed(&target) {
            return Err(ApiError::archived());
        }
        if let Some(tid) = target.id()
            && self.is_within(tid, id)
        {
            return Err(ApiError::validation(
                "A page cannot be moved into itself or one of its descendants.",
            ));
        }
        let values = match &target {
            Parent::DataSource(ds) => {
                let mut v = self.default_row_values(ds);
                if let Some(t) = page.values.get("title") {
                    v.insert("title".into(), t.clone());
                }
                v
            }
            _ => {
                let mut v = BTreeMap::new();
                v.insert(
                    "title".to_string(),
                    page.values
                        .get("title")
                        .cloned()
                        .unwrap_or_else(|| json!([])),
                );
                v
            }
        };
        if let Some(list) = self.children_mut(&page.parent) {
            list.retain(|c| c != id);
        }
        if let Some(list) = self.children_mut(&target) {
            list.push(id.to_string());
        }
        if let Some(p) = self.pages.get_mut(id) {
            p.parent = target;
            p.values = values;
        }
        self.touch(id, actor);
        self.get_page(integ, id)
    }

    // ---------------------------------------------------------------- blocks

    pub fn get_block(&self, integ: usize, id: &str) -> Result<Value, ApiError> {
        self.require(integ, id, Kind::Block)?;
        self.render_block(id)
            .ok_or_else(|| ApiError::not_found("block", id))
    }

    pub fn update_block(
        &mut self,
        integ: usize,
        actor: &str,
        id: &str,
        body: &Value,
    ) -> Result<Value, ApiError> {
        self.require(integ, id, Kind::Block)?;
        let map = obj(body, "body")?;
        let trash = trash_flag(map)?;
        match self.kind_of(id) {
            Some(Kind::Block) => {
                let block = self
                    .blocks
                    .get(id)
                    .cloned()
                    .ok_or_else(|| ApiError::not_found("block", id))?;
                let content = match map.get(&block.kind) {
                    None => None,
                    Some(c) => {
                        if block.meta.in_trash && trash != Some(false) {
                            return Err(ApiError::archived());
                        }
                        let mut spec = Map::new();
                        spec.insert(block.kind.clone(), c.clone());
                        let mut count = 0;
                        let nb = validate::normalize_blocks(
                            &Value::Array(vec![Value::Object(spec)]),
                            "body",
                            1,
                            &mut count,
                        )?;
                        let nb = nb
                            .into_iter()
                            .next()
                            .ok_or_else(|| ApiError::validation("body failed validation."))?;
                        if !nb.children.is_empty() {
                            return Err(ApiError::validation(
                                "Use PATCH /v1/blocks/{id}/children to add children.",
                            ));
                        }
                        // Keep fields not given (e.g. `checked` when only the text changes).
                        let mut merged = block.content.clone();
                        if let (Some(m), Some(given), Some(norm)) = (
                            merged.as_object_mut(),
                            c.as_object(),
                            nb.content.as_object(),
                        ) {
                            for key in given.keys() {
                                if let Some(v) = norm.get(key) {
                                    m.insert(key.clone(), v.clone());
                                }
                            }
                        }
                        Some(merged)
                    }
                };
                if content.is_none()
                    && trash.is_none()
                    && let Some(other) = map
                        .keys()
                        .find(|k| !matches!(k.as_str(), "type" | "in_trash" | "archived"))
                {
                    return Err(ApiError::validation(format!(
                        "body failed validation: block {id} is a `{}`; its type cannot change to `{}`.",
                        block.kind,
                        validate::truncate(other, 64)
                    )));
                }
                if let Some(b) = self.blocks.get_mut(id) {
                    if let Some(c) = content {
                        b.content = c;
                    }
                    if let Some(t) = trash {
                        b.meta.in_trash = t;
                    }
                }
                self.touch(id, actor);
            }
            Some(Kind::Page) => {
                let mut patch = Map::new();
                if let Some(t) = trash {
                    patch.insert("in_trash".into(), json!(t));
                }
                if let Some(cp) = map.get("child_page")
                    && let Some(title) = cp.get("title").and_then(Value::as_str)
                {
                    patch.insert("properties".into(), json!({"title": rich_text(title)}));
                }
                self.update_page(integ, actor, id, &Value::Object(patch))?;
            }
            Some(Kind::Database) => {
                if let Some(t) = trash {
                    if let Some(d) = self.databases.get_mut(id) {
                        d.meta.in_trash = t;
                    }
                    self.touch(id, actor);
                }
            }
            _ => return Err(ApiError::not_found("block", id)),
        }
        self.get_block(integ, id)
    }

    pub fn delete_block(&mut self, integ: usize, actor: &str, id: &str) -> Result<Value, ApiError> {
        self.update_block(integ, actor, id, &json!({"in_trash": true}))
    }

    fn children_of(&self, id: &str) -> Option<&Vec<String>> {
        if let Some(p) = self.pages.get(id) {
            Some(&p.children)
        } else if let Some(b) = self.blocks.get(id) {
            Some(&b.children)
        } else {
            None
        }
    }

    pub fn list_children(
        &self,
        integ: usize,
        id: &str,
        cursor: Option<&str>,
        size: usize,
    ) -> Result<Value, ApiError> {
        self.require(integ, id, Kind::Block)?;
        let ids: Vec<String> = self
            .children_of(id)
            .map(|c| c.iter().filter(|c| self.is_live(c)).cloned().collect())
            .unwrap_or_default();
        let (range, next) = paginate(&ids, cursor, size)?;
        let results = ids[range]
            .iter()
            .filter_map(|c| self.render_block(c))
            .collect();
        Ok(list(results, next, "block"))
    }

    pub fn append_children(
        &mut self,
        integ: usize,
        actor: &str,
        id: &str,
        body: &Value,
    ) -> Result<Value, ApiError> {
        self.require(integ, id, Kind::Block)?;
        let map = obj(body, "body")?;
        let (parent, kind, trashed) = if let Some(p) = self.pages.get(id) {
            (
                Parent::Page(id.to_string()),
                "child_page".to_string(),
                p.meta.in_trash,
            )
        } else if let Some(b) = self.blocks.get(id) {
            (
                Parent::Block(id.to_string()),
                b.kind.clone(),
                b.meta.in_trash,
            )
        } else {
            return Err(ApiError::validation(format!(
                "Block {id} does not support children."
            )));
        };
        if trashed {
            return Err(ApiError::archived());
        }
        if !validate::block_supports_children(&kind) {
            return Err(ApiError::validation(format!(
                "Block type `{kind}` does not support children."
            )));
        }
        let children = map.get("children").ok_or_else(|| {
            ApiError::validation(
                "body failed validation: body.children should be defined, instead was `undefined`.",
            )
        })?;
        let mut count = 0;
        let blocks = validate::normalize_blocks(children, "body.children", 1, &mut count)?;
        let after = match map.get("after") {
            None | Some(Value::Null) => None,
            v => {
                let a = validate::body_id(v, "body.after")?;
                let pos = self
                    .children_of(id)
                    .and_then(|c| c.iter().position(|x| *x == a))
                    .ok_or_else(|| {
                        ApiError::validation(format!(
                            "body.after: block {a} is not a child of {id}."
                        ))
                    })?;
                Some(pos)
            }
        };
        self.ensure_room(Self::count_blocks(&blocks))?;
        let new_ids = self.insert_blocks(&parent, &blocks, actor);
        if let Some(list) = self.children_mut(&parent) {
            let at = after.map_or(list.len(), |p| p + 1);
            for (i, nid) in new_ids.iter().enumerate() {
                list.insert(at + i, nid.clone());
            }
        }
        self.touch(id, actor);
        let results = new_ids
            .iter()
            .filter_map(|b| self.render_block(b))
            .collect();
        Ok(list(results, None, "block"))
    }

    // ---------------------------------------------------------------- databases and data sources

    pub fn get_database(&self, integ: usize, id: &str) -> Result<Value, ApiError> {
        self.require(integ, id, Kind::Database)?;
        let db = self
            .databases
            .get(id)
            .ok_or_else(|| ApiError::not_found("database", id))?;
        Ok(self.render_database(db))
    }

    pub fn create_database(
        &mut self,
        integ: usize,
        actor: &str,
        body: &Value,
    ) -> Result<Value, ApiError> {
        let map = obj(body, "body")?;
        let parent =
            self.resolve_parent(integ, map.get("parent").unwrap_or(&Value::Null), false)?;
        if self.container_trashed(&parent) {
            return Err(ApiError::archived());
        }
        let title = match map.get("title") {
            Some(t) => validate::normalize_rich_text(t, "body.title")?,
            None => json!([]),
        };
        let description = match map.get("description") {
            Some(t) => validate::normalize_rich_text(t, "body.description")?,
            None => json!([]),
        };
        let is_inline = opt_bool(map, "is_inline")?.unwrap_or(false);
        let empty = Map::new();
        let initial = match map.get("initial_data_source") {
            None => &empty,
            Some(v) => obj(v, "body.initial_data_source")?,
        };
        let schema_in = match initial.get("properties") {
            None => &empty,
            Some(v) => obj(v, "body.initial_data_source.properties")?,
        };
        let schema = self.parse_schema(schema_in, true)?;
        self.ensure_room(2)?;
        let db_id = self.new_id();
        let ds_id = self.new_id();
        let meta = self.new_meta(actor);
        self.data_sources.insert(
            ds_id.clone(),
            DataSource {
                id: ds_id.clone(),
                database_id: db_id.clone(),
                title: title.clone(),
                description: json!([]),
                properties: schema,
                rows: Vec::new(),
                meta: meta.clone(),
            },
        );
        self.databases.insert(
            db_id.clone(),
            Database {
                id: db_id.clone(),
                parent: parent.clone(),
                title,
                description,
                data_sources: vec![ds_id],
                is_inline,
                icon: map.get("icon").cloned().unwrap_or(Value::Null),
                meta,
            },
        );
        if let Some(list) = self.children_mut(&parent) {
            list.push(db_id.clone());
        }
        self.get_database(integ, &db_id)
    }

    pub fn update_database(
        &mut self,
        integ: usize,
        actor: &str,
        id: &str,
        body: &Value,
    ) -> Result<Value, ApiError> {
        self.require(integ, id, Kind::Database)?;
        let map = obj(body, "body")?;
        let title = map
            .get("title")
            .map(|t| validate::normalize_rich_text(t, "body.title"))
            .transpose()?;
        let description = map
            .get("description")
            .map(|t| validate::normalize_rich_text(t, "body.description"))
            .transpose()?;
        let is_inline = opt_bool(map, "is_inline")?;
        let trash = trash_flag(map)?;
        if map.contains_key("properties") {
            return Err(ApiError::validation(
                "Database properties live on its data sources in API version 2025-09-03; use PATCH /v1/data_sources/{id}.",
            ));
        }
        let db = self
            .databases
            .get(id)
            .ok_or_else(|| ApiError::not_found("database", id))?;
        if db.meta.in_trash && trash != Some(false) && (title.is_some() || description.is_some()) {
            return Err(ApiError::archived());
        }
        if let Some(d) = self.databases.get_mut(id) {
            if let Some(t) = title {
                d.title = t;
            }
            if let Some(t) = description {
                d.description = t;
            }
            if let Some(i) = is_inline {
                d.is_inline = i;
            }
            if let Some(t) = trash {
                d.meta.in_trash = t;
            }
            if let Some(icon) = map.get("icon") {
                d.icon = icon.clone();
            }
        }
        self.touch(id, actor);
        self.get_database(integ, id)
    }

    pub fn get_data_source(&self, integ: usize, id: &str) -> Result<Value, ApiError> {
        self.require(integ, id, Kind::DataSource)?;
        let ds = self
            .data_sources
            .get(id)
            .ok_or_else(|| ApiError::not_found("data_source", id))?;
        Ok(self.render_data_source(ds))
    }

    pub fn create_data_source(
        &mut self,
        integ: usize,
        actor: &str,
        body: &Value,
    ) -> Result<Value, ApiError> {
        let map = obj(body, "body")?;
        let parent = obj(map.get("parent").unwrap_or(&Value::Null), "body.parent")?;
        let db_id = validate::body_id(parent.get("database_id"), "body.parent.database_id")?;
        self.require(integ, &db_id, Kind::Database)?;
        let db = self
            .databases
            .get(&db_id)
            .ok_or_else(|| ApiError::not_found("database", &db_id))?;
        if db.meta.in_trash {
            return Err(ApiError::archived());
        }
        if db.data_sources.len() >= MAX_DATA_SOURCES {
            return Err(ApiError::validation(format!(
                "A database may have at most {MAX_DATA_SOURCES} data sources."
            )));
        }
        let title = match map.get("title") {
            Some(t) => validate::normalize_rich_text(t, "body.title")?,
            None => json!([]),
        };
        let empty = Map::new();
        let schema_in = match map.get("properties") {
            None => &empty,
            Some(v) => obj(v, "body.properties")?,
        };
        let schema = self.parse_schema(schema_in, true)?;
        self.ensure_room(1)?;
        let id = self.new_id();
        let meta = self.new_meta(actor);
        self.data_sources.insert(
            id.clone(),
            DataSource {
                id: id.clone(),
                database_id: db_id.clone(),
                title,
                description: json!([]),
                properties: schema,
                rows: Vec::new(),
                meta,
            },
        );
        if let Some(d) = self.databases.get_mut(&db_id) {
            d.data_sources.push(id.clone());
        }
        self.get_data_source(integ, &id)
    }

    pub fn update_data_source(
        &mut self,
        integ: usize,
        actor: &str,
        id: &str,
        body: &Value,
    ) -> Result<Value, ApiError> {
        self.require(integ, id, Kind::DataSource)?;
        let map = obj(body, "body")?;
        let ds = self
            .data_sources
            .get(id)
            .cloned()
            .ok_or_else(|| ApiError::not_found("data_source", id))?;
        let title = map
            .get("title")
            .map(|t| validate::normalize_rich_text(t, "body.title"))
            .transpose()?;
        let trash = trash_flag(map)?;
        let mut schema = ds.properties.clone();
        if let Some(props) = map.get("properties") {
            let props = obj(props, "body.properties")?;
            for (key, spec) in props {
                let existing = Self::find_prop(&ds, key).map(|(n, p)| (n.clone(), p.clone()));
                match (existing, spec) {
                    (Some((name, prop)), Value::Null) => {
                        if prop.kind == "title" {
                            return Err(ApiError::validation(
                                "The title property cannot be removed.",
                            ));
                        }
                        schema.remove(&name);
                    }
                    (None, Value::Null) => {
                        return Err(ApiError::validation(format!(
                            "{} is not a property that exists.",
                            validate::truncate(key, 100)
                        )));
                    }
                    (Some((name, prop)), Value::Object(m)) => {
                        let new_name = match m.get("name") {
                            Some(Value::String(n)) if !n.is_empty() && n.chars().count() <= 100 => {
                                n.clone()
                            }
                            Some(_) => {
                                return Err(ApiError::validation(
                                    "Property names must be 1 to 100 characters.",
                                ));
                            }
                            None => name.clone(),
                        };
                        let has_type = m
                            .keys()
                            .any(|k| PROPERTY_TYPES.contains(&k.as_str()) || k == "type");
                        let updated = if has_type {
                            let mut p = self.parse_prop(&new_name, spec)?;
                            if p.kind == prop.kind {
                                p.id = prop.id.clone();
                            } else if prop.kind == "title" {
                                return Err(ApiError::validation(
                                    "The title property cannot change type.",
                                ));
                            }
                            p
                        } else {
                            prop.clone()
                        };
                        schema.remove(&name);
                        if schema.contains_key(&new_name) {
                            return Err(ApiError::validation(format!(
                                "A property named {new_name} already exists."
                            )));
                        }
                        schema.insert(new_name, updated);
                    }
                    (None, Value::Object(_)) => {
                        let p = self.parse_prop(key, spec)?;
                        if p.kind == "title" {
                            return Err(ApiError::validation(
                                "A data source must have exactly one title property.",
                            ));
                        }
                        schema.insert(key.clone(), p);
                    }
                    _ => {
                        return Err(ApiError::validation(format!(
                            "body failed validation: body.properties.{key} should be an object or null."
                        )));
                    }
                }
            }
            if schema.len() > MAX_PROPERTIES {
                return Err(ApiError::validation(format!(
                    "A data source may have at most {MAX_PROPERTIES} properties."
                )));
            }
        }
        if ds.meta.in_trash
            && trash != Some(false)
            && (title.is_some() || map.contains_key("properties"))
        {
            return Err(ApiError::archived());
        }
        if let Some(d) = self.data_sources.get_mut(id) {
            d.properties = schema;
            if let Some(t) = title {
                d.title = t;
            }
            if let Some(t) = trash {
                d.meta.in_trash = t;
            }
        }
        self.touch(id, actor);
        self.get_data_source(integ, id)
    }

    pub fn query_data_source(
        &self,
        integ: usize,
        id: &str,
        body: &Value,
    ) -> Result<Value, ApiError> {
        self.require(integ, id, Kind::DataSource)?;
        let map = obj(body, "body")?;
        let ds = self
            .data_sources
            .get(id)
            .ok_or_else(|| ApiError::not_found("data_source", id))?;
        let filter = match map.get("filter") {
            None | Some(Value::Null) => None,
            Some(f) => Some(query::compile_filter(f, ds, 0)?),
        };
        let sorts = match map.get("sorts") {
            None | Some(Value::Null) => Vec::new(),
            Some(s) => query::compile_sorts(s, ds)?,
        };
        let size = validate::page_size(map.get("page_size"))?;
        let cursor = validate::start_cursor(map.get("start_cursor"))?;
        let include_trashed = opt_bool(map, "in_trash")?.unwrap_or(false);
        let mut rows: Vec<(&Page, Map<String, Value>)> = ds
            .rows
            .iter()
            .filter_map(|r| self.pages.get(r))
            .filter(|p| include_trashed || !p.meta.in_trash)
            .map(|p| (p, self.page_properties(p)))
            .filter(|(p, props)| filter.as_ref().is_none_or(|f| query::matches(f, props, p)))
            .collect();
        query::sort_rows(&mut rows, &sorts);
        let ids: Vec<String> = rows.iter().map(|(p, _)| p.id.clone()).collect();
        let (range, next) = paginate(&ids, cursor.as_deref(), size)?;
        let results = rows[range]
            .iter()
            .map(|(p, _)| self.render_page(p))
            .collect();
        Ok(list(results, next, "page_or_data_source"))
    }

    // ---------------------------------------------------------------- search

    pub fn search(&self, integ: usize, body: &Value) -> Result<Value, ApiError> {
        let map = obj(body, "body")?;
        let text = match map.get("query") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.to_lowercase(),
            Some(_) => {
                return Err(ApiError::validation(
                    "body failed validation: body.query should be a string.",
                ));
            }
        };
        let (want_pages, want_sources) = match map.get("filter") {
            None | Some(Value::Null) => (true, true),
            Some(f) => {
                let prop = f.get("property").and_then(Value::as_str);
                match (prop, f.get("value").and_then(Value::as_str)) {
                    (Some("object"), Some("page")) => (true, false),
                    (Some("object"), Some("data_source")) => (false, true),
                    (_, v) => {
                        return Err(ApiError::validation(format!(
                            "body failed validation: body.filter.value should be `page` or `data_source`, instead was `{}`.",
                            validate::truncate(v.unwrap_or("undefined"), 64)
                        )));
                    }
                }
            }
        };
        let descending = match map.get("sort") {
            None | Some(Value::Null) => true,
            Some(s) => {
                if s.get("timestamp").and_then(Value::as_str) != Some("last_edited_time") {
                    return Err(ApiError::validation(
                        "body failed validation: body.sort.timestamp should be `last_edited_time`.",
                    ));
                }
                match s.get("direction").and_then(Value::as_str) {
                    Some("descending") => true,
                    Some("ascending") => false,
                    _ => {
                        return Err(ApiError::validation(
                            "body failed validation: body.sort.direction should be `ascending` or `descending`.",
                        ));
                    }
                }
            }
        };
        let size = validate::page_size(map.get("page_size"))?;
        let cursor = validate::start_cursor(map.get("start_cursor"))?;
        let mut hits: Vec<(i64, String, bool)> = Vec::new();
        if want_pages {
            for p in self.pages.values() {
                if !p.meta.in_trash
                    && self.visible(integ, &p.id)
                    && self.page_title(p).to_lowercase().contains(&text)
                {
                    hits.push((p.meta.edited_ms, p.id.clone(), true));
                }
            }
        }
        if want_sources {
            for ds in self.data_sources.values() {
                if !ds.meta.in_trash
                    && self.visible(integ, &ds.id)
                    && validate::plain_text(&ds.title)
                        .to_lowercase()
                        .contains(&text)
                {
                    hits.push((ds.meta.edited_ms, ds.id.clone(), false));
                }
            }
        }
        hits.sort_by(|a, b| {
            if descending {
                b.0.cmp(&a.0).then(a.1.cmp(&b.1))
            } else {
                a.0.cmp(&b.0).then(a.1.cmp(&b.1))
            }
        });
        let ids: Vec<String> = hits.iter().map(|h| h.1.clone()).collect();
        let (range, next) = paginate(&ids, cursor.as_deref(), size)?;
        let results = hits[range]
            .iter()
            .filter_map(|(_, id, is_page)| {
                if *is_page {
                    self.pages.get(id).map(|p| self.render_page(p))
                } else {
                    self.data_sources
                        .get(id)
                        .map(|d| self.render_data_source(d))
                }
            })
            .collect();
        Ok(list(results, next, "page_or_data_source"))
    }

    // ---------------------------------------------------------------- comments

    pub fn list_comments(
        &self,
        integ: usize,
        block_id: &str,
        cursor: Option<&str>,
        size: usize,
    ) -> Result<Value, ApiError> {
        self.require(integ, block_id, Kind::Block)?;
        let mut found: Vec<&Comment> = self
            .comments
            .values()
            .filter(|c| c.parent.id() == Some(block_id))
            .collect();
        found.sort_by_key(|c| c.seq);
        let ids: Vec<String> = found.iter().map(|c| c.id.clone()).collect();
        let (range, next) = paginate(&ids, cursor, size)?;
        let results = found[range]
            .iter()
            .map(|c| self.render_comment(c))
            .collect();
        Ok(list(results, next, "comment"))
    }

    pub fn create_comment(
        &mut self,
        integ: usize,
        actor: &str,
        body: &Value,
    ) -> Result<Value, ApiError> {
        let map = obj(body, "body")?;
        let rt = map.get("rich_text").ok_or_else(|| {
            ApiError::validation("body failed validation: body.rich_text should be defined, instead was `undefined`.")
        })?;
        let rich = validate::normalize_rich_text(rt, "body.rich_text")?;
        let (parent, discussion) = if let Some(p) = map.get("parent") {
            let p = obj(p, "body.parent")?;
            let pid = if let Some(v) = p.get("page_id") {
                validate::body_id(Some(v), "body.parent.page_id")?
            } else {
                validate::body_id(p.get("block_id"), "body.parent.block_id")?
            };
            self.require(integ, &pid, Kind::Block)?;
            let parent = if self.pages.contains_key(&pid) {
                Parent::Page(pid)
            } else {
                Parent::Block(pid)
            };
            (parent, None)
        } else if let Some(d) = map.get("discussion_id") {
            let did = validate::body_id(Some(d), "body.discussion_id")?;
            let first = self
                .comments
                .values()
                .find(|c| c.discussion_id == did)
                .ok_or_else(|| ApiError::not_found("discussion", &did))?;
            let parent = first.parent.clone();
            if let Some(pid) = parent.id() {
                self.require(integ, pid, Kind::Block)
                    .map_err(|_| ApiError::not_found("discussion", &did))?;
            }
            (parent, Some(did))
        } else {
            return Err(ApiError::validation(
                "body failed validation: body should define `parent` or `discussion_id`.",
            ));
        };
        self.ensure_room(1)?;
        let discussion = match discussion {
            Some(d) => d,
            None => self.new_id(),
        };
        let id = self.new_id();
        let seq = self.next_seq();
        let comment = Comment {
            id: id.clone(),
            parent,
            discussion_id: discussion,
            rich_text: rich,
            created_ms: self.now_ms(),
            created_by: actor.to_string(),
            seq,
        };
        let out = self.render_comment(&comment);
        self.comments.insert(id, comment);
        Ok(out)
    }

    // ---------------------------------------------------------------- users

    pub fn list_users(&self, cursor: Option<&str>, size: usize) -> Result<Value, ApiError> {
        let mut users: Vec<&User> = self.users.values().collect();
        users.sort_by_key(|u| u.seq);
        let ids: Vec<String> = users.iter().map(|u| u.id.clone()).collect();
        let (range, next) = paginate(&ids, cursor, size)?;
        let results = users[range].iter().map(|u| self.render_user(u)).collect();
        Ok(list(results, next, "user"))
    }

    pub fn get_user(&self, id: &str) -> Result<Value, ApiError> {
        self.users
            .get(id)
            .map(|u| self.render_user(u))
            .ok_or_else(|| ApiError::not_found("user", id))
    }

    pub fn add_user(&mut self, name: &str, email: Option<String>) -> String {
        let id = self.new_id();
        let seq = self.next_seq();
        self.users.insert(
            id.clone(),
            User {
                id: id.clone(),
                name: name.to_string(),
                email,
                seq,
            },
        );
        id
    }

    pub fn stats(&self) -> BTreeMap<String, IntegrationStats> {
        self.integrations
            .iter()
            .map(|i| (i.name.clone(), i.stats()))
            .collect()
    }
}

/// Property types the sandbox models.
pub(crate) const PROPERTY_TYPES: &[&str] = &[
    "title",
    "rich_text",
    "number",
    "select",
    "multi_select",
    "status",
    "date",
    "checkbox",
    "people",
    "url",
    "email",
    "phone_number",
    "created_time",
    "last_edited_time",
    "created_by",
    "last_edited_by",
];

/// Notion's limits: URLs 2000 characters, emails and phone numbers 200.
fn max_chars(kind: &str) -> usize {
    if kind == "url" {
        validate::MAX_RICH_TEXT_CHARS
    } else {
        200
    }
}

fn is_computed(kind: &str) -> bool {
    matches!(
        kind,
        "created_time" | "last_edited_time" | "created_by" | "last_edited_by"
    )
}

fn empty_value(kind: &str) -> Value {
    match kind {
        "title" | "rich_text" | "multi_select" | "people" => json!([]),
        "checkbox" => json!(false),
        _ => Value::Null,
    }
}
