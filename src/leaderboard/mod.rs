//! LeaderboardService: boards with exact int64 scores, ties broken by who
//! reached a score first, periods, keyset paging and around-me windows.
//!
//! Storage (see [`codec`]): one ZSET and one record hash per period
//! instance, all under the board's hash tag, named after the board's
//! incarnation so a board deleted and created again starts empty. Every
//! operation is one script that first checks the incarnation, so a
//! settings cache that missed a delete is caught (`stale`) and reloaded.
//!
//! Period instances are computed here from the server clock, corrected by
//! Redis: a write script checks that Redis TIME falls inside every instance
//! it was given and otherwise answers with its time, and the write is
//! retried on the instances of that time. Writes therefore always land in
//! the instances of Redis time.

pub mod board;
pub mod codec;
pub mod grpc;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use redis::Value;

use self::{
    board::{Instance, Operator, Order, Period, Spec},
    codec::{array, at, int, into_array, into_string, string, take},
};
use crate::{
    error::{Error, Result},
    redis::{KeyBuilder, Name, Namespace, Redis, ResourceKey, scripts, scripts::NamedScript},
};

/// Board names and member ids: 1–256 bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Metadata per entry.
pub const MAX_METADATA_BYTES: usize = 4096;
/// Members per GetRanks.
pub const MAX_MEMBERS: usize = 1000;
/// Entries per Top page.
pub const MAX_PAGE: u32 = 1000;
/// Entries per Top page when the request says 0.
pub const DEFAULT_PAGE: u32 = 100;
/// Entries above or below the member in Around.
pub const MAX_AROUND: u32 = 100;
/// Request ids of submits: 1–128 bytes.
pub const MAX_REQUEST_ID_BYTES: usize = 128;
/// How long a submit's request id is remembered: a retry within this is
/// not applied twice.
pub const REQUEST_ID_TTL: std::time::Duration = std::time::Duration::from_secs(600);
/// Board settings cached per instance (cleared when full).
const MAX_CACHED_BOARDS: usize = 10_000;

/// A board as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Board {
    pub name: String,
    pub spec: Spec,
    /// Incarnation: names the data keys.
    pub inc: String,
    pub created_at_ms: i64,
}

/// A member's entry in one period instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub member: String,
    pub score: i64,
    pub subscore: i64,
    /// 1-based, ordinal.
    pub rank: u64,
    pub metadata: String,
    pub num_submits: u64,
    pub reached_at_ms: i64,
}

/// A submit.
#[derive(Debug, Clone)]
pub struct Submission {
    pub member: Name,
    pub score: i64,
    pub subscore: i64,
    /// None: the board's operator.
    pub operator: Option<Operator>,
    pub metadata: Option<String>,
    /// Makes retries safe: a submit with a request id seen in the last
    /// [`REQUEST_ID_TTL`] is not applied again.
    pub request_id: Option<String>,
}

/// The outcome of a submit.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// One per period, ALL_TIME first.
    pub results: Vec<PeriodResult>,
    /// The request id had been seen: nothing was written.
    pub replayed: bool,
}

/// The outcome of a submit in one period instance.
#[derive(Debug, Clone)]
pub struct PeriodResult {
    pub instance: Instance,
    /// None only on a replay, when the member has since been removed.
    pub entry: Option<Entry>,
    pub changed: bool,
    pub count: u64,
}

/// Which period instance a read is about.
#[derive(Debug, Clone)]
pub struct Selector {
    pub period: Period,
    pub ago: u32,
    pub id: Option<String>,
}

impl Default for Selector {
    fn default() -> Self {
        Selector { period: Period::AllTime, ago: 0, id: None }
    }
}

/// Entries of one instance, with the instance's size.
#[derive(Debug, Clone)]
pub struct Listing {
    pub instance: Instance,
    pub entries: Vec<Entry>,
    pub count: u64,
}

/// GetRanks: each asked member with its entry, if any.
#[derive(Debug, Clone)]
pub struct Ranks {
    pub instance: Instance,
    pub entries: Vec<(String, Option<Entry>)>,
    pub count: u64,
}

/// Where a request's attempts stand: reload the settings? at what time?
struct Retry {
    fresh: bool,
    now: i64,
    tries: u32,
}

/// A script's answer: done, or retry with fresh settings or Redis's time.
enum Attempt {
    Done,
    Stale,
    Period(i64),
}

