//! One rate limiter per Notion integration: a token bucket at the integration's [`Budget`],
//! in front of a bounded queue with fair shares between sessions.
//!
//! Waiters queue in one FIFO per session (`CallContext::session_id`); the FIFOs are served
//! round-robin, so one busy agent cannot starve the others. Every waiter has a deadline: a
//! waiter whose estimated wait already exceeds it is answered at once with
//! [`CallError::RateLimited`], and a waiter still queued when its deadline passes gets the
//! same answer, never a hang. After Notion answers 429/529, [`LimiterMsg::Pause`] stops all
//! permits until `Retry-After` has passed and empties the bucket.
//!
//! A data plane creates every limiter empty ([`LimiterArgs::restarted`]): it cannot know
//! what a previous incarnation of its node sent just before it started, so the burst is
//! earned, not assumed; the cost is that an integration's first call waits 1/rps (333 ms at
//! the default 3/s). [`LimiterArgs::fresh`] (a full bucket) is for tests and for the
//! simulator's planted bug `limiter-forgets-state`.
//!
//! Time comes from `tokio::time::Instant` (paused and driven by the simulator). The bucket
//! state that a handoff must carry is [`LimiterSnapshot`] (tokens and remaining pause, both
//! relative, so they mean the same on another node). When an integration's shard moves, the
//! new owner adopts the old owner's snapshot: a limiter that does not exist yet starts from it
//! ([`LimiterArgs::adopted`], bounded by the integration's current budget), one that exists
//! merges it ([`TokenBucket::merge`]: the fewer tokens and the longer pause), so an adopted
//! bucket is never more permissive than either side.
//!
//! **Epochs.** A node may own a shard, lose it and get it back; meanwhile its limiter refilled
//! while another node spent the burst. So the bucket records the [`ShardEpoch`] (the
//! integration's shard and its owner epoch) it last sent under, and the owner's calls carry
//! theirs ([`acquire_at`]); the rules are [`TokenBucket::enter`] and [`TokenBucket::adopt`]:
//! - a call under a later epoch of the recorded shard, another shard, or none recorded
//!   empties the bucket first (a running pause stays) and records its epoch — exactly as
//!   conservative as a limiter started after a crash, whether or not the previous owner's
//!   snapshot ever arrives;
//! - a snapshot sent for a later epoch (one this limiter has not sent under yet) replaces the
//!   tokens with the snapshot's, keeps the longer pause and records the epoch: the previous
//!   owner's bucket is the one that counted the requests sent since;
//! - a snapshot for the recorded epoch, for an earlier one, for another shard or with none
//!   recorded merges (the fewer tokens, the longer pause): it never adds tokens.
//!
//! Calls without an epoch (a data plane used on its own, without shard owners) leave the
//! record alone.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::time::Instant;

use crate::call::{Budget, CallError};

/// One token, in the bucket's fixed-point unit (a millionth of a request).
pub const TOKEN_MICROS: u64 = 1_000_000;

/// Largest accepted refill rate; above it a budget is a typo, not Notion's limit.
pub const MAX_REQUESTS_PER_SECOND: u32 = 10_000;

/// Longest pause accepted; a longer `Retry-After` is clamped to it.
pub const MAX_PAUSE_MS: u64 = 3_600_000;

/// Bounds on a limiter's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimiterConfig {
    /// Waiters queued in total, all sessions together.
    pub queue_capacity: usize,
    /// Waiters queued for one session.
    pub per_session_capacity: usize,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 1024,
            per_session_capacity: 256,
        }
    }
}

/// Checks a budget before a limiter is built on it.
pub fn validate_budget(budget: &Budget) -> Result<(), String> {
    if budget.requests_per_second == 0 || budget.requests_per_second > MAX_REQUESTS_PER_SECOND {
        return Err(format!(
            "requests_per_second {} is outside 1..={MAX_REQUESTS_PER_SECOND}",
            budget.requests_per_second
        ));
    }
    if budget.burst == 0 || budget.burst > MAX_REQUESTS_PER_SECOND {
        return Err(format!(
            "burst {} is outside 1..={MAX_REQUESTS_PER_SECOND}",
            budget.burst
        ));
    }
    Ok(())
}

/// The shard ownership a call is sent under: the integration's shard (as the node names it)
/// and the epoch of the shard map that makes this node its owner. Epochs of one shard only
/// grow; those of different shards are not comparable.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardEpoch {
    pub shard: String,
    pub epoch: u64,
}

impl ShardEpoch {
    pub fn new(shard: impl Into<String>, epoch: u64) -> Self {
        Self {
            shard: shard.into(),
            epoch,
        }
    }

    /// Whether `self` is a later epoch of the same shard than `recorded`.
    fn after(&self, recorded: Option<&ShardEpoch>) -> bool {
        recorded.is_some_and(|r| r.shard == self.shard && self.epoch > r.epoch)
    }

    /// Whether `self` is the recorded epoch, or an earlier one of the same shard.
    fn at_or_before(&self, recorded: Option<&ShardEpoch>) -> bool {
        recorded.is_some_and(|r| r.shard == self.shard && self.epoch <= r.epoch)
    }
}

impl std::fmt::Display for ShardEpoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at epoch {}", self.shard, self.epoch)
    }
}

/// What [`TokenBucket::adopt`] did with a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdoptRule {
    /// Sent for an epoch this bucket has not sent under: its tokens replaced the bucket's.
    Replaced,
    /// Merged: the fewer tokens and the longer pause.
    Merged,
}

/// A token bucket in fixed point, driven by the instants it is handed, with the shard epoch
/// it last sent under (see the module docs).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    budget: Budget,
    tokens_micros: u64,
    last_refill: Instant,
    paused_until: Option<Instant>,
    epoch: Option<ShardEpoch>,
}

