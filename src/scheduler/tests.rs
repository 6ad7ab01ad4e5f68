//! The scheduler's rules, on the real clock where time does not matter
//! (`timing_tests.rs` has those where it does, on a paused clock).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::line::WaitState;
use super::*;
use crate::config::nodes_file::NodeEntry;

pub(super) fn node(url: &str, host: &str, priority: i64) -> Arc<Node> {
    Arc::new(Node::new(
        NodeEntry {
            url: url.into(),
            name: url.into(),
            priority,
            host_id: Some(host.into()),
            extra: Default::default(),
        },
        false,
    ))
}

pub(super) fn far() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

pub(super) fn none() -> HashSet<String> {
    HashSet::new()
}

#[tokio::test]
async fn one_request_per_host() {
    let a1 = node("http://a:1", "A", 0);
    let a2 = node("http://a:2", "A", 0);
    let b = node("http://b:1", "B", 5);
    let s = Scheduler::new(Client::default());
    let p = Pool::new(vec![a1, a2, b], Policy::Pool);
    let l1 = s.acquire(&p, "m", &none(), far()).await.unwrap();
    let l2 = s.acquire(&p, "m", &none(), far()).await.unwrap();
    assert_ne!(l1.node.host, l2.node.host);
    assert!(matches!(
        s.try_take(&p, "m", &none(), true),
        WaitState::Waiting
    ));
    drop(l1);
    let l3 = s.acquire(&p, "m", &none(), far()).await.unwrap();
    assert_eq!(l3.node.host, "A");
}

#[tokio::test]
async fn prefers_the_model_then_priority_and_avoids_excluded_hosts() {
    let a = node("http://a:1", "A", 0);
    let b = node("http://b:1", "B", 1);
    a.state().models = vec!["other:latest".into()];
    b.state().models = vec!["m:latest".into()];
    let s = Scheduler::new(Client::default());
    let p = Pool::new(vec![a.clone(), b.clone()], Policy::Pool);
    assert_eq!(
        s.acquire(&p, "m", &none(), far()).await.unwrap().node.host,
        "B"
    );
    let no_b: HashSet<String> = ["B".to_string()].into();
    assert_eq!(
        s.acquire(&p, "m", &no_b, far()).await.unwrap().node.host,
        "A"
    );
    let single = Pool::new(vec![a, b], Policy::Single);
    assert_eq!(single.nodes().len(), 1);
    assert_eq!(single.nodes()[0].host, "A");
}

#[tokio::test]
async fn capacity_raises_the_limit() {
    let s = Scheduler::new(Client::default());
    s.set_capacities(2, HashMap::new());
    let p = Pool::new(vec![node("http://a:1", "A", 0)], Policy::Pool);
    let _x = s.acquire(&p, "m", &none(), far()).await.unwrap();
    let _y = s.acquire(&p, "m", &none(), far()).await.unwrap();
    assert!(matches!(
        s.try_take(&p, "m", &none(), true),
        WaitState::Waiting
    ));
}

#[tokio::test]
async fn a_suspect_node_waits_behind_a_busy_healthy_one_until_patience_runs_out() {
    let good = node("http://a:1", "A", 0);
    let shaky = node("http://b:1", "B", 0);
    good.state().record_success();
    shaky.state().record_fault(
        &crate::ollama::ClientError::new(
            "http://b:1",
            crate::ollama::ErrorKind::Http {
                status: 500,
                message: "x".into(),
            },
        ),
        true,
    );
    let s = Scheduler::new(Client::default());
    let p = Pool::new(vec![good.clone(), shaky], Policy::Pool);
    let l = s.acquire(&p, "m", &none(), far()).await.unwrap();
    assert_eq!(l.node.host, "A");
    assert!(matches!(
        s.try_take(&p, "m", &none(), false),
        WaitState::Waiting
    ));
    assert!(matches!(s.try_take(&p, "m", &none(), true), WaitState::Granted(n) if n.host == "B"));
}

