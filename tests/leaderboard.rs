//! LeaderboardService through the generated client: exact int64 order at
//! the extremes, ties by who got there first, BEST as a pair, rejected
//! overflow, around-me at the edges, percentile and count, boards'
//! lifecycle, validation, and the scripts on a local cluster.

mod support;

use coord::pb::{
    AroundRequest, Board, CountRequest, CreateBoardRequest, DeleteBoardRequest, Entry, GetBoardRequest,
    GetRanksRequest, Operator, PercentileRequest, Period, PeriodKind, PeriodSelector, RemoveRequest, SortOrder,
    SubmitRequest, SubmitResponse, TopRequest, TopResponse, leaderboard_service_client::LeaderboardServiceClient,
};
use support::{
    redis::{RedisCluster, RedisServer},
    serving, serving_with,
};
use tonic::{Code, transport::Channel};

type Client = LeaderboardServiceClient<Channel>;

fn board(name: &str, order: SortOrder, operator: Operator) -> Board {
    Board { name: name.into(), order: order.into(), operator: operator.into(), ..Default::default() }
}

async fn create(c: &mut Client, board: Board) {
    c.create_board(CreateBoardRequest { board: Some(board) }).await.expect("create board");
}

async fn submit(c: &mut Client, board: &str, member: &str, score: i64, subscore: i64) -> SubmitResponse {
    submit_op(c, board, member, score, subscore, Operator::Unspecified).await
}

async fn submit_op(
    c: &mut Client,
    board: &str,
    member: &str,
    score: i64,
    subscore: i64,
    operator: Operator,
) -> SubmitResponse {
    c.submit(SubmitRequest {
        board: board.into(),
        member: member.into(),
        score,
        subscore,
        operator: operator.into(),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("submit {member} {score}: {e}"))
    .into_inner()
}

async fn top(c: &mut Client, board: &str, limit: u32) -> TopResponse {
    c.top(TopRequest { board: board.into(), limit, ..Default::default() }).await.expect("top").into_inner()
}

async fn entry(c: &mut Client, board: &str, member: &str) -> Option<Entry> {
    let reply = c
        .get_ranks(GetRanksRequest { board: board.into(), members: vec![member.into()], ..Default::default() })
        .await
        .expect("get ranks")
        .into_inner();
    reply.entries.into_iter().next().and_then(|e| e.entry)
}

fn members(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.member.as_str()).collect()
}

#[tokio::test]
async fn int64_scores_order_exactly_over_the_whole_range() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.boards();
    let two53 = 1i64 << 53;
    // Each pair differs by one and would collide as doubles.
    let scores = [i64::MIN, i64::MIN + 1, -(1 << 62), -(two53 + 1), -two53, -1, 0, two53, two53 + 1, 1 << 62, i64::MAX];
    for (order, name) in [(SortOrder::Descending, "desc"), (SortOrder::Ascending, "asc")] {
        create(&mut c, board(name, order, Operator::Set)).await;
        // Submitted in an order unrelated to the scores.
        for (i, score) in scores.iter().enumerate().rev() {
            let r = submit(&mut c, name, &format!("m{i}"), *score, -(*score / 2)).await;
            assert_eq!(r.results[0].entry.as_ref().unwrap().score, *score, "the write echoes the exact score");
        }
        let page = top(&mut c, name, 100).await;
        let got: Vec<i64> = page.entries.iter().map(|e| e.score).collect();
        let mut want = scores.to_vec();
        if order == SortOrder::Descending {
            want.reverse();
        }
        assert_eq!(got, want, "{name}");
        let ranks: Vec<u64> = page.entries.iter().map(|e| e.rank).collect();
        assert_eq!(ranks, (1..=scores.len() as u64).collect::<Vec<_>>(), "ranks are 1-based and ordinal");
        for e in &page.entries {
            assert_eq!(e.subscore, -(e.score / 2), "subscores are exact too");
        }
        let max = entry(&mut c, name, "m10").await.unwrap();
        assert_eq!((max.score, max.rank), (i64::MAX, if order == SortOrder::Descending { 1 } else { 11 }));
    }
}