impl TokenBucket {
    /// A bucket holding `tokens_micros` (clamped to the burst) at `now`.
    pub fn new(budget: Budget, tokens_micros: u64, now: Instant) -> Self {
        Self {
            budget,
            tokens_micros: tokens_micros.min(capacity_micros(&budget)),
            last_refill: now,
            paused_until: None,
            epoch: None,
        }
    }

    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// The shard epoch this bucket last sent under (or adopted a snapshot for).
    pub fn epoch(&self) -> Option<&ShardEpoch> {
        self.epoch.as_ref()
    }

    /// Records `epoch` without touching the tokens: for a bucket that starts empty, or from
    /// a snapshot sent for that epoch.
    pub fn with_epoch(mut self, epoch: Option<ShardEpoch>) -> Self {
        self.epoch = epoch;
        self
    }

    /// Before a permit for a call sent under `at`: unless the bucket already sent under `at`
    /// (or a later epoch of that shard), it is emptied — a running pause stays — and `at` is
    /// recorded. Returns whether it was emptied.
    pub fn enter(&mut self, at: &ShardEpoch, now: Instant) -> bool {
        if at.at_or_before(self.epoch.as_ref()) {
            return false;
        }
        self.refill(now);
        self.tokens_micros = 0;
        self.last_refill = now;
        self.epoch = Some(at.clone());
        true
    }

    /// Takes in a snapshot the previous owner sent for `at` (see the module docs): for a later
    /// epoch of the recorded shard its tokens replace this bucket's (the longer pause of the
    /// two stays) and `at` is recorded; otherwise it merges ([`TokenBucket::merge`]), and
    /// `at` is recorded unless the bucket already sent under a later epoch of that shard.
    pub fn adopt(
        &mut self,
        snapshot: &LimiterSnapshot,
        at: &ShardEpoch,
        now: Instant,
    ) -> AdoptRule {
        if at.after(self.epoch.as_ref()) {
            self.refill(now);
            self.tokens_micros = snapshot.tokens_micros.min(capacity_micros(&self.budget));
            self.last_refill = now;
            if self.paused_for(now).is_some() {
                self.tokens_micros = 0;
            }
            self.merge_pause(snapshot, now);
            self.epoch = Some(at.clone());
            return AdoptRule::Replaced;
        }
        self.merge(snapshot, now);
        if !at.at_or_before(self.epoch.as_ref()) {
            self.epoch = Some(at.clone());
        }
        AdoptRule::Merged
    }

    /// Adds what the rate earned since the last refill. Nothing accrues during a pause.
    pub fn refill(&mut self, now: Instant) {
        let from = match self.paused_until {
            Some(until) if until > now => {
                self.last_refill = now;
                return;
            }
            Some(until) => {
                self.paused_until = None;
                until.max(self.last_refill)
            }
            None => self.last_refill,
        };
        let elapsed_us = now.saturating_duration_since(from).as_micros();
        let earned = elapsed_us.saturating_mul(u128::from(self.budget.requests_per_second));
        let cap = capacity_micros(&self.budget);
        self.tokens_micros = (u128::from(self.tokens_micros) + earned).min(u128::from(cap)) as u64;
        self.last_refill = now.max(self.last_refill);
    }

    /// Takes one token if there is one (and no pause).
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.paused_until.is_some() || self.tokens_micros < TOKEN_MICROS {
            return false;
        }
        self.tokens_micros -= TOKEN_MICROS;
        true
    }

    /// How long until `n` tokens will have been available, counting the pause.
    pub fn wait_for(&self, n: u64, now: Instant) -> Duration {
        let (start, tokens) = match self.paused_until {
            Some(until) if until > now => (until, 0),
            _ => {
                let mut b = self.clone();
                b.refill(now);
                (now, b.tokens_micros)
            }
        };
        let needed = n.saturating_mul(TOKEN_MICROS);
        let until_start = start.saturating_duration_since(now);
        if tokens >= needed {
            return until_start;
        }
        let deficit = needed - tokens;
        let rate = u64::from(self.budget.requests_per_second.max(1));
        until_start + Duration::from_micros(deficit.div_ceil(rate))
    }

    /// No tokens until `now + retry_after` (a longer pause already set stays), and the bucket
    /// is emptied so the first permits after the pause come at the average rate.
    pub fn pause(&mut self, retry_after: Duration, now: Instant) {
        self.refill(now);
        let until = now + retry_after.min(Duration::from_millis(MAX_PAUSE_MS));
        self.paused_until = Some(self.paused_until.map_or(until, |u| u.max(until)));
        self.tokens_micros = 0;
        self.last_refill = now;
    }

    /// Switches to a new budget, keeping the tokens (clamped to the new burst).
    pub fn set_budget(&mut self, budget: Budget, now: Instant) {
        self.refill(now);
        self.budget = budget;
        self.tokens_micros = self.tokens_micros.min(capacity_micros(&budget));
    }

    pub fn tokens_micros(&self, now: Instant) -> u64 {
        let mut b = self.clone();
        b.refill(now);
        b.tokens_micros
    }

    pub fn paused_for(&self, now: Instant) -> Option<Duration> {
        self.paused_until
            .filter(|u| *u > now)
            .map(|u| u.saturating_duration_since(now))
    }

    /// The state a handoff carries to another node.
    pub fn snapshot(&self, now: Instant) -> LimiterSnapshot {
        LimiterSnapshot {
            budget: self.budget,
            tokens_micros: self.tokens_micros(now),
            pause_remaining_ms: self.paused_for(now).map_or(0, |d| {
                d.as_micros().div_ceil(1000).min(u128::from(u64::MAX)) as u64
            }),
        }
    }

    /// Takes in a snapshot another node's limiter for the same integration exported, at
    /// `now`: the bucket keeps the fewer tokens and the longer pause of the two, so it is
    /// never more permissive than either. A pause in the snapshot empties the bucket, as a
    /// local pause does.
    pub fn merge(&mut self, snapshot: &LimiterSnapshot, now: Instant) {
        self.refill(now);
        if !self.merge_pause(snapshot, now) {
            self.tokens_micros = self.tokens_micros.min(snapshot.tokens_micros);
        }
    }

    /// Takes the snapshot's pause if it has one (the longer of the two stays), emptying the
    /// bucket. Returns whether it had one. The bucket must be refilled to `now`.
    fn merge_pause(&mut self, snapshot: &LimiterSnapshot, now: Instant) -> bool {
        if snapshot.pause_remaining_ms == 0 {
            return false;
        }
        let until = now + Duration::from_millis(snapshot.pause_remaining_ms.min(MAX_PAUSE_MS));
        self.paused_until = Some(self.paused_until.map_or(until, |u| u.max(until)));
        self.tokens_micros = 0;
        self.last_refill = now;
        true
    }

    /// Rebuilds a bucket from a handoff snapshot taken on another node.
    pub fn from_snapshot(snapshot: &LimiterSnapshot, now: Instant) -> Self {
        let mut b = Self::new(snapshot.budget, snapshot.tokens_micros, now);
        if snapshot.pause_remaining_ms > 0 {
            let pause_ms = snapshot.pause_remaining_ms.min(MAX_PAUSE_MS);
            b.paused_until = Some(now + Duration::from_millis(pause_ms));
            b.tokens_micros = 0;
        }
        b
    }
}