#[tokio::test]
async fn a_node_whose_models_are_unknown_is_not_left_out() {
    let known = node("http://a:1", "A", 5);
    let unknown = node("http://b:1", "B", 0);
    let lacking = node("http://c:1", "C", 0);
    known.state().models = vec!["m:latest".into()];
    lacking.state().models = vec!["other:latest".into()];
    let p = Pool::new(vec![known, unknown, lacking], Policy::Pool);
    let hosts: Vec<String> = p
        .candidates("m", &none())
        .iter()
        .map(|n| n.host.clone())
        .collect();
    assert_eq!(hosts, ["A", "B"]);
}

#[tokio::test]
async fn a_request_too_large_is_retried_only_where_the_context_is_larger() {
    use crate::nodes::context::ModelContext;
    use crate::ollama::types::model_key;
    use crate::ollama::{ClientError, ErrorKind, Timeouts};
    let with_context = |url: &str, host: &str, priority: i64, ctx: Option<u64>| {
        let n = node(url, host, priority);
        if let Some(c) = ctx {
            n.state().contexts.insert(
                model_key("m"),
                ModelContext {
                    loaded: Some(c),
                    ..Default::default()
                },
            );
        }
        n
    };
    let task = Task {
        label: "synthesis",
        model: "m",
        prompt_tokens: 10,
        limits: Timeouts::generation(Duration::from_secs(5)),
        own_bound: false,
    };
    // Every node refuses but C, which has the larger context.
    let run = |nodes: Vec<Arc<Node>>| async move {
        let s = Scheduler::new(Client::default());
        let pool = Pool::new(nodes, Policy::Pool);
        let tried = Mutex::new(Vec::new());
        let r = s
            .run(
                &pool,
                &task,
                |a: Attempt| {
                    tried.lock().unwrap().push(a.node.host.clone());
                    let url = a.node.url().to_string();
                    let host = a.node.host.clone();
                    async move {
                        if host == "C" {
                            Ok(((), Measured::default()))
                        } else {
                            Err(ClientError::new(
                                url,
                                ErrorKind::TooLarge {
                                    message: "request (1794 tokens) exceeds the available context size (1024 tokens)".into(),
                                },
                            ))
                        }
                    }
                },
                &|_| {},
            )
            .await;
        let tried = tried.into_inner().unwrap();
        (r.is_ok(), tried)
    };
    let a = || with_context("http://a:1", "A", 0, Some(1024));
    let b = || with_context("http://b:1", "B", 1, Some(1024));
    let c = || with_context("http://c:1", "C", 2, Some(4096));
    assert_eq!(
        run(vec![a(), b(), c()]).await,
        (true, vec!["A".into(), "C".into()])
    );
    assert_eq!(
        run(vec![a(), b()]).await,
        (false, vec!["A".into()]),
        "same context: not retried"
    );
    let unknown = with_context("http://a:1", "A", 0, None);
    assert_eq!(
        run(vec![unknown, c()]).await,
        (false, vec!["A".into()]),
        "nothing known about the refusing node: not retried"
    );
}

#[tokio::test]
async fn every_host_excluded_means_nobody() {
    let s = Scheduler::new(Client::default());
    let p = Pool::new(vec![node("http://a:1", "A", 0)], Policy::Pool);
    let no_a: HashSet<String> = ["A".to_string()].into();
    assert_eq!(
        s.acquire(&p, "m", &no_a, far()).await.err(),
        Some(NoSlot::NoUsableHost)
    );
}

