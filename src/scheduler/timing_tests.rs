//! The scheduler's timing rules on a paused clock (`start_paused`): tokio
//! moves time on only when every task waits, so each test says exactly when
//! something happens, with no real waiting and no flakiness: the recovery
//! wait, re-probe back-off, patience with suspect nodes, hedging deadlines,
//! the hand-over of a freed slot, and how soon a task whose hosts all refuse
//! gives up.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::time::Instant;

use super::estimate::HEDGE_FLOOR;
use super::recovery::{Prober, RECOVERY_WAIT};
use super::tests::{far, node, none, until_depth};
use super::*;
use crate::nodes::latency::Sample;
use crate::nodes::state::FIRST_BACKOFF;
use crate::ollama::{ClientError, ErrorKind, Timeouts};

/// An attempt's outcome, as the fake attempts here give it.
type Reply = BoxFuture<'static, Result<((), Measured), ClientError>>;

/// How often `task.rs` looks at a running attempt (hedging).
const CHECK_EVERY: Duration = Duration::from_millis(50);

fn refused(url: &str) -> ClientError {
    ClientError::new(
        url,
        ErrorKind::Refused {
            reason: "connection refused".into(),
        },
    )
}

/// A connection attempt that timed out (a host that may come back: tasks
/// wait for it).
fn timed_out(url: &str) -> ClientError {
    ClientError::new(
        url,
        ErrorKind::Refused {
            reason: "connect timed out after 1.0s".into(),
        },
    )
}

/// A prober that answers when `answers(now)` says so, recording the outcome
/// as the real probe does (a failure as `fails`); counts the probes in `probes`.
fn prober(
    answers: impl Fn(Instant) -> bool + Send + Sync + 'static,
    fails: fn(&str) -> ClientError,
    probes: &Arc<AtomicU32>,
) -> Prober {
    let probes = probes.clone();
    let answers = Arc::new(answers);
    Arc::new(move |_sched, node: Arc<Node>| -> BoxFuture<'static, bool> {
        probes.fetch_add(1, Ordering::SeqCst);
        let ok = answers(Instant::now());
        Box::pin(async move {
            if ok {
                node.state().record_probe_ok()
            } else {
                node.state().record_fault(&fails(node.url()), false);
                false
            }
        })
    })
}

/// A scheduler whose re-probes answer per `answers` (failing as a connect timeout).
fn sched_probing(
    answers: impl Fn(Instant) -> bool + Send + Sync + 'static,
) -> (Arc<Scheduler>, Arc<AtomicU32>) {
    sched_probing_with(answers, timed_out)
}

/// A scheduler whose re-probes answer per `answers`, failing with `fails`.
fn sched_probing_with(
    answers: impl Fn(Instant) -> bool + Send + Sync + 'static,
    fails: fn(&str) -> ClientError,
) -> (Arc<Scheduler>, Arc<AtomicU32>) {
    let probes = Arc::new(AtomicU32::new(0));
    let s = Scheduler::with_prober(Client::default(), prober(answers, fails, &probes));
    (s, probes)
}

/// A node cooled now by a connection attempt that timed out (backoff
/// `FIRST_BACKOFF`).
fn cooled(url: &str, host: &str) -> Arc<Node> {
    let n = node(url, host, 0);
    n.state().record_fault(&timed_out(url), false);
    assert!(n.state().cooling());
    n
}

fn task(total: Duration) -> Task<'static> {
    Task {
        label: "t",
        model: "m",
        prompt_tokens: 0,
        limits: Timeouts::generation(total),
        own_bound: false,
    }
}