fn capacity_micros(budget: &Budget) -> u64 {
    u64::from(budget.burst).saturating_mul(TOKEN_MICROS)
}

/// What a limiter's state is, for tests and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct LimiterState {
    pub budget: Budget,
    /// Tokens in the bucket now, in millionths.
    pub tokens_micros: u64,
    /// Time left in a pause after 429/529.
    pub paused_for: Option<Duration>,
    pub queued: usize,
    pub queued_sessions: usize,
    /// Permits handed out since the limiter started.
    pub granted: u64,
    /// Waiters answered `RateLimited` (queue full, deadline too near or passed).
    pub rejected: u64,
    /// The shard epoch the limiter last sent under (or adopted a snapshot for).
    pub epoch: Option<ShardEpoch>,
}

impl LimiterState {
    /// How long until this limiter holds nothing a successor starting empty would need: no
    /// pause left and a full bucket (the pause, then `burst` tokens earned at the rate).
    /// Zero when it is there already. A tenant supervisor passivates only once every one of
    /// its limiters reads zero here, so a `Retry-After` is never forgotten.
    pub fn settled_in(&self) -> Duration {
        let pause = self.paused_for.unwrap_or_default();
        let tokens = if self.paused_for.is_some() {
            0
        } else {
            self.tokens_micros
        };
        let deficit = capacity_micros(&self.budget).saturating_sub(tokens);
        let rate = u64::from(self.budget.requests_per_second.max(1));
        pause + Duration::from_micros(deficit.div_ceil(rate))
    }
}

/// The part of a limiter's state that a shard handoff carries (relative times only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimiterSnapshot {
    pub budget: Budget,
    pub tokens_micros: u64,
    pub pause_remaining_ms: u64,
}

impl LimiterSnapshot {
    /// This snapshot under `budget` (the integration's budget where it is adopted): at most
    /// that budget's burst in tokens, and a pause of at most [`MAX_PAUSE_MS`].
    pub fn under(self, budget: Budget) -> LimiterSnapshot {
        LimiterSnapshot {
            budget,
            tokens_micros: self.tokens_micros.min(capacity_micros(&budget)),
            pause_remaining_ms: self.pause_remaining_ms.min(MAX_PAUSE_MS),
        }
    }
}

/// Round-robin FIFOs keyed by session.
#[derive(Debug)]
struct FairQueue<W> {
    queues: BTreeMap<String, VecDeque<W>>,
    /// Sessions with waiters, in serving order.
    order: VecDeque<String>,
    len: usize,
}

impl<W> FairQueue<W> {
    fn new() -> Self {
        Self {
            queues: BTreeMap::new(),
            order: VecDeque::new(),
            len: 0,
        }
    }

    fn session_len(&self, session: &str) -> usize {
        self.queues.get(session).map_or(0, VecDeque::len)
    }

    /// Waiters served before a waiter at index `index` of `session`'s FIFO (an upper bound:
    /// every other session gets at most `index + 1` turns first).
    fn ahead_of(&self, session: &str, index: usize) -> usize {
        let others: usize = self
            .queues
            .iter()
            .filter(|(s, _)| s.as_str() != session)
            .map(|(_, q)| q.len().min(index + 1))
            .sum();
        index + others
    }

    fn push(&mut self, session: &str, waiter: W) {
        let queue = self.queues.entry(session.to_string()).or_default();
        if queue.is_empty() {
            self.order.push_back(session.to_string());
        }
        queue.push_back(waiter);
        self.len += 1;
    }

    /// The next waiter in round-robin order.
    fn pop(&mut self) -> Option<(String, W)> {
        let session = self.order.pop_front()?;
        let queue = self.queues.get_mut(&session)?;
        let waiter = queue.pop_front()?;
        self.len -= 1;
        if queue.is_empty() {
            self.queues.remove(&session);
        } else {
            self.order.push_back(session.clone());
        }
        Some((session, waiter))
    }