#[tokio::test]
async fn ties_go_to_who_reached_the_score_first_then_to_the_member_id() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.boards();
    create(&mut c, board("ties", SortOrder::Descending, Operator::Set)).await;
    submit(&mut c, "ties", "zed", 100, 0).await;
    submit(&mut c, "ties", "amy", 100, 0).await;
    submit(&mut c, "ties", "bob", 100, 0).await;
    assert_eq!(members(&top(&mut c, "ties", 10).await.entries), ["zed", "amy", "bob"], "first to 100 ranks first");

    // Submitting the same score again does not reset who got there first.
    let again = submit(&mut c, "ties", "zed", 100, 0).await;
    assert!(!again.results[0].changed);
    assert_eq!(again.results[0].entry.as_ref().unwrap().rank, 1);
    // Leaving the score and coming back does.
    submit(&mut c, "ties", "zed", 99, 0).await;
    submit(&mut c, "ties", "zed", 100, 0).await;
    assert_eq!(members(&top(&mut c, "ties", 10).await.entries), ["amy", "bob", "zed"]);

    // Same score reached in the same microsecond (written straight into
    // the ZSET, as a script cannot be made to run twice in one µs): the
    // member id decides.
    let inc = redis.cli(&["HGET", "coord:default:lb:{ties}", "inc"]);
    let zset = format!("coord:default:lb:{{ties}}:z:{inc}.all");
    let records = format!("coord:default:lb:{{ties}}:r:{inc}.all");
    let key = coord::leaderboard::codec::encode_key(50, 0, 1_000, coord::leaderboard::board::Order::Descending);
    for m in ["yan", "xia"] {
        redis.cli(&["ZADD", &zset, "0", &format!("{key}{m}")]);
        redis.cli(&["HSET", &records, m, &format!("{key}1:")]);
    }
    let page = top(&mut c, "ties", 10).await;
    assert_eq!(members(&page.entries), ["amy", "bob", "zed", "xia", "yan"]);
}

#[tokio::test]
async fn best_keeps_the_better_pair_never_a_mix_of_two_submits() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.boards();
    create(&mut c, board("desc", SortOrder::Descending, Operator::Best)).await;
    submit(&mut c, "desc", "p", 100, 5).await;
    // Worse score, better subscore: (100, 9) would be a record nobody made.
    let r = submit(&mut c, "desc", "p", 90, 9).await;
    let e = r.results[0].entry.as_ref().unwrap();
    assert_eq!((e.score, e.subscore, r.results[0].changed), (100, 5, false));
    let r = submit(&mut c, "desc", "p", 100, 6).await;
    let e = r.results[0].entry.as_ref().unwrap();
    assert_eq!((e.score, e.subscore, r.results[0].changed), (100, 6, true), "a better subscore on a tie wins");

    // Ascending: lower is better, in both columns.
    create(&mut c, board("asc", SortOrder::Ascending, Operator::Best)).await;
    submit(&mut c, "asc", "p", 100, 5).await;
    let r = submit(&mut c, "asc", "p", 101, 0).await;
    assert_eq!(r.results[0].entry.as_ref().unwrap().score, 100);
    let r = submit(&mut c, "asc", "p", 100, 4).await;
    let e = r.results[0].entry.as_ref().unwrap();
    assert_eq!((e.score, e.subscore), (100, 4));

    // A per-submit operator overrides the board's.
    let r = submit_op(&mut c, "desc", "p", 1, 1, Operator::Set).await;
    assert_eq!(r.results[0].entry.as_ref().unwrap().score, 1);
    assert_eq!(r.results[0].entry.as_ref().unwrap().num_submits, 4);
}