#[tokio::test(start_paused = true)]
async fn a_task_with_only_cooling_hosts_gives_up_after_the_recovery_wait() {
    let (s, probes) = sched_probing(|_| false);
    let p = Pool::new(vec![cooled("http://a:1", "A")], Policy::Pool);
    let start = Instant::now();
    let r = s.acquire(&p, "m", &none(), far()).await;
    assert_eq!(r.err(), Some(NoSlot::AllCooling));
    assert_eq!(
        start.elapsed(),
        RECOVERY_WAIT,
        "gave up at the end of the wait"
    );
    // Re-probed early, as it is the only host left, but once a second at most.
    let n = probes.load(Ordering::SeqCst);
    assert!((5..=11).contains(&n), "{n} probes in {RECOVERY_WAIT:?}");
}

#[tokio::test(start_paused = true)]
async fn a_task_with_only_cooling_hosts_is_readmitted_when_a_reprobe_succeeds_sooner() {
    let start = Instant::now();
    let back_at = start + Duration::from_millis(3500);
    let (s, _) = sched_probing(move |now| now >= back_at);
    let p = Pool::new(vec![cooled("http://a:1", "A")], Policy::Pool);
    let lease = s
        .acquire(&p, "m", &none(), far())
        .await
        .expect("re-admitted");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(3500) && waited <= Duration::from_millis(4500),
        "the first probe after it came back let the task in: {waited:?}"
    );
    assert!(waited < RECOVERY_WAIT);
    assert_eq!(lease.node.host, "A");
    assert!(!lease.node.state().cooling());
}