    /// Removes the waiters `drop_it` selects, passing each (with the number of waiters
    /// ahead of it) to `on_removed`.
    fn remove_where(
        &mut self,
        mut drop_it: impl FnMut(&W) -> bool,
        mut on_removed: impl FnMut(W, usize),
    ) {
        let sessions: Vec<String> = self.queues.keys().cloned().collect();
        for session in sessions {
            let Some(queue) = self.queues.get(&session) else {
                continue;
            };
            let doomed: Vec<usize> = queue
                .iter()
                .enumerate()
                .filter(|(_, w)| drop_it(w))
                .map(|(i, _)| i)
                .collect();
            if doomed.is_empty() {
                continue;
            }
            let aheads: Vec<usize> = doomed.iter().map(|&i| self.ahead_of(&session, i)).collect();
            let Some(queue) = self.queues.get_mut(&session) else {
                continue;
            };
            let old = std::mem::take(queue);
            let mut removed = Vec::new();
            for (i, w) in old.into_iter().enumerate() {
                if doomed.binary_search(&i).is_ok() {
                    removed.push(w);
                } else {
                    queue.push_back(w);
                }
            }
            self.len -= removed.len();
            if queue.is_empty() {
                self.queues.remove(&session);
                self.order.retain(|s| s != &session);
            }
            for (w, ahead) in removed.into_iter().zip(aheads) {
                on_removed(w, ahead);
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = &W> {
        self.queues.values().flat_map(|q| q.iter())
    }
}

/// Messages to a limiter actor.
pub enum LimiterMsg {
    /// Wait for a permit until `deadline`.
    Acquire {
        session_id: String,
        deadline: Instant,
        /// The shard epoch the call is sent under (see [`TokenBucket::enter`]); `None`: a
        /// call outside shard ownership.
        at: Option<ShardEpoch>,
        reply: RpcReplyPort<Result<(), CallError>>,
    },
    /// Notion answered 429/529: no permits for `retry_after`.
    Pause {
        retry_after: Duration,
    },
    /// The integration's budget changed.
    SetBudget(Budget),
    State(RpcReplyPort<LimiterState>),
    /// The bucket's handoff snapshot; with `at`, after entering it as a call would (so a
    /// bucket that never sent under the epoch its node is handing off hands off empty).
    Snapshot {
        at: Option<ShardEpoch>,
        reply: RpcReplyPort<LimiterSnapshot>,
    },
    /// Another node's snapshot of this integration's limiter (a shard handoff), sent for `at`:
    /// see [`TokenBucket::adopt`]; without `at`, merged (the fewer tokens, the longer pause).
    Adopt {
        snapshot: LimiterSnapshot,
        at: Option<ShardEpoch>,
    },
    /// Timer: serve and expire waiters.
    Tick,
}

impl std::fmt::Debug for LimiterMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LimiterMsg::Acquire { session_id, .. } => write!(f, "Acquire({session_id})"),
            LimiterMsg::Pause { retry_after } => write!(f, "Pause({retry_after:?})"),
            LimiterMsg::SetBudget(b) => write!(f, "SetBudget({b:?})"),
            LimiterMsg::State(_) => f.write_str("State"),
            LimiterMsg::Snapshot { at, .. } => write!(f, "Snapshot({at:?})"),
            LimiterMsg::Adopt { snapshot, at } => write!(f, "Adopt({snapshot:?}, {at:?})"),
            LimiterMsg::Tick => f.write_str("Tick"),
        }
    }
}

/// How a limiter starts.
#[derive(Debug, Clone)]
pub struct LimiterArgs {
    pub integration_id: String,
    pub config: LimiterConfig,
    /// Budget, tokens and pause to start from. The data plane starts every limiter empty
    /// (it cannot know what a predecessor sent); a full burst is for tests only.
    pub start: LimiterSnapshot,
    /// The shard epoch `start` stands for: the epoch of the call that started an empty
    /// limiter, or the one an adopted snapshot was sent for. `None`: unknown.
    pub epoch: Option<ShardEpoch>,
}

impl LimiterArgs {
    /// A full bucket (tests; the simulator's planted bug). The data plane never uses it: a
    /// node that restarted would send a second burst right after its previous incarnation's.
    pub fn fresh(integration_id: impl Into<String>, budget: Budget, config: LimiterConfig) -> Self {
        Self {
            integration_id: integration_id.into(),
            config,
            start: LimiterSnapshot {
                budget,
                tokens_micros: capacity_micros(&budget),
                pause_remaining_ms: 0,
            },
            epoch: None,
        }
    }

    /// An empty bucket: how the data plane starts every limiter (on a node's start, and after
    /// a limiter or tenant supervisor failed). The first permit comes after 1/rps.
    pub fn restarted(
        integration_id: impl Into<String>,
        budget: Budget,
        config: LimiterConfig,
    ) -> Self {
        let mut args = Self::fresh(integration_id, budget, config);
        args.start.tokens_micros = 0;
        args
    }

    /// Starts from a snapshot the integration's previous shard owner handed off, under the
    /// integration's current `budget` (tokens at most its burst): the bucket continues the
    /// one the previous owner stopped using, its pause included.
    pub fn adopted(
        integration_id: impl Into<String>,
        budget: Budget,
        config: LimiterConfig,
        snapshot: LimiterSnapshot,
    ) -> Self {
        Self {
            integration_id: integration_id.into(),
            config,
            start: snapshot.under(budget),
            epoch: None,
        }
    }

    /// These arguments, standing for shard epoch `epoch` (see [`LimiterArgs::epoch`]).
    pub fn at(mut self, epoch: Option<ShardEpoch>) -> Self {
        self.epoch = epoch;
        self
    }
}

struct Waiter {
    deadline: Instant,
    reply: RpcReplyPort<Result<(), CallError>>,
}

/// The limiter actor.
pub struct Limiter;

pub struct LimiterActorState {
    integration_id: String,
    config: LimiterConfig,
    bucket: TokenBucket,
    queue: FairQueue<Waiter>,
    /// When the pending timer fires, if one is pending.
    tick_at: Option<Instant>,
    granted: u64,
    rejected: u64,
}

fn retry_after_seconds(wait: Duration) -> u64 {
    wait.as_millis()
        .div_ceil(1000)
        .clamp(1, u128::from(u64::MAX)) as u64
}

impl LimiterActorState {
    fn reject(&mut self, reply: RpcReplyPort<Result<(), CallError>>, wait: Duration) {
        self.rejected += 1;
        let _ = reply.send(Err(CallError::RateLimited {
            retry_after_seconds: retry_after_seconds(wait),
        }));
    }

    fn acquire(
        &mut self,
        session_id: String,
        deadline: Instant,
        reply: RpcReplyPort<Result<(), CallError>>,
        now: Instant,
    ) {
        let index = self.queue.session_len(&session_id);
        let ahead = self.queue.ahead_of(&session_id, index);
        let wait = self.bucket.wait_for(ahead as u64 + 1, now);
        if self.queue.len >= self.config.queue_capacity || index >= self.config.per_session_capacity
        {
            tracing::debug!(integration = %self.integration_id, session = %session_id, "limiter queue full");
            self.reject(reply, wait);
            return;
        }
        if now + wait > deadline {
            self.reject(reply, wait);
            return;
        }
        self.queue.push(&session_id, Waiter { deadline, reply });
    }