/// The leaderboard domain.
pub struct Leaderboards {
    redis: Redis,
    keys: KeyBuilder,
    boards: Mutex<HashMap<(Namespace, Name), Arc<Board>>>,
    /// Redis TIME minus the local clock, learned from period retries.
    clock_offset_ms: AtomicI64,
}

impl Leaderboards {
    pub fn new(redis: Redis, keys: KeyBuilder) -> Self {
        Leaderboards { redis, keys, boards: Mutex::default(), clock_offset_ms: AtomicI64::new(0) }
    }

    /// Validates a board name or member id (`field` names it).
    pub fn name(field: &str, value: &str) -> Result<Name> {
        if value.len() > MAX_NAME_BYTES {
            return Err(Error::invalid(field, format!("must be at most {MAX_NAME_BYTES} bytes, got {}", value.len())));
        }
        Name::parse(field, value)
    }

    /// Shifts this instance's clock, as a skewed host clock would (tests).
    #[doc(hidden)]
    pub fn skew_clock(&self, ms: i64) {
        self.clock_offset_ms.fetch_add(ms, Ordering::Relaxed);
    }

    fn now_ms(&self) -> i64 {
        let local = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        local + self.clock_offset_ms.load(Ordering::Relaxed)
    }

    fn base(&self, ns: &Namespace, name: &Name) -> ResourceKey {
        self.keys.resource(ns, "lb", name)
    }

    /// The ZSET and record hash of one instance.
    fn data_keys(base: &ResourceKey, board: &Board, instance: &Instance) -> (String, String) {
        let part = format!("{}.{}", board.inc, instance.id);
        (base.child("z", &part), base.child("r", &part))
    }

    // === Boards ===

    /// Creates a board; returns it and whether it was created (false: it
    /// existed with the same settings).
    pub async fn create(&self, ns: &Namespace, name: &Name, spec: Spec) -> Result<(Board, bool)> {
        let json = serde_json::to_string(&spec).map_err(|e| Error::Internal(e.to_string()))?;
        let inc = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
        let (created, inc, stored, created_ms): (i64, String, String, String) = self
            .redis
            .invoke(&scripts::LB_CREATE, |inv| {
                inv.key(self.base(ns, name).as_str()).arg(&inc).arg(&json);
            })
            .await?;
        let board = Self::board_from(name, inc, &stored, &created_ms)?;
        if created == 0 && board.spec != spec {
            return Err(Error::AlreadyExists(format!(
                "board {:?} exists with other settings (a board's settings never change; delete it first)",
                name.as_str()
            )));
        }
        self.remember(ns, name, Arc::new(board.clone()));
        Ok((board, created == 1))
    }

    /// A board's settings, read from Redis.
    pub async fn get(&self, ns: &Namespace, name: &Name) -> Result<(Board, Vec<Instance>)> {
        let board = self.board(ns, name, true).await?;
        let now = self.now_ms();
        let current = board.spec.periods.iter().map(|p| board.spec.instance(*p, now, 0)).collect::<Result<Vec<_>>>()?;
        Ok(((*board).clone(), current))
    }