#[tokio::test]
async fn increment_overflow_is_rejected_and_writes_nothing() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.boards();
    create(&mut c, board("sum", SortOrder::Descending, Operator::Increment)).await;
    submit(&mut c, "sum", "p", i64::MAX - 1, 0).await;
    let r = submit(&mut c, "sum", "p", 1, 0).await;
    assert_eq!(r.results[0].entry.as_ref().unwrap().score, i64::MAX, "reaching the bound is fine");

    let err = c
        .submit(SubmitRequest { board: "sum".into(), member: "p".into(), score: 1, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(err.message().starts_with("score:"), "{}", err.message());
    let err = c
        .submit(SubmitRequest {
            board: "sum".into(),
            member: "p".into(),
            score: 0,
            subscore: i64::MIN,
            operator: Operator::Decrement.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
    assert!(err.message().starts_with("subscore:"), "{}", err.message());
    let e = entry(&mut c, "sum", "p").await.unwrap();
    assert_eq!((e.score, e.subscore, e.num_submits), (i64::MAX, 0, 2), "rejected submits changed nothing");

    // Down to the other bound with DECREMENT, and INCREMENT by 0 changes nothing.
    submit_op(&mut c, "sum", "n", i64::MAX, 0, Operator::Decrement).await;
    let r = submit_op(&mut c, "sum", "n", 1, 0, Operator::Decrement).await;
    assert_eq!(r.results[0].entry.as_ref().unwrap().score, i64::MIN);
    let r = submit(&mut c, "sum", "n", 0, 0).await;
    assert!(!r.results[0].changed);
    assert_eq!(r.results[0].entry.as_ref().unwrap().score, i64::MIN);
}

#[tokio::test]
async fn metadata_follows_the_entry() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.boards();
    create(&mut c, board("meta", SortOrder::Descending, Operator::Best)).await;
    let with = |score: i64, meta: Option<&str>| SubmitRequest {
        board: "meta".into(),
        member: "p".into(),
        score,
        metadata: meta.map(str::to_owned),
        ..Default::default()
    };
    c.submit(with(10, Some(r#"{"replay":"a"}"#))).await.unwrap();
    // A BEST submit that does not improve keeps the record's metadata.
    let r = c.submit(with(5, Some(r#"{"replay":"b"}"#))).await.unwrap().into_inner();
    assert_eq!(r.results[0].entry.as_ref().unwrap().metadata, r#"{"replay":"a"}"#);
    // No metadata keeps the old one; an improvement replaces it.
    c.submit(with(11, None)).await.unwrap();
    assert_eq!(entry(&mut c, "meta", "p").await.unwrap().metadata, r#"{"replay":"a"}"#);
    c.submit(with(12, Some("c"))).await.unwrap();
    let page = top(&mut c, "meta", 1).await;
    assert_eq!(page.entries[0].metadata, "c");
    let err = c.submit(with(13, Some(&"x".repeat(4097)))).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("metadata:") && err.message().contains("4096"), "{}", err.message());
}

#[tokio::test]
async fn around_me_is_clipped_at_the_top_and_the_bottom() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.boards();
    create(&mut c, board("ten", SortOrder::Descending, Operator::Set)).await;
    for i in 1..=10 {
        submit(&mut c, "ten", &format!("p{i:02}"), 100 - i, 0).await; // p01 is rank 1
    }
    let around = |member: &str, before: u32, after: u32| AroundRequest {
        board: "ten".into(),
        member: member.into(),
        before,
        after,
        ..Default::default()
    };
    let ranks = |r: &coord::pb::AroundResponse| r.entries.iter().map(|e| e.rank).collect::<Vec<_>>();

    let mid = c.around(around("p05", 2, 3)).await.unwrap().into_inner();
    assert!(mid.found);
    assert_eq!(ranks(&mid), [3, 4, 5, 6, 7, 8]);
    let first = c.around(around("p01", 3, 3)).await.unwrap().into_inner();
    assert_eq!(ranks(&first), [1, 2, 3, 4], "clipped at the top");
    let second = c.around(around("p02", 3, 1)).await.unwrap().into_inner();
    assert_eq!(ranks(&second), [1, 2, 3]);
    let last = c.around(around("p10", 3, 3)).await.unwrap().into_inner();
    assert_eq!(ranks(&last), [7, 8, 9, 10], "clipped at the bottom");
    assert_eq!(last.entries.last().unwrap().member, "p10");
    let all = c.around(around("p05", 100, 100)).await.unwrap().into_inner();
    assert_eq!(all.entries.len(), 10, "fewer members than asked");
    assert_eq!(all.count, 10);

    let absent = c.around(around("nobody", 2, 2)).await.unwrap().into_inner();
    assert!(!absent.found && absent.entries.is_empty());
    let mut req = around("nobody", 2, 2);
    req.top_if_absent = true;
    let instead = c.around(req).await.unwrap().into_inner();
    assert!(!instead.found);
    assert_eq!(ranks(&instead), [1, 2, 3, 4, 5]);

    let err = c.around(around("p01", 101, 0)).await.unwrap_err();
    assert!(err.message().starts_with("before:") && err.message().contains("100"), "{}", err.message());
}

#[tokio::test]
async fn percentile_count_ranks_and_remove() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.boards();
    create(&mut c, board("p", SortOrder::Ascending, Operator::Best)).await;
    for (m, s) in [("a", 10), ("b", 20), ("c", 30), ("d", 40)] {
        submit(&mut c, "p", m, s, 0).await;
    }
    let pct = |member: &str| PercentileRequest { board: "p".into(), member: member.into(), ..Default::default() };
    let top_p = c.percentile(pct("a")).await.unwrap().into_inner();
    assert_eq!((top_p.found, top_p.rank, top_p.count, top_p.percentile), (true, 1, 4, 100.0));
    let bottom = c.percentile(pct("d")).await.unwrap().into_inner();
    assert_eq!((bottom.rank, bottom.percentile), (4, 25.0));
    let absent = c.percentile(pct("zz")).await.unwrap().into_inner();
    assert!(!absent.found);

    let ranks = c
        .get_ranks(GetRanksRequest {
            board: "p".into(),
            members: vec!["c".into(), "nobody".into(), "a".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let got: Vec<(String, Option<u64>)> =
        ranks.entries.iter().map(|e| (e.member.clone(), e.entry.as_ref().map(|e| e.rank))).collect();
    assert_eq!(got, [("c".into(), Some(3)), ("nobody".into(), None), ("a".into(), Some(1))]);

    let removed = c.remove(RemoveRequest { board: "p".into(), member: "b".into() }).await.unwrap().into_inner();
    assert!(removed.removed);
    let again = c.remove(RemoveRequest { board: "p".into(), member: "b".into() }).await.unwrap().into_inner();
    assert!(!again.removed);
    let count = c.count(CountRequest { board: "p".into(), period: None }).await.unwrap().into_inner();
    assert_eq!(count.count, 3);
    assert_eq!(entry(&mut c, "p", "c").await.unwrap().rank, 2, "ranks close up after a removal");
}

#[tokio::test]
async fn boards_are_created_once_deleted_with_their_data_and_isolated() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let other = serving(&redis.url()).await;
    let mut c = coord.boards();
    let mut c2 = other.boards();
    let mut daily = board("season", SortOrder::Descending, Operator::Increment);
    daily.periods = vec![Period { kind: PeriodKind::Daily.into(), length_ms: 0 }];
    daily.retention = 7;
    let made = c.create_board(CreateBoardRequest { board: Some(daily.clone()) }).await.unwrap().into_inner();
    assert!(made.created);
    assert!(made.board.as_ref().unwrap().created_at_ms > 0);
    let same = c.create_board(CreateBoardRequest { board: Some(daily.clone()) }).await.unwrap().into_inner();
    assert!(!same.created, "creating the same board again is idempotent");
    let mut changed = daily.clone();
    changed.retention = 8;
    let err = c.create_board(CreateBoardRequest { board: Some(changed) }).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);

    let got = c.get_board(GetBoardRequest { board: "season".into() }).await.unwrap().into_inner();
    let kinds: Vec<i32> = got.board.unwrap().periods.iter().map(|p| p.kind).collect();
    assert_eq!(kinds, [PeriodKind::AllTime as i32, PeriodKind::Daily as i32]);
    assert_eq!(got.current[1].end_ms - got.current[1].start_ms, 86_400_000);

    // Both instances know the board; each result covers both periods.
    let r = submit(&mut c2, "season", "p", 5, 0).await;
    assert_eq!(r.results.len(), 2);
    assert!(r.results[1].period.as_ref().unwrap().id.starts_with('d'));

    // Another namespace and another board see nothing of it.
    let mut req = tonic::Request::new(GetRanksRequest {
        board: "season".into(),
        members: vec!["p".into()],
        ..Default::default()
    });
    req.metadata_mut().insert("coord-namespace", "other".parse().unwrap());
    assert_eq!(c.get_ranks(req).await.unwrap_err().code(), Code::NotFound);
    create(&mut c, board("season2", SortOrder::Descending, Operator::Increment)).await;
    assert!(entry(&mut c, "season2", "p").await.is_none());

    // Deleted on one instance, recreated with other settings: the other
    // instance's cached settings are noticed as stale, and data is gone.
    assert!(c.delete_board(DeleteBoardRequest { board: "season".into() }).await.unwrap().into_inner().deleted);
    let err = c2
        .submit(SubmitRequest { board: "season".into(), member: "p".into(), score: 1, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    create(&mut c, board("season", SortOrder::Ascending, Operator::Set)).await;
    let r = submit(&mut c2, "season", "p", 3, 0).await;
    assert_eq!(r.results.len(), 1, "the new settings have no DAILY period");
    let e = r.results[0].entry.as_ref().unwrap();
    assert_eq!((e.score, e.num_submits), (3, 1), "the recreated board starts empty");
    assert!(!c.delete_board(DeleteBoardRequest { board: "nope".into() }).await.unwrap().into_inner().deleted);
    // Nothing of the first incarnation is left.
    let keys = redis.cli(&["--scan", "--pattern", "coord:default:lb:{season}*"]);
    assert_eq!(keys.lines().count(), 3, "settings, ZSET and records of the new board only: {keys}");
}

#[tokio::test]
async fn bad_requests_name_the_field_and_unknown_boards_are_not_found() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.boards();
    let mut weekly = board("b", SortOrder::Descending, Operator::Best);
    weekly.periods = vec![Period { kind: PeriodKind::Weekly.into(), length_ms: 0 }];
    weekly.retention = 2;
    create(&mut c, weekly).await;
    submit(&mut c, "b", "m", 1, 0).await;

    let invalid = |err: tonic::Status, field: &str| {
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().starts_with(&format!("{field}:")), "want {field}: got {}", err.message());
    };
    let long = "x".repeat(257);
    let create_err = |b: Board| {
        let mut c = c.clone();
        async move { c.create_board(CreateBoardRequest { board: Some(b) }).await.unwrap_err() }
    };
    invalid(create_err(board(&long, SortOrder::Descending, Operator::Best)).await, "board.name");
    invalid(create_err(board("", SortOrder::Descending, Operator::Best)).await, "board.name");
    let mut b = board("x", SortOrder::Descending, Operator::Best);
    b.periods = vec![Period { kind: PeriodKind::Fixed.into(), length_ms: 10 }];
    invalid(create_err(b.clone()).await, "board.periods[0].length_ms");
    b.periods = vec![Period { kind: PeriodKind::Daily.into(), length_ms: 5 }];
    invalid(create_err(b.clone()).await, "board.periods[0].length_ms");
    b.periods = vec![];
    b.retention = 1001;
    invalid(create_err(b.clone()).await, "board.retention");
    b.retention = 0;
    b.order = 9;
    invalid(create_err(b).await, "board.order");

    let sub = |board: &str, member: &str| SubmitRequest {
        board: board.into(),
        member: member.into(),
        score: 1,
        ..Default::default()
    };
    invalid(c.submit(sub("b", "")).await.unwrap_err(), "member");
    invalid(c.submit(sub("b", &long)).await.unwrap_err(), "member");
    assert_eq!(c.submit(sub("missing", "m")).await.unwrap_err().code(), Code::NotFound);
    let mut bad_op = sub("b", "m");
    bad_op.operator = 42;
    invalid(c.submit(bad_op).await.unwrap_err(), "operator");

    let top_req = |limit: u32, cursor: &str, period: Option<PeriodSelector>| TopRequest {
        board: "b".into(),
        limit,
        cursor: cursor.into(),
        period,
        start_rank: 0,
    };
    invalid(c.top(top_req(1001, "", None)).await.unwrap_err(), "limit");
    // Ranks past any board are an empty page, up to the largest (these once
    // reached Redis as floats: INTERNAL).
    for start_rank in [4_294_967_296, 99_999_999_999_999_897, u64::MAX] {
        let page = c.top(TopRequest { start_rank, ..top_req(10, "", None) }).await.unwrap().into_inner();
        assert!(page.entries.is_empty(), "{start_rank}: {page:?}");
    }
    invalid(c.top(top_req(10, "garbage!", None)).await.unwrap_err(), "cursor");
    let daily =
        PeriodSelector { period: Some(Period { kind: PeriodKind::Daily.into(), length_ms: 0 }), ..Default::default() };
    invalid(c.top(top_req(10, "", Some(daily))).await.unwrap_err(), "period.period");
    let weekly = |ago: u32, id: &str| PeriodSelector {
        period: Some(Period { kind: PeriodKind::Weekly.into(), length_ms: 0 }),
        ago,
        id: id.into(),
    };
    invalid(c.top(top_req(10, "", Some(weekly(3, "")))).await.unwrap_err(), "period.ago");
    invalid(c.top(top_req(10, "", Some(weekly(0, "w1999-01-04")))).await.unwrap_err(), "period.id");
    assert_eq!(c.top(top_req(10, "", Some(weekly(2, "")))).await.unwrap().into_inner().count, 0);
    // A cursor of one period instance is refused on another.
    submit(&mut c, "b", "n", 2, 0).await;
    let first = c.top(top_req(1, "", Some(weekly(0, "")))).await.unwrap().into_inner();
    assert!(!first.next_cursor.is_empty());
    invalid(c.top(top_req(1, &first.next_cursor, None)).await.unwrap_err(), "cursor");

    let many: Vec<String> = (0..1001).map(|i| i.to_string()).collect();
    let err =
        c.get_ranks(GetRanksRequest { board: "b".into(), members: many, ..Default::default() }).await.unwrap_err();
    invalid(err, "members");
    let err = c.get_ranks(GetRanksRequest { board: "b".into(), ..Default::default() }).await.unwrap_err();
    invalid(err, "members");
}

#[tokio::test]
async fn leaderboard_scripts_run_on_a_local_cluster() {
    let cluster = RedisCluster::start(0);
    let mut config = support::config("");
    config.redis.cluster = cluster.urls();
    let coord = serving_with(config).await;
    let mut c = coord.boards();
    // Boards spread over the shards; every key of one board is on one.
    for name in ["alpha", "beta", "gamma", "delta"] {
        let mut b = board(name, SortOrder::Descending, Operator::Best);
        b.periods = vec![
            Period { kind: PeriodKind::Daily.into(), length_ms: 0 },
            Period { kind: PeriodKind::Fixed.into(), length_ms: 3_600_000 },
        ];
        b.retention = 1;
        create(&mut c, b).await;
        for i in 0..20 {
            let r = submit(&mut c, name, &format!("m{i}"), i, 0).await;
            assert_eq!(r.results.len(), 3);
        }
        let page = top(&mut c, name, 5).await;
        assert_eq!(page.count, 20);
        assert_eq!(members(&page.entries), ["m19", "m18", "m17", "m16", "m15"]);
        let next = c
            .top(TopRequest { board: name.into(), limit: 5, cursor: page.next_cursor, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(next.entries[0].rank, 6);
        let around = c
            .around(AroundRequest {
                board: name.into(),
                member: "m0".into(),
                before: 2,
                after: 2,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(members(&around.entries), ["m2", "m1", "m0"]);
        assert!(
            c.remove(RemoveRequest { board: name.into(), member: "m0".into() }).await.unwrap().into_inner().removed
        );
        assert_eq!(entry(&mut c, name, "m19").await.unwrap().rank, 1);
        assert!(c.delete_board(DeleteBoardRequest { board: name.into() }).await.unwrap().into_inner().deleted);
    }
}

#[tokio::test]
async fn an_unreachable_redis_is_unavailable_and_a_retry_with_the_request_id_counts_once() {
    let redis = RedisServer::start();
    let coord = serving(&redis.url()).await;
    let mut c = coord.boards();
    create(&mut c, board("down", SortOrder::Descending, Operator::Increment)).await;
    submit(&mut c, "down", "p", 1, 0).await;
    let add_one = || SubmitRequest {
        board: "down".into(),
        member: "p".into(),
        score: 1,
        request_id: "req-42".into(),
        ..Default::default()
    };
    redis.stop();
    let started = std::time::Instant::now();
    let err = c.submit(add_one()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let err = c.top(TopRequest { board: "down".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    // Command timeout 500 ms in the harness; generous bound.
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "took {:?}", started.elapsed());
    redis.cont();

    // The timed-out submit may or may not have been applied (Redis had it
    // in its socket buffer). Retrying with the same request id is safe.
    let retry = c.submit(add_one()).await.unwrap().into_inner();
    assert_eq!(retry.results[0].entry.as_ref().unwrap().score, 2, "counted exactly once");
    let again = c.submit(add_one()).await.unwrap().into_inner();
    assert!(again.replayed && !again.results[0].changed);
    assert_eq!(again.results[0].entry.as_ref().unwrap().score, 2);
    let other = SubmitRequest { request_id: "req-43".into(), ..add_one() };
    assert_eq!(c.submit(other).await.unwrap().into_inner().results[0].entry.as_ref().unwrap().score, 3);
    let long = SubmitRequest { request_id: "r".repeat(129), ..add_one() };
    let err = c.submit(long).await.unwrap_err();
    assert!(err.message().starts_with("request_id:"), "{}", err.message());
}