#[tokio::test(start_paused = true)]
async fn a_cooling_node_another_host_stands_in_for_is_reprobed_only_after_its_backoff() {
    let (s, probes) = sched_probing(|_| true);
    let good = node("http://a:1", "A", 0);
    let down = cooled("http://b:1", "B");
    let p = Pool::new(vec![good, down.clone()], Policy::Pool);
    tokio::time::advance(FIRST_BACKOFF - Duration::from_millis(1)).await;
    let l = s.acquire(&p, "m", &none(), far()).await.unwrap();
    assert_eq!(l.node.host, "A");
    drop(l);
    assert_eq!(
        probes.load(Ordering::SeqCst),
        0,
        "probed before its backoff"
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    let _l = s.acquire(&p, "m", &none(), far()).await.unwrap();
    assert_eq!(
        probes.load(Ordering::SeqCst),
        1,
        "not probed once its backoff passed"
    );
    until(|| !down.state().cooling()).await;
}

#[tokio::test(start_paused = true)]
async fn a_suspect_node_is_taken_once_the_patience_runs_out() {
    let s = Scheduler::new(Client::default());
    let good = node("http://a:1", "A", 0);
    let shaky = node("http://b:1", "B", 0);
    good.state().record_success();
    shaky.state().record_fault(&refused_reset(), true);
    assert!(shaky.state().health.is_suspect());
    let p = Pool::new(vec![good, shaky], Policy::Pool);
    let busy = s.acquire(&p, "m", &none(), far()).await.unwrap();
    assert_eq!(busy.node.host, "A");
    let start = Instant::now();
    let l = s.acquire(&p, "m", &none(), far()).await.unwrap();
    assert_eq!(l.node.host, "B");
    // Nothing measured yet: the prior patience.
    assert_eq!(start.elapsed(), acquire::PRIOR_PATIENCE);
}

fn refused_reset() -> ClientError {
    ClientError::new(
        "http://b:1",
        ErrorKind::Reset {
            after_first_token: false,
            detail: String::new(),
        },
    )
}

#[tokio::test(start_paused = true)]
async fn a_freed_slot_is_handed_on_without_any_time_passing() {
    let s = Scheduler::new(Client::default());
    let p = Pool::new(vec![node("http://a:1", "A", 0)], Policy::Pool);
    let first = s.acquire(&p, "m", &none(), far()).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (s2, p2) = (s.clone(), p.clone());
    tokio::spawn(async move {
        let l = s2.acquire(&p2, "m", &none(), far()).await.unwrap();
        let _ = tx.send((Instant::now(), l));
    });
    until_depth(&s, 1).await;
    let freed = Instant::now();
    drop(first);
    let (got, _lease) = rx.recv().await.unwrap();
    // On a paused clock time moves only when every task waits for a timer:
    // a hand-over that waited for a poll or a timeout would show here.
    assert_eq!(got, freed);
}

/// Wait (on the paused clock) until `cond` holds.
async fn until(cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "never happened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Two idle hosts; the first attempt runs on A as `first` says, a hedge on B
/// answers at once. When the hedge started (from the task's start), and why.
async fn hedged(
    first: impl Fn(Attempt) -> Reply,
    ttft_ms: Option<f64>,
) -> Option<(Duration, String)> {
    let s = Scheduler::new(Client::default());
    let (a, b) = (node("http://a:1", "A", 0), node("http://b:1", "B", 1));
    for n in [&a, &b] {
        n.state().record_success();
        if let Some(ms) = ttft_ms {
            n.state().latency.record(&Sample {
                first_token_ms: Some(ms),
                ..Default::default()
            });
        }
    }
    let p = Pool::new(vec![a, b], Policy::Pool);
    let start = Instant::now();
    let hedge: Arc<Mutex<Option<(Duration, String)>>> = Arc::default();
    let seen = hedge.clone();
    let r = s
        .run(
            &p,
            &task(Duration::from_secs(600)),
            |at: Attempt| -> Reply {
                match &at.kind {
                    AttemptKind::Hedge { why } => {
                        *seen.lock().unwrap() = Some((start.elapsed(), why.clone()));
                        Box::pin(async { Ok(((), Measured::default())) })
                    }
                    _ => first(at),
                }
            },
            &|_| {},
        )
        .await;
    let (_, attribution) = r.expect("the task answers");
    let h = hedge.lock().unwrap().clone();
    assert_eq!(attribution.hedged, h.is_some());
    h
}

/// An attempt that never produces a token.
fn silent(_: Attempt) -> Reply {
    Box::pin(async {
        std::future::pending::<()>().await;
        unreachable!()
    })
}

#[tokio::test(start_paused = true)]
async fn no_first_token_after_three_usual_times_starts_a_hedge() {
    // Nothing measured: the usual first token is the 1 s prior, so 3 s.
    let (at, why) = hedged(silent, None).await.expect("a hedge");
    assert!(
        at > Duration::from_secs(3) && at <= Duration::from_secs(3) + CHECK_EVERY,
        "hedged after {at:?}"
    );
    assert!(why.starts_with("no first token after"), "{why}");
    // A fast cluster (50 ms to the first token): never sooner than the floor.
    let (at, _) = hedged(silent, Some(50.0)).await.expect("a hedge");
    assert!(
        at > HEDGE_FLOOR && at <= HEDGE_FLOOR + CHECK_EVERY,
        "hedged after {at:?}"
    );
}

/// An attempt that streams: a first piece after 100 ms, then one every `gap`,
/// `pieces` in all, then answers.
fn streaming(gap: Duration, pieces: u32) -> impl Fn(Attempt) -> Reply {
    move |at: Attempt| -> Reply {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            for i in 0..pieces {
                if i > 0 {
                    tokio::time::sleep(gap).await;
                }
                at.progress.piece("x");
            }
            Ok(((), Measured::default()))
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_stream_is_hedged_and_a_fast_one_is_not() {
    // One token a second where a fresh start elsewhere takes about 51 s for
    // the whole reply: hedged once five pieces show the rate (at 4.1 s).
    let (at, why) = hedged(streaming(Duration::from_secs(1), 1000), None)
        .await
        .expect("a hedge");
    let fifth = Duration::from_millis(4100);
    assert!(
        at >= fifth && at <= fifth + CHECK_EVERY,
        "hedged after {at:?}"
    );
    assert!(why.starts_with("streaming at 1.2 tokens/s"), "{why}");
    // A hundred tokens a second finishes long before a fresh start would.
    assert_eq!(
        hedged(streaming(Duration::from_millis(10), 300), None).await,
        None
    );
}

#[tokio::test(start_paused = true)]
async fn a_task_whose_hosts_all_refuse_fails_at_once_and_one_that_may_come_back_is_waited_for() {
    let total = Duration::from_secs(30);
    let run = |nodes: Vec<Arc<Node>>, fails: fn(&str) -> ClientError| async move {
        let (s, _) = sched_probing_with(|_| false, fails);
        let p = Pool::new(nodes, Policy::Pool);
        let start = Instant::now();
        let r = s
            .run(
                &p,
                &task(total),
                |at: Attempt| {
                    let url = at.node.url().to_string();
                    async move { Err::<((), Measured), _>(fails(&url)) }
                },
                &|_| {},
            )
            .await;
        (r.err().map(|e| e.stopped), start.elapsed())
    };
    let two = || vec![node("http://a:1", "A", 0), node("http://b:1", "B", 0)];
    let one = || vec![node("http://a:1", "A", 0)];
    // Nothing listens anywhere: the task fails at once, saying so (one host
    // or several: no waiting for a refusing node to come back).
    assert_eq!(
        run(two(), refused).await,
        (Some(NoSlot::NothingAnswers), Duration::ZERO)
    );
    assert_eq!(
        run(one(), refused).await,
        (Some(NoSlot::NothingAnswers), Duration::ZERO)
    );
    // Each host timed out: every host failed the task, which fails at once.
    assert_eq!(
        run(two(), timed_out).await,
        (Some(NoSlot::NoUsableHost), Duration::ZERO)
    );
    // One host that timed out, and cools down: the task waits for it to
    // come back, then gives up.
    let (stopped, after) = run(one(), timed_out).await;
    assert_eq!(stopped, Some(NoSlot::AllCooling));
    assert_eq!(after, RECOVERY_WAIT);
    assert!(after < total);
}

/// On a paused clock: a suspect node alone, with nothing measured, gets the
/// short first-token deadline of probation (3 × the 1 s prior), not one
/// with the prior's 30 s to load the model; its request fails then.
#[tokio::test(start_paused = true)]
async fn a_suspect_node_gets_the_short_first_token_deadline() {
    let (s, _) = sched_probing(|_| false);
    let n = node("http://a:1", "A", 0);
    n.state().record_fault(
        &ClientError::new(n.url(), ErrorKind::NoFirstToken { secs: 40.0 }),
        true,
    );
    assert!(n.state().health.is_suspect());
    let p = Pool::new(vec![n.clone()], Policy::Pool);
    let start = Instant::now();
    let deadline = Mutex::new(None);
    let t = Task {
        limits: Timeouts::new(
            Duration::from_secs(3),
            Duration::from_secs(120),
            Duration::from_secs(600),
        ),
        ..task(Duration::from_secs(600))
    };
    let r = s
        .run(
            &p,
            &t,
            |at: Attempt| {
                let first = at.timeouts.first_token;
                deadline.lock().unwrap().get_or_insert(first);
                let url = at.node.url().to_string();
                async move {
                    // A hung node: nothing until the deadline.
                    tokio::time::sleep(first).await;
                    Err::<((), Measured), _>(ClientError::new(
                        url,
                        ErrorKind::NoFirstToken {
                            secs: first.as_secs_f64(),
                        },
                    ))
                }
            },
            &|_| {},
        )
        .await;
    assert!(r.is_err());
    assert_eq!(*deadline.lock().unwrap(), Some(Duration::from_secs(3)));
    // The first attempt failed 3 s in (then the node cooled down).
    assert!(start.elapsed() >= Duration::from_secs(3));
    assert!(n.state().cooling());
}

fn http500(url: &str) -> ClientError {
    ClientError::new(
        url,
        ErrorKind::Http {
            status: 500,
            message: "llama runner process has terminated".into(),
        },
    )
}

/// Run a task for `model` whose attempts answer as `answer` says (by node
/// host); the hosts tried, in order, and the outcome.
async fn tried(
    s: &Arc<Scheduler>,
    p: &Pool,
    model: &'static str,
    answer: impl Fn(&str) -> Result<(), ClientError>,
) -> (Vec<String>, Result<Attribution, TaskFailed>) {
    let hosts = Mutex::new(Vec::new());
    let t = Task {
        model,
        ..task(Duration::from_secs(60))
    };
    let r = s
        .run(
            p,
            &t,
            |at: Attempt| {
                hosts.lock().unwrap().push(at.node.host.clone());
                let r = answer(&at.node.host).map(|()| ((), Measured::default()));
                async move { r }
            },
            &|_| {},
        )
        .await;
    (hosts.into_inner().unwrap(), r.map(|(_, a)| a))
}

/// On a paused clock: the same error for one model from two hosts blames
/// the request, not the hosts, and no time passes; the next task for that
/// model stops at its first attempt with the real reason, while another
/// model uses every host.
#[tokio::test(start_paused = true)]
async fn a_model_broken_on_every_host_fails_fast_and_leaves_the_hosts_healthy() {
    let (s, _) = sched_probing(|_| false);
    let (a, b) = (node("http://a:1", "A", 0), node("http://b:1", "B", 1));
    for n in [&a, &b] {
        n.state().record_success();
    }
    let p = Pool::new(vec![a.clone(), b.clone()], Policy::Pool);
    let start = Instant::now();
    let broken = |h: &str| Err(http500(h));
    let (hosts, r) = tried(&s, &p, "qwen", broken).await;
    assert_eq!(hosts, ["A", "B"]);
    let f = r.unwrap_err();
    assert_eq!(f.stopped, NoSlot::SameError { hosts: 2 });
    assert!(f
        .to_string()
        .contains("llama runner process has terminated"));
    for n in [&a, &b] {
        assert_eq!(n.state().health.word(), "healthy", "{}", n.host);
    }
    // The next request for the model: one attempt, the same error, no wait.
    let (hosts, r) = tried(&s, &p, "qwen:latest", broken).await;
    assert_eq!(hosts, ["A"]);
    assert_eq!(r.unwrap_err().stopped, NoSlot::ModelBroken { hosts: 2 });
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(a.state().health.word(), "healthy");
    // Another model takes both hosts at once.
    let l1 = s.acquire(&p, "llama3.2", &none(), far()).await.unwrap();
    let l2 = s.acquire(&p, "llama3.2", &none(), far()).await.unwrap();
    assert_ne!(l1.node.host, l2.node.host);
    drop((l1, l2));
    // Once a request for the model answers, it is tried everywhere again.
    let (_, r) = tried(&s, &p, "qwen", |_| Ok(())).await;
    assert!(r.is_ok());
    let (hosts, _) = tried(&s, &p, "qwen", broken).await;
    assert_eq!(hosts, ["A", "B"]);
}

/// An HTTP error another host then answers is the failing node's: it is
/// blamed when the task succeeds (and not before).
#[tokio::test(start_paused = true)]
async fn an_error_another_host_answers_is_the_nodes() {
    let (s, _) = sched_probing(|_| false);
    let (a, b) = (node("http://a:1", "A", 0), node("http://b:1", "B", 1));
    for n in [&a, &b] {
        n.state().record_success();
    }
    let p = Pool::new(vec![a.clone(), b.clone()], Policy::Pool);
    let (hosts, r) = tried(
        &s,
        &p,
        "m",
        |h| {
            if h == "A" {
                Err(http500(h))
            } else {
                Ok(())
            }
        },
    )
    .await;
    assert_eq!(hosts, ["A", "B"]);
    assert_eq!(r.unwrap().host, "B");
    assert!(a.state().health.is_suspect());
    assert_eq!(b.state().health.word(), "healthy");
}