    /// Deletes a board with the data of its current and retained instances.
    pub async fn delete(&self, ns: &Namespace, name: &Name) -> Result<bool> {
        let board = match self.board(ns, name, true).await {
            Ok(board) => board,
            Err(Error::NotFound(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        self.forget(ns, name);
        let base = self.base(ns, name);
        let now = self.now_ms();
        let mut keys = Vec::new();
        for period in &board.spec.periods {
            let retained = if *period == Period::AllTime { 0 } else { board.spec.retention };
            for ago in 0..=retained {
                let (z, r) = Self::data_keys(&base, &board, &board.spec.instance(*period, now, ago)?);
                keys.push(z);
                keys.push(r);
            }
        }
        let deleted: i64 = self
            .redis
            .invoke(&scripts::LB_DELETE, |inv| {
                inv.key(base.as_str());
                for key in &keys {
                    inv.key(key);
                }
                inv.arg(&board.inc);
            })
            .await?;
        Ok(deleted == 1)
    }

    fn board_from(name: &Name, inc: String, spec: &str, created_ms: &str) -> Result<Board> {
        let spec: Spec = serde_json::from_str(spec)
            .map_err(|e| Error::Internal(format!("board {:?} has unreadable settings: {e}", name.as_str())))?;
        let created_at_ms = created_ms.parse().unwrap_or(0);
        Ok(Board { name: name.as_str().to_owned(), spec, inc, created_at_ms })
    }

    /// The board's settings, cached unless `fresh`.
    async fn board(&self, ns: &Namespace, name: &Name, fresh: bool) -> Result<Arc<Board>> {
        let key = (ns.clone(), name.clone());
        if !fresh && let Some(board) = self.boards.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(board);
        }
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.base(ns, name).as_str()).arg("inc").arg("spec").arg("created_ms");
        let (inc, spec, created): (Option<String>, Option<String>, Option<String>) = self.redis.query(&cmd).await?;
        let (Some(inc), Some(spec)) = (inc, spec) else {
            self.forget(ns, name);
            return Err(Error::NotFound(format!("board {:?}", name.as_str())));
        };
        let board = Arc::new(Self::board_from(name, inc, &spec, created.as_deref().unwrap_or("0"))?);
        self.remember(ns, name, board.clone());
        Ok(board)
    }

    fn remember(&self, ns: &Namespace, name: &Name, board: Arc<Board>) {
        if let Ok(mut map) = self.boards.lock() {
            if map.len() >= MAX_CACHED_BOARDS {
                map.clear();
            }
            map.insert((ns.clone(), name.clone()), board);
        }
    }

    fn forget(&self, ns: &Namespace, name: &Name) {
        if let Ok(mut map) = self.boards.lock() {
            map.remove(&(ns.clone(), name.clone()));
        }
    }

    fn retry(&self) -> Retry {
        Retry { fresh: false, now: self.now_ms(), tries: 0 }
    }

    /// True when `attempt` is done; false to go again with fresh settings
    /// or Redis's time.
    fn settle(&self, retry: &mut Retry, name: &Name, attempt: Attempt) -> Result<bool> {
        retry.tries += 1;
        match attempt {
            Attempt::Done => return Ok(true),
            Attempt::Stale => retry.fresh = true,
            Attempt::Period(redis_now) => {
                let local = retry.now - self.clock_offset_ms.load(Ordering::Relaxed);
                self.clock_offset_ms.store(redis_now - local, Ordering::Relaxed);
                retry.now = redis_now;
            }
        }
        if retry.tries >= 4 {
            return Err(Error::Unavailable(format!(
                "board {:?} kept changing during the request; retry",
                name.as_str()
            )));
        }
        Ok(false)
    }

    /// The instance a read selects.
    fn select(board: &Board, selector: &Selector, now: i64) -> Result<Instance> {
        if !board.spec.periods.contains(&selector.period) {
            return Err(Error::invalid(
                "period.period",
                format!("board {:?} has no {} period", board.name, selector.period),
            ));
        }
        if let Some(id) = &selector.id {
            return board.spec.instance_by_id(selector.period, id, now, "period.id");
        }
        let retained = if selector.period == Period::AllTime { 0 } else { board.spec.retention };
        if selector.ago > retained {
            return Err(Error::invalid(
                "period.ago",
                format!("must be at most {retained} (the board's retention for {})", selector.period),
            ));
        }
        board.spec.instance(selector.period, now, selector.ago)
    }

    // === Script runners ===

    /// Runs a write script on the current instance of every period: KEYS
    /// are the board hash, each instance's ZSET and records, then the
    /// sibling `extra_key` if any; ARGV is the incarnation, `args`, then
    /// each instance's start, end and expiry.
    /// Retries on stale settings and on instances Redis TIME disagrees
    /// with; returns the board it ran with, the instances and the reply.
    async fn write(
        &self,
        ns: &Namespace,
        name: &Name,
        script: &NamedScript,
        extra_key: Option<&str>,
        args: impl Fn(&Board) -> Vec<String>,
    ) -> Result<(Arc<Board>, Vec<Instance>, Vec<Value>)> {
        let base = self.base(ns, name);
        let mut retry = self.retry();
        loop {
            let board = self.board(ns, name, retry.fresh).await?;
            let instances =
                board.spec.periods.iter().map(|p| board.spec.instance(*p, retry.now, 0)).collect::<Result<Vec<_>>>()?;
            let reply: Value = self
                .redis
                .invoke(script, |inv| {
                    inv.key(base.as_str());
                    for instance in &instances {
                        let (z, r) = Self::data_keys(&base, &board, instance);
                        inv.key(z).key(r);
                    }
                    if let Some(key) = extra_key {
                        inv.key(key);
                    }
                    inv.arg(&board.inc);
                    for arg in args(&board) {
                        inv.arg(arg);
                    }
                    for i in &instances {
                        inv.arg(i.start_ms).arg(i.end_ms).arg(i.expire_at_ms);
                    }
                })
                .await?;
            let items = into_array(reply)?;
            let attempt = match string(at(&items, 0)?)?.as_str() {
                "stale" => Attempt::Stale,
                "period" => Attempt::Period(int(at(&items, 1)?)?),
                _ => Attempt::Done,
            };
            if self.settle(&mut retry, name, attempt)? {
                return Ok((board, instances, items));
            }
        }
    }

    /// Runs a read script on the instance `selector` picks: KEYS are the
    /// board hash, the instance's ZSET and records; ARGV is the
    /// incarnation then `args`. Retries on stale settings.
    async fn read(
        &self,
        ns: &Namespace,
        name: &Name,
        selector: &Selector,
        script: &NamedScript,
        args: impl Fn(&Board, &Instance) -> Result<Vec<String>>,
    ) -> Result<(Arc<Board>, Instance, Vec<Value>)> {
        let base = self.base(ns, name);
        let mut retry = self.retry();
        loop {
            let board = self.board(ns, name, retry.fresh).await?;
            let instance = Self::select(&board, selector, retry.now)?;
            let args = args(&board, &instance)?;
            let (z, r) = Self::data_keys(&base, &board, &instance);
            let reply: Value = self
                .redis
                .invoke(script, |inv| {
                    inv.key(base.as_str()).key(&z).key(&r).arg(&board.inc);
                    for arg in args {
                        inv.arg(arg);
                    }
                })
                .await?;
            let items = into_array(reply)?;
            let attempt = if string(at(&items, 0)?)? == "stale" { Attempt::Stale } else { Attempt::Done };
            if self.settle(&mut retry, name, attempt)? {
                return Ok((board, instance, items));
            }
        }
    }

    // === Writes ===

    /// Applies a submit to the current instance of every period.
    pub async fn submit(&self, ns: &Namespace, name: &Name, submission: &Submission) -> Result<Submitted> {
        if let Some(metadata) = &submission.metadata
            && metadata.len() > MAX_METADATA_BYTES
        {
            return Err(Error::invalid(
                "metadata",
                format!("must be at most {MAX_METADATA_BYTES} bytes, got {}", metadata.len()),
            ));
        }
        let request_id = submission.request_id.as_deref().unwrap_or("");
        if request_id.len() > MAX_REQUEST_ID_BYTES {
            return Err(Error::invalid(
                "request_id",
                format!("must be at most {MAX_REQUEST_ID_BYTES} bytes, got {}", request_id.len()),
            ));
        }
        let seen_key = self.base(ns, name).child("seen", request_id);
        let operator = |board: &Board| submission.operator.unwrap_or(board.spec.operator);
        let written = self
            .write(ns, name, &scripts::LB_SUBMIT, Some(&seen_key), |board| {
                let (has_metadata, metadata) = match &submission.metadata {
                    Some(m) => ("1", m.clone()),
                    None => ("0", String::new()),
                };
                vec![
                    submission.member.as_str().to_owned(),
                    operator(board).word().to_owned(),
                    order_word(board.spec.order).to_owned(),
                    codec::biased(submission.score),
                    codec::biased(submission.subscore),
                    has_metadata.to_owned(),
                    metadata,
                    request_id.to_owned(),
                    REQUEST_ID_TTL.as_millis().to_string(),
                ]
            })
            .await;
        let op = match &written {
            Ok((board, ..)) => operator(board).word(),
            Err(_) => submission.operator.map_or("default", Operator::word),
        };
        let result = written.and_then(|(board, instances, items)| {
            submit_results(&board, operator(&board), submission, instances, &items)
        });
        let outcome = match &result {
            Ok(s) if s.replayed => "replayed",
            Ok(s) if s.results.iter().any(|r| r.changed) => "changed",
            Ok(_) => "unchanged",
            Err(Error::OutOfRange { .. }) => "out_of_range",
            Err(_) => "error",
        };
        metrics::counter!("coord_leaderboard_submits_total", "operator" => op, "outcome" => outcome).increment(1);
        if let Ok(submitted) = &result
            && let Some(all_time) = submitted.results.first()
        {
            // Each submit samples the size of the board it wrote.
            metrics::histogram!("coord_leaderboard_board_entries").record(all_time.count as f64);
        }
        result
    }

    /// Removes a member from the current instance of every period.
    pub async fn remove(&self, ns: &Namespace, name: &Name, member: &Name) -> Result<bool> {
        let (_, _, items) =
            self.write(ns, name, &scripts::LB_REMOVE, None, |_| vec![member.as_str().to_owned()]).await?;
        Ok(int(at(&items, 1)?)? == 1)
    }

    // === Reads ===

    /// Entries and ranks of `members` (none: just the count).
    pub async fn ranks(&self, ns: &Namespace, name: &Name, selector: &Selector, members: &[Name]) -> Result<Ranks> {
        if members.len() > MAX_MEMBERS {
            return Err(Error::invalid("members", format!("at most {MAX_MEMBERS}, got {}", members.len())));
        }
        let (board, instance, items) = self
            .read(ns, name, selector, &scripts::LB_RANKS, |_, _| {
                Ok(members.iter().map(|m| m.as_str().to_owned()).collect())
            })
            .await?;
        let mut entries = Vec::with_capacity(members.len());
        for (i, m) in members.iter().enumerate() {
            let found = match at(&items, i + 2)? {
                Value::Nil => None,
                found => {
                    let v = array(found)?;
                    Some(entry(m.as_str().to_owned(), &string(at(v, 0)?)?, int(at(v, 1)?)?, board.spec.order)?)
                }
            };
            entries.push((m.as_str().to_owned(), found));
        }
        read_metric(if members.is_empty() { "count" } else { "ranks" });
        Ok(Ranks { instance, entries, count: int(at(&items, 1)?)? as u64 })
    }

    /// One page in rank order: after `cursor`, or from `start_rank`.
    pub async fn top(
        &self,
        ns: &Namespace,
        name: &Name,
        selector: &Selector,
        limit: u32,
        cursor: Option<&str>,
        start_rank: u64,
    ) -> Result<(Listing, Option<String>)> {
        let limit = match limit {
            0 => DEFAULT_PAGE,
            l if l > MAX_PAGE => return Err(Error::invalid("limit", format!("must be at most {MAX_PAGE}, got {l}"))),
            l => l,
        };
        if cursor.is_some() && start_rank > 1 {
            return Err(Error::invalid("start_rank", "only for the first page (without a cursor)"));
        }
        // A sorted set holds at most 2^32 - 1 members, and ranks reach the
        // script as Lua numbers (exact to 2^53): any rank past that is an
        // empty page.
        let start_rank = start_rank.min(1 << 32);
        let (board, instance, mut items) = self
            .read(ns, name, selector, &scripts::LB_TOP, |board, instance| {
                let after = cursor.map(|c| codec::decode_cursor(c, &board.inc, &instance.id)).transpose()?;
                Ok(vec![limit.to_string(), after.unwrap_or_default(), start_rank.saturating_sub(1).to_string()])
            })
            .await?;
        let count = int(at(&items, 1)?)? as u64;
        let first = int(at(&items, 2)?)?;
        let (entries, last) = range_entries(take(&mut items, 3), take(&mut items, 4), first, board.spec.order)?;
        let next = match last {
            Some(last) if first as u64 + (entries.len() as u64) < count => {
                Some(codec::encode_cursor(&board.inc, &instance.id, &last))
            }
            _ => None,
        };
        read_metric("top");
        Ok((Listing { instance, entries, count }, next))
    }

    /// The window around `member`, clipped at both ends; whether the member
    /// was found.
    #[allow(clippy::too_many_arguments)]
    pub async fn around(
        &self,
        ns: &Namespace,
        name: &Name,
        selector: &Selector,
        member: &Name,
        before: u32,
        after: u32,
        top_if_absent: bool,
    ) -> Result<(Listing, bool)> {
        for (field, v) in [("before", before), ("after", after)] {
            if v > MAX_AROUND {
                return Err(Error::invalid(field, format!("must be at most {MAX_AROUND}, got {v}")));
            }
        }
        let (board, instance, mut items) = self
            .read(ns, name, selector, &scripts::LB_AROUND, |_, _| {
                Ok(vec![
                    member.as_str().to_owned(),
                    before.to_string(),
                    after.to_string(),
                    if top_if_absent { "1" } else { "0" }.to_owned(),
                ])
            })
            .await?;
        let count = int(at(&items, 1)?)? as u64;
        let found = int(at(&items, 2)?)? == 1;
        let first = int(at(&items, 3)?)?;
        let (entries, _) = range_entries(take(&mut items, 4), take(&mut items, 5), first, board.spec.order)?;
        read_metric("around");
        Ok((Listing { instance, entries, count }, found))
    }
}

/// The per-period results of an `lb_submit` reply.
fn submit_results(
    board: &Board,
    operator: Operator,
    submission: &Submission,
    instances: Vec<Instance>,
    items: &[Value],
) -> Result<Submitted> {
    let replayed = match string(at(items, 0)?)?.as_str() {
        "ok" => false,
        "replay" => true,
        "overflow" => {
            let period = usize::try_from(int(at(items, 1)?)?)
                .ok()
                .and_then(|i| instances.get(i.wrapping_sub(1)))
                .map(|i| i.period.to_string())
                .unwrap_or_default();
            let column = string(at(items, 2)?)?;
            let value = if column == "subscore" { submission.subscore } else { submission.score };
            let verb = if operator == Operator::Decrement { "DECREMENT" } else { "INCREMENT" };
            return Err(Error::OutOfRange {
                field: column,
                reason: format!(
                    "{verb} by {value} would leave the int64 range in period {period}; nothing was written"
                ),
            });
        }
        other => return Err(Error::Internal(format!("lb_submit answered {other:?}"))),
    };
    let mut results = Vec::with_capacity(instances.len());
    for (instance, item) in instances.into_iter().zip(&items[1..]) {
        if *item == Value::Nil {
            results.push(PeriodResult { instance, entry: None, changed: false, count: 0 });
            continue;
        }
        let v = array(item)?;
        let (score, subscore, reached_at_us) = codec::decode_key(&string(at(v, 0)?)?, board.spec.order)?;
        let entry = Entry {
            member: submission.member.as_str().to_owned(),
            score,
            subscore,
            rank: int(at(v, 3)?)? as u64 + 1,
            metadata: string(at(v, 5)?)?,
            num_submits: int(at(v, 1)?)? as u64,
            reached_at_ms: reached_at_us / 1000,
        };
        let changed = int(at(v, 2)?)? == 1;
        results.push(PeriodResult { instance, entry: Some(entry), changed, count: int(at(v, 4)?)? as u64 });
    }
    Ok(Submitted { results, replayed })
}

fn order_word(order: Order) -> &'static str {
    match order {
        Order::Ascending => "asc",
        Order::Descending => "desc",
    }
}

