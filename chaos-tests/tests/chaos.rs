//! The chaos suite's smoke set: every scenario briefly on a three-node
//! cluster whose nodes live in their own network namespaces, checked from
//! its history; and failpoints that break a promise on purpose, to prove
//! the matching checker fails. Long runs: `cargo run -p chaos-tests --
//! --scenario NAME --duration 10m --seed N`.

use std::time::Duration;

use chaos_tests::chaos::{self, RunOptions};

/// One chaos run at a time: each is three nodes and a busy workload.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Seconds of faults per scenario in the smoke set.
const SMOKE: Duration = Duration::from_secs(8);

async fn smoke(scenario: &str) -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let options = RunOptions::new(scenario, SMOKE, 7);
    let (history, report) = chaos::run(&options).await?;
    let summary = chaos::summary(&options, &history, &report);
    println!("{summary}");
    assert!(report.ok(), "a promise broke:\n{summary}");
    // The run did something: writes and invocations succeeded between faults.
    assert!(
        history
            .ops
            .iter()
            .filter(|op| op.outcome == chaos_tests::history::Outcome::Ok)
            .count()
            > 20,
        "{summary}"
    );
    assert!(!history.intervals.is_empty(), "{summary}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn steady() -> anyhow::Result<()> {
    smoke("steady").await
}

#[tokio::test(flavor = "multi_thread")]
async fn leader_kills() -> anyhow::Result<()> {
    smoke("leader-kills").await
}

#[tokio::test(flavor = "multi_thread")]
async fn random_kills() -> anyhow::Result<()> {
    smoke("random-kills").await
}

#[tokio::test(flavor = "multi_thread")]
async fn minority_partition() -> anyhow::Result<()> {
    smoke("minority-partition").await
}

#[tokio::test(flavor = "multi_thread")]
async fn leader_isolated() -> anyhow::Result<()> {
    smoke("leader-isolated").await
}

#[tokio::test(flavor = "multi_thread")]
async fn flapping_links() -> anyhow::Result<()> {
    smoke("flapping-links").await
}

#[tokio::test(flavor = "multi_thread")]
async fn rolling_restart() -> anyhow::Result<()> {
    smoke("rolling-restart").await
}

#[tokio::test(flavor = "multi_thread")]
async fn leader_pause() -> anyhow::Result<()> {
    smoke("leader-pause").await
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_lossy_links() -> anyhow::Result<()> {
    smoke("slow-lossy-links").await
}

#[tokio::test(flavor = "multi_thread")]
async fn disk_full() -> anyhow::Result<()> {
    smoke("disk-full").await
}

/// With the leader's quota check switched off, the concurrency checker must fail.
#[tokio::test(flavor = "multi_thread")]
async fn the_quota_checker_catches_a_leader_that_ignores_quotas() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut options = RunOptions::new("steady", Duration::from_secs(5), 11);
    options.quota = 2;
    options.failpoints = Some("quota-off".into());
    let (history, report) = chaos::run(&options).await?;
    let summary = chaos::summary(&options, &history, &report);
    println!("{summary}");
    let quota = report
        .findings
        .iter()
        .find(|f| f.promise.contains("quota"))
        .expect("a quota finding");
    assert!(!quota.ok, "the checker missed quota violations:\n{summary}");
    assert!(report.max_concurrency > 2, "{summary}");
    Ok(())
}

/// With events answered 202 before (and instead of) their commit, the
/// event checker must report them lost.
#[tokio::test(flavor = "multi_thread")]
async fn the_event_checker_catches_events_acknowledged_before_commit() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut options = RunOptions::new("steady", Duration::from_secs(3), 12);
    options.failpoints = Some("ack-event-before-commit".into());
    options.drain = Some(Duration::from_secs(3));
    let (history, report) = chaos::run(&options).await?;
    let summary = chaos::summary(&options, &history, &report);
    println!("{summary}");
    let events = report
        .findings
        .iter()
        .find(|f| f.promise.contains("events"))
        .expect("an events finding");
    assert!(!events.ok, "the checker missed lost events:\n{summary}");
    assert!(report.lost_events > 0, "{summary}");
    Ok(())
}

