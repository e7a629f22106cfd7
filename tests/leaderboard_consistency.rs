//! Leaderboards under concurrent writes and over time: keyset paging
//! through 10k entries while others are inserted, ranks under 16
//! concurrent submitters against a model, and period roll-over with
//! 1-second periods and their retention.

mod support;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use coord::pb::{
    Board, CreateBoardRequest, Entry, GetRanksRequest, Operator, Period, PeriodKind, PeriodSelector, SortOrder,
    SubmitRequest, TopRequest, leaderboard_service_client::LeaderboardServiceClient,
};
use support::{redis::RedisServer, serving};
use tonic::{Code, transport::Channel};

type Client = LeaderboardServiceClient<Channel>;

async fn create(c: &mut Client, name: &str, order: SortOrder, operator: Operator, periods: Vec<Period>, keep: u32) {
    let board = Board {
        name: name.into(),
        order: order.into(),
        operator: operator.into(),
        periods,
        retention: keep,
        ..Default::default()
    };
    c.create_board(CreateBoardRequest { board: Some(board) }).await.expect("create board");
}

fn submit_req(board: &str, member: &str, score: i64) -> SubmitRequest {
    SubmitRequest { board: board.into(), member: member.into(), score, ..Default::default() }
}

/// A small deterministic generator (no shared state between tasks).
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// Submits `members` with `score(i)` from `tasks` concurrent clients.
async fn fill(
    c: &Client,
    board: &str,
    members: usize,
    tasks: usize,
    score: impl Fn(usize) -> i64 + Copy + Send + 'static,
) {
    let mut handles = Vec::new();
    for t in 0..tasks {
        let mut c = c.clone();
        let board = board.to_owned();
        handles.push(tokio::spawn(async move {
            for i in (t..members).step_by(tasks) {
                c.submit(submit_req(&board, &format!("m{i:05}"), score(i))).await.expect("fill");
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_10k_entries_returns_each_unmoved_entry_once_while_others_insert() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.boards();
    create(&mut c, "big", SortOrder::Descending, Operator::Set, vec![], 0).await;
    // Scores collide in tens, so ties (by time, then member) are paged too.
    fill(&c, "big", 10_000, 16, |i| (i as i64 * 7919) % 1000).await;

    // Writers insert new members everywhere in the order while we page.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let (mut c, stop) = (c.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut seed = 0x9E37_79B9_7F4A_7C15 ^ (w + 1);
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let score = (next(&mut seed) % 1002) as i64 - 1;
                c.submit(submit_req("big", &format!("new{w}-{n}"), score)).await.expect("insert");
                n += 1;
            }
            n
        }));
    }

    let mut seen: HashMap<String, u32> = HashMap::new();
    let mut cursor = String::new();
    let mut pages = 0;
    let mut previous_key: Option<(i64, i64, String)> = None;
    loop {
        // Odd page sizes so page edges fall everywhere.
        let limit = [97, 250, 1000, 13][pages % 4];
        let page = c
            .top(TopRequest { board: "big".into(), limit, cursor: cursor.clone(), ..Default::default() })
            .await
            .expect("page")
            .into_inner();
        pages += 1;
        for pair in page.entries.windows(2) {
            assert_eq!(pair[1].rank, pair[0].rank + 1, "ranks within a page are consecutive");
        }
        for e in &page.entries {
            // The board's order is strictly monotonic across pages.
            let key = (-e.score, e.reached_at_ms, e.member.clone());
            if let Some(prev) = &previous_key {
                assert!(prev.0 <= key.0, "scores never go back up: {prev:?} then {key:?}");
            }
            previous_key = Some(key);
            *seen.entry(e.member.clone()).or_default() += 1;
        }
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    stop.store(true, Ordering::Relaxed);
    let mut inserted = 0;
    for w in writers {
        inserted += w.await.unwrap();
    }
    assert!(inserted > 100, "writers ran during paging ({inserted} inserts)");
    for i in 0..10_000 {
        let m = format!("m{i:05}");
        assert_eq!(seen.get(&m), Some(&1), "{m} seen {:?} times", seen.get(&m));
    }
    assert!(seen.values().all(|n| *n == 1), "no entry repeats");
    eprintln!("{pages} pages, {} entries seen, {inserted} inserted meanwhile", seen.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranks_under_16_concurrent_submitters_match_a_model() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.boards();
    create(&mut c, "sum", SortOrder::Descending, Operator::Increment, vec![], 0).await;
    create(&mut c, "best", SortOrder::Ascending, Operator::Best, vec![], 0).await;
    const MEMBERS: usize = 200;
    const PER_TASK: usize = 150;

    // Each task submits a deterministic sequence; the model replays them.
    let plan = |t: u64| {
        let mut seed = 0xD1B5_4A32_D192_ED03 ^ (t + 1);
        (0..PER_TASK)
            .map(|_| {
                let member = (next(&mut seed) % MEMBERS as u64) as usize;
                let delta = (next(&mut seed) % 1_000_000) as i64 - 400_000;
                (member, delta)
            })
            .collect::<Vec<_>>()
    };
    let mut handles = Vec::new();
    for t in 0..16u64 {
        let mut c = c.clone();
        handles.push(tokio::spawn(async move {
            for (member, delta) in plan(t) {
                let m = format!("p{member}");
                let sum = c.submit(submit_req("sum", &m, delta)).await.expect("increment").into_inner();
                assert!(sum.results[0].entry.as_ref().unwrap().rank >= 1);
                c.submit(submit_req("best", &m, delta)).await.expect("best");
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let mut sums: HashMap<String, i64> = HashMap::new();
    let mut bests: HashMap<String, i64> = HashMap::new();
    for t in 0..16 {
        for (member, delta) in plan(t) {
            *sums.entry(format!("p{member}")).or_default() += delta;
            let best = bests.entry(format!("p{member}")).or_insert(i64::MAX);
            *best = (*best).min(delta);
        }
    }

    for (board, model, descending) in [("sum", &sums, true), ("best", &bests, false)] {
        let page =
            c.top(TopRequest { board: board.into(), limit: 1000, ..Default::default() }).await.unwrap().into_inner();
        assert_eq!(page.count as usize, model.len(), "{board}: one entry per member");
        let got: HashMap<String, i64> = page.entries.iter().map(|e| (e.member.clone(), e.score)).collect();
        assert_eq!(&got, model, "{board}: final scores match the model");
        // The order is the model's order; ties by who reached the score first.
        let mut expected: Vec<&Entry> = page.entries.iter().collect();
        expected.sort_by_key(|e| (if descending { -e.score } else { e.score }, e.reached_at_ms));
        for (i, e) in page.entries.iter().enumerate() {
            assert_eq!(e.rank, i as u64 + 1);
            let want = expected[i];
            assert_eq!((e.score, e.reached_at_ms), (want.score, want.reached_at_ms), "{board}: rank {}", i + 1);
        }
        // GetRanks agrees with Top for every member.
        let members: Vec<String> = model.keys().cloned().collect();
        let ranks = c
            .get_ranks(GetRanksRequest { board: board.into(), members: members.clone(), ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        let by_top: HashMap<&str, u64> = page.entries.iter().map(|e| (e.member.as_str(), e.rank)).collect();
        for m in ranks.entries {
            assert_eq!(Some(m.entry.unwrap().rank), by_top.get(m.member.as_str()).copied(), "{}", m.member);
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

async fn sleep_until_ms(t: i64) {
    let wait = t - now_ms();
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
}

#[tokio::test]
async fn period_roll_over_keeps_past_instances_readable_until_retention_ends() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.boards();
    let second = Period { kind: PeriodKind::Fixed.into(), length_ms: 1000 };
    create(&mut c, "fast", SortOrder::Descending, Operator::Increment, vec![second], 2).await;
    // Start early in a second so the first writes share one instance.
    sleep_until_ms((now_ms() / 1000 + 1) * 1000 + 50).await;

    let first = c.submit(submit_req("fast", "a", 10)).await.unwrap().into_inner();
    c.submit(submit_req("fast", "b", 5)).await.unwrap();
    let p0 = first.results[1].period.clone().unwrap();
    assert_eq!(p0.end_ms - p0.start_ms, 1000);
    let fixed = |ago: u32, id: &str| PeriodSelector { period: Some(second), ago, id: id.into() };

    // Into the next second: a fresh instance; ALL_TIME keeps counting.
    sleep_until_ms(p0.end_ms + 50).await;
    let r = c.submit(submit_req("fast", "a", 1)).await.unwrap().into_inner();
    assert_eq!(r.results[0].entry.as_ref().unwrap().score, 11, "ALL_TIME is never reset");
    let now = &r.results[1];
    assert_ne!(now.period.as_ref().unwrap().id, p0.id);
    assert_eq!((now.entry.as_ref().unwrap().score, now.count), (1, 1), "the new instance starts empty");

    let top = |sel: PeriodSelector| TopRequest { board: "fast".into(), period: Some(sel), ..Default::default() };
    let past = c.top(top(fixed(0, &p0.id))).await.unwrap().into_inner();
    let scores: Vec<(String, i64)> = past.entries.iter().map(|e| (e.member.clone(), e.score)).collect();
    assert_eq!(scores, [("a".into(), 10), ("b".into(), 5)], "the previous instance is unchanged");
    let by_ago = c.top(top(fixed(1, ""))).await.unwrap().into_inner();
    assert_eq!(by_ago.period.unwrap().id, p0.id);

    // Retention 2: still readable two instances later, gone after that.
    let inc = redis.cli(&["HGET", "coord:default:lb:{fast}", "inc"]);
    let zset = format!("coord:default:lb:{{fast}}:z:{inc}.{}", p0.id);
    let ttl: i64 = redis.cli(&["PTTL", &zset]).parse().unwrap();
    assert!(ttl > 0 && ttl <= 3000, "the instance expires at its end + 2 periods (PTTL {ttl})");
    sleep_until_ms(p0.end_ms + 2000 - 100).await;
    let late = c.top(top(fixed(0, &p0.id))).await.unwrap().into_inner();
    assert_eq!(late.count, 2, "readable until retention ends");
    sleep_until_ms(p0.end_ms + 2000 + 100).await;
    let err = c.top(top(fixed(0, &p0.id))).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "past retention: {err:?}");
    assert_eq!(redis.cli(&["EXISTS", &zset]), "0", "and its keys expired in Redis");
    let total = c.top(top(PeriodSelector::default())).await.unwrap().into_inner();
    assert_eq!(total.count, 2, "ALL_TIME keeps everything");
    let members: HashSet<String> = total.entries.into_iter().map(|e| e.member).collect();
    assert_eq!(members, HashSet::from(["a".to_owned(), "b".to_owned()]));
}

#[tokio::test]
async fn writes_land_in_the_instances_of_redis_time_whatever_the_local_clock() {
    use coord::{
        leaderboard::{
            Leaderboards, Submission,
            board::{Operator as Op, Order, Period as P, Spec},
        },
        redis::{ConnectOptions, KeyBuilder, Namespace, Redis},
    };
    let redis = RedisServer::start();
    let opts = ConnectOptions {
        pool_size: 1,
        connect_timeout: Duration::from_secs(1),
        command_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let boards = Leaderboards::new(Redis::single(&redis.url(), &opts).unwrap(), KeyBuilder::new("coord").unwrap());
    let ns = Namespace::default();
    let name = Leaderboards::name("board", "skew").unwrap();
    let fixed = P::Fixed { length_ms: 1000 };
    let spec = Spec::new(Order::Descending, Op::Increment, &[fixed], 10, 0, "board").unwrap();
    boards.create(&ns, &name, spec).await.unwrap();
    let submission = Submission {
        member: Leaderboards::name("member", "m").unwrap(),
        score: 1,
        subscore: 0,
        operator: None,
        metadata: None,
        request_id: None,
    };
    for skew in [-5_000, 7_000] {
        // This instance's clock is off by seconds: it computes the wrong
        // instances, the script refuses them, and the retry uses Redis TIME.
        boards.skew_clock(skew);
        let before = now_ms();
        let results = boards.submit(&ns, &name, &submission).await.unwrap().results;
        let after = now_ms();
        let instance = &results[1].instance;
        assert!(
            instance.start_ms <= after && before < instance.end_ms,
            "skew {skew}: wrote to [{}, {}) at {before}..{after}",
            instance.start_ms,
            instance.end_ms
        );
        boards.skew_clock(-skew);
    }
}