    /// Expires waiters past their deadline or abandoned, then grants what the bucket allows.
    fn serve(&mut self, now: Instant) {
        let bucket = self.bucket.clone();
        let mut expired = Vec::new();
        self.queue.remove_where(
            |w| w.deadline <= now || w.reply.is_closed(),
            |w, ahead| expired.push((w, bucket.wait_for(ahead as u64 + 1, now))),
        );
        for (w, wait) in expired {
            if !w.reply.is_closed() {
                self.reject(w.reply, wait);
            }
        }
        while self.queue.len > 0 {
            self.bucket.refill(now);
            if self.bucket.paused_for(now).is_some()
                || self.bucket.tokens_micros(now) < TOKEN_MICROS
            {
                break;
            }
            let Some((_, waiter)) = self.queue.pop() else {
                break;
            };
            if waiter.reply.is_closed() {
                continue;
            }
            if self.bucket.try_take(now) {
                self.granted += 1;
                let _ = waiter.reply.send(Ok(()));
            }
        }
    }

    /// The instant the next tick is needed: the next token, or the earliest deadline.
    fn next_wake(&self, now: Instant) -> Option<Instant> {
        if self.queue.len == 0 {
            return None;
        }
        let token_at = now + self.bucket.wait_for(1, now);
        let earliest_deadline = self.queue.iter().map(|w| w.deadline).min();
        Some(earliest_deadline.map_or(token_at, |d| d.min(token_at)))
    }

    /// A call (or a handoff) under `at`: [`TokenBucket::enter`].
    fn enter(&mut self, at: &ShardEpoch, now: Instant) {
        let before = self.bucket.epoch().cloned();
        if self.bucket.enter(at, now) {
            tracing::debug!(integration = %self.integration_id, %at, ?before, "first permit under this shard epoch: bucket emptied");
        }
    }

    fn state(&self, now: Instant) -> LimiterState {
        LimiterState {
            budget: self.bucket.budget(),
            tokens_micros: self.bucket.tokens_micros(now),
            paused_for: self.bucket.paused_for(now),
            queued: self.queue.len,
            queued_sessions: self.queue.queues.len(),
            granted: self.granted,
            rejected: self.rejected,
            epoch: self.bucket.epoch().cloned(),
        }
    }
}