/// With a leader that dispatches nothing for 30 s, the drain checker must
/// find the events accepted before the heal late (or never run).
#[tokio::test(flavor = "multi_thread")]
async fn the_drain_checker_catches_a_stalled_dispatcher() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut options = RunOptions::new("steady", Duration::from_secs(3), 13);
    options.failpoints = Some("dispatcher-stalls".into());
    let (history, report) = chaos::run(&options).await?;
    let summary = chaos::summary(&options, &history, &report);
    println!("{summary}");
    let drain = report
        .findings
        .iter()
        .find(|f| f.promise.contains("drain"))
        .expect("a drain finding");
    assert!(!drain.ok, "the checker missed a stalled dispatcher:\n{summary}");
    assert!(!history.accepted_event_ids().is_empty(), "{summary}");
    Ok(())
}

/// A leader cut off with writes in flight, then brought up to date by a
/// snapshot (the majority wrote past `snapshot_after_entries` meanwhile):
/// openraft 0.9 purges such a leader's unanswered entries without answering
/// their writers. Each write sent to it must still get an answer within
/// `raft.leader_wait` of the heal — before the fix it never did, and two
/// such writes held every write slot of the node, so that the node, once
/// leader again, wrote nothing (and its dispatcher ran no event) ever after.
#[tokio::test(flavor = "multi_thread")]
async fn writes_to_a_leader_cut_off_and_overtaken_by_a_snapshot_are_answered() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let config = chaos_tests::TEST_CONFIG.replace("leader_wait = \"10s\"", "leader_wait = \"3s\"");
    let mut cluster = chaos_tests::TestCluster::start_networked(3, &config, false, None).await?;
    let client = cluster.client().await?;
    client
        .create_function(
            "register",
            chaos_tests::python_config(),
            chaos_tests::python_package("return 1"),
        )
        .await?;
    let update = |description: String| floe_client::proto::UpdateFunctionRequest {
        name: "register".into(),
        description: Some(description),
        ..Default::default()
    };
    let leader = cluster.leader().await?;
    let cut_off = std::sync::Arc::new(cluster.client_of(leader).await?.with_retry_for(Duration::ZERO));
    cluster.network()?.partition(&[leader])?;
    // Writes that reach the leader before it notices it is cut off: appended
    // there, never committed. (Publishing proposes at once; an update would
    // first wait for a read barrier, which a cut-off leader refuses.)
    let pending: Vec<_> = (0..4)
        .map(|n| {
            let client = cut_off.clone();
            tokio::spawn(async move { client.publish_version("register", &format!("cut-off-{n}")).await })
        })
        .collect();
    // The majority elects a leader and writes past a snapshot.
    let others: Vec<String> = (0..3).filter(|i| *i != leader).map(|i| cluster.address(i)).collect();
    let majority = chaos_tests::connect(others)
        .await?
        .with_retry_for(Duration::from_secs(20));
    for n in 0..120 {
        majority.update_function(update(format!("majority-{n}"))).await?;
    }
    cluster.network()?.heal()?;
    let healed = std::time::Instant::now();
    for write in pending {
        // Answered (applied, refused or outcome unknown), within leader_wait and some slack.
        let answer = tokio::time::timeout(Duration::from_secs(3 + 10), write).await;
        anyhow::ensure!(answer.is_ok(), "a write to the cut-off leader was never answered");
        println!(
            "a write to the cut-off leader: {:?}",
            answer.unwrap()?.map(|v| v.version)
        );
    }
    println!(
        "every write to the cut-off leader answered {:?} after the heal",
        healed.elapsed()
    );
    Ok(())
}