fn read_metric(op: &'static str) {
    metrics::counter!("coord_leaderboard_reads_total", "op" => op).increment(1);
}

fn entry(member: String, record: &str, rank0: i64, order: Order) -> Result<Entry> {
    let stored = codec::decode_record(record, order)?;
    Ok(Entry {
        member,
        score: stored.score,
        subscore: stored.subscore,
        rank: rank0 as u64 + 1,
        metadata: stored.metadata,
        num_submits: stored.num_submits,
        reached_at_ms: stored.reached_at_us / 1000,
    })
}

/// Entries from a range script's member ids and records (moved, not
/// copied: pages are the hot path), the first at 0-based rank `first`; also
/// the last entry's ZSET member (for a cursor).
fn range_entries(members: Value, records: Value, first: i64, order: Order) -> Result<(Vec<Entry>, Option<String>)> {
    let (members, records) = (into_array(members)?, into_array(records)?);
    if members.len() != records.len() {
        return Err(Error::Internal("range script returned members and records of different lengths".into()));
    }
    let n = members.len();
    let mut entries = Vec::with_capacity(n);
    let mut last = None;
    for (i, (member, record)) in members.into_iter().zip(records).enumerate() {
        let (member, record) = (into_string(member)?, into_string(record)?);
        if i + 1 == n {
            last = record.get(..codec::KEY_LEN).map(|key| format!("{key}{member}"));
        }
        entries.push(entry(member, &record, first + i as i64, order)?);
    }
    Ok((entries, last))
}