impl Actor for Limiter {
    type Msg = LimiterMsg;
    type State = LimiterActorState;
    type Arguments = LimiterArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: LimiterArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        validate_budget(&args.start.budget)
            .map_err(|e| format!("integration {}: {e}", args.integration_id))?;
        let now = Instant::now();
        Ok(LimiterActorState {
            integration_id: args.integration_id,
            config: args.config,
            bucket: TokenBucket::from_snapshot(&args.start, now).with_epoch(args.epoch),
            queue: FairQueue::new(),
            tick_at: None,
            granted: 0,
            rejected: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: LimiterMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let now = Instant::now();
        match msg {
            LimiterMsg::Acquire {
                session_id,
                deadline,
                at,
                reply,
            } => {
                if let Some(at) = at {
                    state.enter(&at, now);
                }
                state.serve(now);
                state.acquire(session_id, deadline, reply, now);
            }
            LimiterMsg::Pause { retry_after } => {
                tracing::info!(integration = %state.integration_id, retry_after_ms = retry_after.as_millis() as u64, "Notion asked to slow down; pausing the integration");
                state.bucket.pause(retry_after, now);
            }
            LimiterMsg::SetBudget(budget) => {
                if validate_budget(&budget).is_ok() {
                    state.bucket.set_budget(budget, now);
                }
            }
            LimiterMsg::State(reply) => {
                let _ = reply.send(state.state(now));
            }
            LimiterMsg::Snapshot { at, reply } => {
                if let Some(at) = at {
                    state.enter(&at, now);
                }
                let _ = reply.send(state.bucket.snapshot(now));
            }
            LimiterMsg::Adopt { snapshot, at } => match at {
                Some(at) => {
                    let rule = state.bucket.adopt(&snapshot, &at, now);
                    tracing::debug!(integration = %state.integration_id, %at, ?rule, "adopted a handed-off snapshot");
                }
                None => state.bucket.merge(&snapshot, now),
            },
            LimiterMsg::Tick => {
                if state.tick_at.is_some_and(|t| t <= now) {
                    state.tick_at = None;
                }
            }
        }
        state.serve(now);
        if let Some(wake) = state.next_wake(now)
            && state.tick_at.is_none_or(|t| wake < t)
        {
            state.tick_at = Some(wake);
            myself.send_after(wake.saturating_duration_since(now), || LimiterMsg::Tick);
        }
        Ok(())
    }
}

/// Slack on the RPC to a limiter beyond the waiter's deadline: the limiter answers at the
/// deadline itself; this only guards against a limiter that died.
const RPC_GRACE: Duration = Duration::from_secs(1);

/// Waits for a permit from `limiter` until `deadline`, for a call outside shard ownership.
pub async fn acquire(
    limiter: &ActorRef<LimiterMsg>,
    session_id: &str,
    deadline: Instant,
) -> Result<(), CallError> {
    acquire_at(limiter, session_id, deadline, None).await
}

/// Waits for a permit from `limiter` until `deadline`, for a call sent under `at` (the
/// bucket is emptied first if it never sent under that shard epoch: [`TokenBucket::enter`]).
pub async fn acquire_at(
    limiter: &ActorRef<LimiterMsg>,
    session_id: &str,
    deadline: Instant,
    at: Option<&ShardEpoch>,
) -> Result<(), CallError> {
    let now = Instant::now();
    if deadline <= now {
        return Err(CallError::RateLimited {
            retry_after_seconds: 1,
        });
    }
    let timeout = deadline.saturating_duration_since(now) + RPC_GRACE;
    let session_id = session_id.to_string();
    match limiter
        .call(
            |reply| LimiterMsg::Acquire {
                session_id,
                deadline,
                at: at.cloned(),
                reply,
            },
            Some(timeout),
        )
        .await
    {
        Ok(ractor::rpc::CallResult::Success(result)) => result,
        Ok(ractor::rpc::CallResult::Timeout) => Err(CallError::Unavailable(
            "the integration's rate limiter did not answer before the call's deadline".into(),
        )),
        Ok(ractor::rpc::CallResult::SenderError) | Err(_) => Err(CallError::Unavailable(
            "the integration's rate limiter stopped".into(),
        )),
    }
}

/// Tells `limiter` that Notion answered 429/529 with `retry_after`.
pub fn pause(limiter: &ActorRef<LimiterMsg>, retry_after: Duration) {
    // A stopped limiter has nothing left to pause.
    let _ = limiter.send_message(LimiterMsg::Pause { retry_after });
}

/// The limiter's current state.
pub async fn state(limiter: &ActorRef<LimiterMsg>) -> Result<LimiterState, CallError> {
    match limiter
        .call(LimiterMsg::State, Some(Duration::from_secs(5)))
        .await
    {
        Ok(ractor::rpc::CallResult::Success(s)) => Ok(s),
        _ => Err(CallError::Unavailable(
            "the integration's rate limiter did not answer".into(),
        )),
    }
}

/// The limiter's handoff snapshot; with `at`, taken after entering that shard epoch (see
/// [`LimiterMsg::Snapshot`]).
pub async fn snapshot(
    limiter: &ActorRef<LimiterMsg>,
    at: Option<&ShardEpoch>,
) -> Result<LimiterSnapshot, CallError> {
    let at = at.cloned();
    match limiter
        .call(
            |reply| LimiterMsg::Snapshot { at, reply },
            Some(Duration::from_secs(5)),
        )
        .await
    {
        Ok(ractor::rpc::CallResult::Success(s)) => Ok(s),
        _ => Err(CallError::Unavailable(
            "the integration's rate limiter did not answer".into(),
        )),
    }
}

/// Hands `limiter` another node's snapshot, sent for shard epoch `at` (see
/// [`TokenBucket::adopt`]; without `at`, [`TokenBucket::merge`]). Returns whether the limiter
/// was there to take it.
pub fn adopt(
    limiter: &ActorRef<LimiterMsg>,
    snapshot: LimiterSnapshot,
    at: Option<ShardEpoch>,
) -> bool {
    limiter
        .send_message(LimiterMsg::Adopt { snapshot, at })
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: Budget = Budget {
        requests_per_second: 2,
        burst: 5,
    };

    fn snap(tokens: u64, pause_ms: u64) -> LimiterSnapshot {
        LimiterSnapshot {
            budget: BUDGET,
            tokens_micros: tokens * TOKEN_MICROS,
            pause_remaining_ms: pause_ms,
        }
    }

    #[test]
    fn a_merge_keeps_the_fewer_tokens_from_either_side() {
        let now = Instant::now();
        // The local bucket is full, the snapshot nearly empty: the snapshot wins.
        let mut full = TokenBucket::new(BUDGET, 5 * TOKEN_MICROS, now);
        full.merge(&snap(1, 0), now);
        assert_eq!(full.tokens_micros(now), TOKEN_MICROS);
        assert_eq!(full.paused_for(now), None);
        assert!(full.try_take(now));
        assert!(
            !full.try_take(now),
            "a second token appeared from the merge"
        );
        // The local bucket is nearly empty, the snapshot full: the local side wins.
        let mut low = TokenBucket::new(BUDGET, TOKEN_MICROS, now);
        low.merge(&snap(5, 0), now);
        assert_eq!(low.tokens_micros(now), TOKEN_MICROS);
        // Tokens earned after the merge come at the budget's rate, from the merged level.
        assert_eq!(
            low.tokens_micros(now + Duration::from_millis(500)),
            2 * TOKEN_MICROS
        );
    }

    #[test]
    fn a_merge_keeps_the_longer_pause_and_empties_the_bucket() {
        let now = Instant::now();
        // Unpaused and full here, paused for 2 s there: paused 2 s, empty.
        let mut b = TokenBucket::new(BUDGET, 5 * TOKEN_MICROS, now);
        b.merge(&snap(5, 2_000), now);
        assert_eq!(b.paused_for(now), Some(Duration::from_millis(2_000)));
        assert!(!b.try_take(now));
        assert!(!b.try_take(now + Duration::from_millis(1_999)));
        // After the pause, the first token takes 1/rps (the bucket was emptied).
        assert_eq!(b.wait_for(1, now), Duration::from_millis(2_500));

        // Paused 5 s here, 1 s (and full) there: the 5 s pause stays.
        let mut long = TokenBucket::new(BUDGET, 5 * TOKEN_MICROS, now);
        long.pause(Duration::from_secs(5), now);
        long.merge(&snap(5, 1_000), now);
        assert_eq!(long.paused_for(now), Some(Duration::from_secs(5)));
        // Paused 5 s here, not at all (and full) there: still paused, still empty.
        long.merge(&snap(5, 0), now);
        assert_eq!(long.paused_for(now), Some(Duration::from_secs(5)));
        assert_eq!(long.tokens_micros(now), 0);

        // Paused 1 s here, 5 s there: the longer one.
        let mut short = TokenBucket::new(BUDGET, 0, now);
        short.pause(Duration::from_secs(1), now);
        short.merge(&snap(0, 5_000), now);
        assert_eq!(short.paused_for(now), Some(Duration::from_secs(5)));
    }

    #[test]
    fn an_adopted_start_is_bounded_by_the_current_budget() {
        let small = Budget {
            requests_per_second: 1,
            burst: 2,
        };
        let args = LimiterArgs::adopted(
            "t/i",
            small,
            LimiterConfig::default(),
            snap(5, MAX_PAUSE_MS * 10),
        );
        assert_eq!(args.start.budget, small);
        assert_eq!(args.start.tokens_micros, 2 * TOKEN_MICROS);
        assert_eq!(args.start.pause_remaining_ms, MAX_PAUSE_MS);
        let args = LimiterArgs::adopted("t/i", BUDGET, LimiterConfig::default(), snap(3, 0));
        assert_eq!(args.start.tokens_micros, 3 * TOKEN_MICROS);
    }

    fn at(shard: &str, epoch: u64) -> ShardEpoch {
        ShardEpoch::new(shard, epoch)
    }

    /// A bucket that sent its whole burst under shard `x` at epoch 1, then had 10 s to refill:
    /// full again, as on a node that lost the shard and is getting it back.
    fn refilled_old_owner(now: Instant) -> (TokenBucket, Instant) {
        let mut b = TokenBucket::new(BUDGET, 5 * TOKEN_MICROS, now).with_epoch(Some(at("x", 1)));
        for _ in 0..5 {
            assert!(
                !b.enter(&at("x", 1), now),
                "the recorded epoch emptied the bucket"
            );
            assert!(b.try_take(now));
        }
        assert!(!b.try_take(now));
        let later = now + Duration::from_secs(10);
        assert_eq!(b.tokens_micros(later), 5 * TOKEN_MICROS);
        (b, later)
    }

    #[test]
    fn a_returning_owner_without_a_push_starts_empty() {
        let (mut b, now) = refilled_old_owner(Instant::now());
        // The first call under epoch 3 (another node owned epoch 2): empty, epoch 3 recorded.
        assert!(b.enter(&at("x", 3), now));
        assert_eq!(b.tokens_micros(now), 0);
        assert_eq!(b.epoch(), Some(&at("x", 3)));
        assert!(!b.try_take(now));
        assert_eq!(b.wait_for(1, now), Duration::from_millis(500));
        // Later calls under epoch 3 keep what the bucket earned since (2/s).
        let t = now + Duration::from_secs(1);
        assert!(!b.enter(&at("x", 3), t));
        assert_eq!(b.tokens_micros(t), 2 * TOKEN_MICROS);
        // A late call under an earlier epoch changes nothing (its fence refuses it anyway).
        assert!(!b.enter(&at("x", 2), t));
        assert_eq!(b.tokens_micros(t), 2 * TOKEN_MICROS);
        assert_eq!(b.epoch(), Some(&at("x", 3)));
        // Another shard (the tenant's residency changed): its epochs are not comparable, so
        // the bucket empties again.
        assert!(b.enter(&at("y", 0), t));
        assert_eq!(b.tokens_micros(t), 0);
        assert_eq!(b.epoch(), Some(&at("y", 0)));
        // A bucket that knows no epoch (a limiter restarted after a failure) empties too.
        let mut unknown = TokenBucket::new(BUDGET, 5 * TOKEN_MICROS, t);
        assert!(unknown.enter(&at("x", 3), t));
        assert_eq!(unknown.tokens_micros(t), 0);
    }

    #[test]
    fn a_returning_owner_with_a_push_takes_the_pushers_tokens() {
        let (b, now) = refilled_old_owner(Instant::now());
        // The epoch-2 owner left 2 tokens: they replace the 5 earned here meanwhile.
        let mut fewer = b.clone();
        assert_eq!(
            fewer.adopt(&snap(2, 0), &at("x", 3), now),
            AdoptRule::Replaced
        );
        assert_eq!(fewer.tokens_micros(now), 2 * TOKEN_MICROS);
        assert_eq!(fewer.epoch(), Some(&at("x", 3)));
        // The first call under epoch 3 then keeps them: the snapshot was for that epoch.
        assert!(!fewer.enter(&at("x", 3), now));
        assert!(fewer.try_take(now));
        assert!(fewer.try_take(now));
        assert!(!fewer.try_take(now));
        // An old bucket emptier than the pusher's takes the pusher's too: it is the bucket
        // that counted the requests sent since this one last sent.
        let mut low = TokenBucket::new(BUDGET, TOKEN_MICROS, now).with_epoch(Some(at("x", 1)));
        assert_eq!(
            low.adopt(&snap(4, 0), &at("x", 3), now),
            AdoptRule::Replaced
        );
        assert_eq!(low.tokens_micros(now), 4 * TOKEN_MICROS);
        // Within the burst of the bucket's budget.
        let small = Budget {
            requests_per_second: 1,
            burst: 2,
        };
        let mut capped = TokenBucket::new(small, 0, now).with_epoch(Some(at("x", 1)));
        capped.adopt(&snap(5, 0), &at("x", 3), now);
        assert_eq!(capped.tokens_micros(now), 2 * TOKEN_MICROS);
        // A push that arrives after the first call under epoch 3 merges: the bucket emptied
        // at that call, and earned 1 token in the 500 ms since.
        let (mut called, now) = refilled_old_owner(Instant::now());
        assert!(called.enter(&at("x", 3), now));
        let t = now + Duration::from_millis(500);
        assert_eq!(called.adopt(&snap(4, 0), &at("x", 3), t), AdoptRule::Merged);
        assert_eq!(called.tokens_micros(t), TOKEN_MICROS);
    }

    #[test]
    fn a_snapshot_for_an_earlier_epoch_adds_nothing() {
        let now = Instant::now();
        let mut b = TokenBucket::new(BUDGET, TOKEN_MICROS, now).with_epoch(Some(at("x", 3)));
        assert_eq!(b.adopt(&snap(5, 0), &at("x", 2), now), AdoptRule::Merged);
        assert_eq!(b.tokens_micros(now), TOKEN_MICROS);
        assert_eq!(
            b.epoch(),
            Some(&at("x", 3)),
            "an earlier epoch was recorded"
        );
        // It may still take away (the fewer tokens), and a pause in it counts.
        assert_eq!(b.adopt(&snap(0, 0), &at("x", 1), now), AdoptRule::Merged);
        assert_eq!(b.tokens_micros(now), 0);
        b.adopt(&snap(5, 2_000), &at("x", 2), now);
        assert_eq!(b.paused_for(now), Some(Duration::from_secs(2)));
        // At the recorded epoch: the fewer tokens, as before epochs were recorded.
        let mut same = TokenBucket::new(BUDGET, 3 * TOKEN_MICROS, now).with_epoch(Some(at("x", 3)));
        assert_eq!(same.adopt(&snap(1, 0), &at("x", 3), now), AdoptRule::Merged);
        assert_eq!(same.tokens_micros(now), TOKEN_MICROS);
        same.adopt(&snap(5, 0), &at("x", 3), now);
        assert_eq!(same.tokens_micros(now), TOKEN_MICROS);
        // For another shard, or with no epoch recorded: merged, and the epoch recorded.
        let mut other =
            TokenBucket::new(BUDGET, 3 * TOKEN_MICROS, now).with_epoch(Some(at("y", 9)));
        assert_eq!(
            other.adopt(&snap(5, 0), &at("x", 3), now),
            AdoptRule::Merged
        );
        assert_eq!(other.tokens_micros(now), 3 * TOKEN_MICROS);
        assert_eq!(other.epoch(), Some(&at("x", 3)));
        let mut unknown = TokenBucket::new(BUDGET, 2 * TOKEN_MICROS, now);
        assert_eq!(
            unknown.adopt(&snap(5, 0), &at("x", 3), now),
            AdoptRule::Merged
        );
        assert_eq!(unknown.tokens_micros(now), 2 * TOKEN_MICROS);
        assert_eq!(unknown.epoch(), Some(&at("x", 3)));
    }

    #[test]
    fn a_running_pause_survives_a_new_epoch() {
        let (mut b, now) = refilled_old_owner(Instant::now());
        b.pause(Duration::from_secs(4), now);
        // A call under epoch 3: still paused 4 s, and empty after it.
        assert!(b.enter(&at("x", 3), now));
        assert_eq!(b.paused_for(now), Some(Duration::from_secs(4)));
        assert_eq!(b.wait_for(1, now), Duration::from_millis(4_500));

        // A push for epoch 3 with a shorter pause and tokens: the 4 s pause stays, and the
        // bucket stays empty under it (as a pause leaves it).
        let (mut p, now) = refilled_old_owner(Instant::now());
        p.pause(Duration::from_secs(4), now);
        assert_eq!(
            p.adopt(&snap(5, 1_000), &at("x", 3), now),
            AdoptRule::Replaced
        );
        assert_eq!(p.paused_for(now), Some(Duration::from_secs(4)));
        assert_eq!(p.tokens_micros(now), 0);
        assert_eq!(p.wait_for(1, now), Duration::from_millis(4_500));
        // A push for epoch 4 with a longer pause: the longer one.
        assert_eq!(
            p.adopt(&snap(3, 6_000), &at("x", 4), now),
            AdoptRule::Replaced
        );
        assert_eq!(p.paused_for(now), Some(Duration::from_secs(6)));
        // Unpaused here, paused there: the pusher's pause, empty.
        let (mut q, now) = refilled_old_owner(Instant::now());
        assert_eq!(
            q.adopt(&snap(5, 2_000), &at("x", 3), now),
            AdoptRule::Replaced
        );
        assert_eq!(q.paused_for(now), Some(Duration::from_secs(2)));
        assert_eq!(q.tokens_micros(now), 0);
        assert_eq!(q.wait_for(1, now), Duration::from_millis(2_500));
    }

    #[tokio::test(start_paused = true)]
    async fn a_limiter_empties_on_its_first_permit_under_a_new_epoch() {
        let (l, _) = Actor::spawn(
            None,
            Limiter,
            LimiterArgs::fresh("t/i", BUDGET, LimiterConfig::default()).at(Some(at("x", 1))),
        )
        .await
        .expect("limiter starts");
        let far = Instant::now() + Duration::from_secs(60);
        // The burst under epoch 1 comes at once.
        let started = Instant::now();
        for _ in 0..5 {
            acquire_at(&l, "s", far, Some(&at("x", 1)))
                .await
                .expect("a permit");
        }
        assert_eq!(started.elapsed(), Duration::ZERO);
        // Ten seconds later the bucket is full again; the first call under epoch 3 waits
        // 1/rps all the same.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            state(&l).await.expect("state").tokens_micros,
            5 * TOKEN_MICROS
        );
        let t = Instant::now();
        acquire_at(&l, "s", far, Some(&at("x", 3)))
            .await
            .expect("a permit");
        assert_eq!(t.elapsed(), Duration::from_millis(500));
        let s = state(&l).await.expect("state");
        assert_eq!(s.epoch, Some(at("x", 3)));
        assert_eq!(s.tokens_micros, 0);
        // A call without an epoch leaves the record alone.
        tokio::time::sleep(Duration::from_secs(10)).await;
        acquire(&l, "s", far).await.expect("a permit");
        let s = state(&l).await.expect("state");
        assert_eq!(s.epoch, Some(at("x", 3)));
        assert_eq!(s.tokens_micros, 4 * TOKEN_MICROS);
        // A snapshot taken for epoch 4, which this limiter never sent under, is empty.
        let out = snapshot(&l, Some(&at("x", 4))).await.expect("a snapshot");
        assert_eq!(out.tokens_micros, 0);
        assert_eq!(state(&l).await.expect("state").epoch, Some(at("x", 4)));
        l.stop(None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_adopted_pause_holds_the_permits_of_a_running_limiter() {
        let (l, _) = Actor::spawn(
            None,
            Limiter,
            LimiterArgs::fresh("t/i", BUDGET, LimiterConfig::default()),
        )
        .await
        .expect("limiter starts");
        let started = Instant::now();
        assert!(adopt(&l, snap(5, 3_000), None));
        acquire(&l, "s", started + Duration::from_secs(10))
            .await
            .expect("a permit");
        // The pause (3 s), then one token at 2/s: never sooner, though the bucket was full.
        assert!(
            started.elapsed() >= Duration::from_millis(3_500),
            "the permit came after {:?}",
            started.elapsed()
        );
        l.stop(None);
    }
}