/// Wait until `n` tasks are in line.
pub(super) async fn until_depth(s: &Arc<Scheduler>, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.queue_depth() != n {
        assert!(
            Instant::now() < deadline,
            "queue depth {} != {n}",
            s.queue_depth()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Start waiters for `clients` in this order (each in line before the
/// next); each sends its name when it gets the slot and holds it until told.
async fn line_up(
    s: &Arc<Scheduler>,
    p: &Pool,
    clients: &[(&'static str, Option<&'static str>)],
) -> (
    tokio::sync::mpsc::UnboundedReceiver<(&'static str, Lease)>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut handles = Vec::new();
    for (i, (name, client)) in clients.iter().enumerate() {
        let (s2, tx) = (s.clone(), tx.clone());
        let p = p.clone().for_client(client.map(Arc::from));
        let name = *name;
        handles.push(tokio::spawn(async move {
            let l = s2.acquire(&p, "m", &none(), far()).await.unwrap();
            let _ = tx.send((name, l));
        }));
        until_depth(s, i + 1).await;
    }
    (rx, handles)
}

#[tokio::test]
async fn a_freed_slot_goes_to_the_task_that_waited_longest() {
    let s = Scheduler::new(Client::default());
    let p = Pool::new(vec![node("http://a:1", "A", 0)], Policy::Pool);
    let first = s.acquire(&p, "m", &none(), far()).await.unwrap();
    let (mut rx, _h) = line_up(&s, &p, &[("w1", None), ("w2", None), ("w3", None)]).await;
    drop(first);
    let mut order = Vec::new();
    for _ in 0..3 {
        let (name, lease) = rx.recv().await.unwrap();
        order.push(name);
        assert_eq!(s.in_flight("A"), 1, "one at a time");
        drop(lease);
    }
    assert_eq!(order, ["w1", "w2", "w3"]);
    assert_eq!(s.queue_depth(), 0);
    assert_eq!(s.in_flight("A"), 0);
}

#[tokio::test]
async fn a_waiting_task_of_higher_priority_takes_the_freed_slot_first() {
    let s = Scheduler::new(Client::default());
    let p = Pool::new(vec![node("http://a:1", "A", 0)], Policy::Pool);
    let first = s.acquire(&p, "m", &none(), far()).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for (i, (name, priority)) in [("low", 5), ("high", 9), ("mid", 7)]
        .into_iter()
        .enumerate()
    {
        let (s2, tx) = (s.clone(), tx.clone());
        let p = p.clone().with_priority(priority);
        tokio::spawn(async move {
            let l = s2.acquire(&p, "m", &none(), far()).await.unwrap();
            let _ = tx.send((name, l));
        });
        until_depth(&s, i + 1).await;
    }
    drop(first);
    let mut order = Vec::new();
    for _ in 0..3 {
        let (name, lease) = rx.recv().await.unwrap();
        order.push(name);
        drop(lease);
    }
    assert_eq!(order, ["high", "mid", "low"]);
}

#[tokio::test]
async fn clients_take_turns_each_in_arrival_order() {
    let s = Scheduler::new(Client::default());
    let p = Pool::new(vec![node("http://a:1", "A", 0)], Policy::Pool);
    let first = s.acquire(&p, "m", &none(), far()).await.unwrap();
    let (mut rx, _h) = line_up(
        &s,
        &p,
        &[
            ("x1", Some("key-x")),
            ("x2", Some("key-x")),
            ("x3", Some("key-x")),
            ("y1", Some("key-y")),
            ("y2", Some("key-y")),
        ],
    )
    .await;
    assert_eq!(
        s.queue_by_client(),
        vec![(Some(Arc::from("key-x")), 3), (Some(Arc::from("key-y")), 2)]
    );
    drop(first);
    let mut order = Vec::new();
    for _ in 0..5 {
        let (name, lease) = rx.recv().await.unwrap();
        order.push(name);
        drop(lease);
    }
    assert_eq!(order, ["x1", "y1", "x2", "y2", "x3"]);
}

#[tokio::test]
async fn a_full_line_turns_new_tasks_away_and_keeps_the_admitted_ones() {
    let s = Scheduler::new(Client::default());
    let p = Pool::new(vec![node("http://a:1", "A", 0)], Policy::Pool).with_queue_limit(2);
    let first = s.acquire(&p, "m", &none(), far()).await.unwrap();
    let (mut rx, _h) = line_up(&s, &p, &[("w1", None), ("w2", None)]).await;
    assert_eq!(
        s.acquire(&p, "m", &none(), far()).await.err(),
        Some(NoSlot::QueueFull)
    );
    drop(first);
    for want in ["w1", "w2"] {
        let (name, lease) = rx.recv().await.unwrap();
        assert_eq!(name, want);
        drop(lease);
    }
    // An unbounded pool (the shell's) is never turned away.
    let q = Pool::new(p.nodes().to_vec(), Policy::Pool);
    let _x = s.acquire(&q, "m", &none(), far()).await.unwrap();
    let (_rx, _h2) = line_up(&s, &q, &[("a", None), ("b", None), ("c", None)]).await;
}

#[tokio::test]
async fn a_task_that_gives_up_leaves_the_line_and_a_slot_it_was_given_goes_on() {
    let s = Scheduler::new(Client::default());
    let p = Pool::new(vec![node("http://a:1", "A", 0)], Policy::Pool);
    let first = s.acquire(&p, "m", &none(), far()).await.unwrap();
    // A waiter whose client goes away: out of the line at once.
    let gone = tokio::spawn({
        let (s, p) = (s.clone(), p.clone());
        async move { s.acquire(&p, "m", &none(), far()).await.map(|_| ()) }
    });
    until_depth(&s, 1).await;
    gone.abort();
    until_depth(&s, 0).await;
    // A waiter granted the slot but dropped before it picked it up: the
    // slot goes to the next in line.
    let (mut rx, handles) = line_up(&s, &p, &[("w1", None), ("w2", None)]).await;
    // On this single-threaded runtime w1 cannot run between the grant and
    // its cancellation, so it never picks the slot up.
    drop(first);
    assert!(matches!(
        s.slots().line.waiters[0].state,
        WaitState::Granted(_)
    ));
    handles[0].abort();
    let (name, _lease) = rx.recv().await.unwrap();
    assert_eq!(name, "w2");
    assert_eq!(s.in_flight("A"), 1);
    assert_eq!(s.queue_depth(), 0);
}

#[tokio::test]
async fn the_next_task_sees_a_failure_before_it_is_given_the_slot() {
    use crate::ollama::{ClientError, ErrorKind, Timeouts};
    let http500 = || {
        ClientError::new(
            "http://127.0.0.1:9",
            ErrorKind::Http {
                status: 500,
                message: "x".into(),
            },
        )
    };
    let s = Scheduler::new(Client::default());
    let a = node("http://127.0.0.1:9", "A", 0);
    a.state().record_fault(&http500(), true);
    let p = Pool::new(vec![a.clone()], Policy::Pool);
    let limits = Timeouts::new(
        Duration::from_millis(100),
        Duration::from_millis(300),
        Duration::from_millis(300),
    );
    let task = Task {
        label: "t",
        model: "m",
        prompt_tokens: 0,
        limits,
        own_bound: false,
    };
    let quiet = |_: String| {};
    // The first task fails a second time on the suspect node: it cools down.
    let first = s.run(
        &p,
        &task,
        |_| async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Err::<((), Measured), _>(http500())
        },
        &quiet,
    );
    // The second waits for the slot meanwhile; it must not get it on a cooling node.
    let second = async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        s.run(
            &p,
            &task,
            |at: Attempt| {
                let cooling = at.node.state().cooling();
                async move {
                    assert!(!cooling, "given a slot on a node that was cooling down");
                    Ok(((), Measured::default()))
                }
            },
            &quiet,
        )
        .await
    };
    let (r1, r2) = tokio::join!(first, second);
    assert!(r1.is_err());
    assert!(r2.is_err(), "nothing left to run on in time");
    assert!(a.state().cooling());
}
