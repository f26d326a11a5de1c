//! Routes churn through the directory source — added, edited and deleted
//! every few milliseconds, on top of 500 routes that stay — while clients
//! send requests to a route that never changes and to every churned route
//! once it has been seen in effect. No request may fail. Only counts are
//! asserted; time bounds are generous and only catch a hang.
mod common;

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use common::*;
use http::{Method, StatusCode};

/// Routes added, edited or deleted by the test.
const OPERATIONS: usize = 240;
/// Pause between two operations.
const EVERY: Duration = Duration::from_millis(3);
/// Routes that are there from the start and never change.
const STANDING: usize = 500;

fn route(name: &str, path: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {{name: {name}, namespace: apps}}\n\
         spec:\n  parentRefs: [{{name: gw, namespace: infra}}]\n  hostnames: [{name}.example.com]\n  \
         rules:\n  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n    \
         backendRefs: [{{name: echo, port: 8080}}]\n"
    )
}

/// A churned route the clients may use: its host and its current path.
#[derive(Debug, Clone)]
struct Live {
    host: String,
    path: String,
}

/// What the clients may send to, and how many requests are in flight to
/// each route. The churn takes a route out (and waits for its requests to
/// finish) before it edits or deletes it.
#[derive(Default)]
struct Board {
    /// Confirmed in effect and not being changed: what clients use.
    live: BTreeMap<String, Live>,
    /// The path of the latest version written, per route that exists.
    wanted: BTreeMap<String, String>,
    in_flight: BTreeMap<String, usize>,
}

#[derive(Default)]
struct Counts {
    stable: AtomicUsize,
    churned: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

/// Polls until `host` + `path` is routed to the echo backend; `false` when
/// `still_wanted` says a newer version replaced it meanwhile.
async fn wait_in_effect(
    client: &TestClient,
    host: &str,
    path: &str,
    still_wanted: impl Fn() -> bool,
) -> Result<bool, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.try_send(Method::GET, host, path, &[]).await {
            if r.status == StatusCode::OK && r.backend() == "echo" {
                return Ok(true);
            }
        }
        if !still_wanted() {
            return Ok(false);
        }
        if Instant::now() > deadline {
            return Err(format!("{host}{path} not in effect after 60 s"));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Takes a route off the board, then waits until no request to it is in
/// flight: from then on it may change without failing anyone.
async fn take_out(board: &Mutex<Board>, name: &str) {
    {
        let mut b = board.lock().unwrap();
        b.live.remove(name);
        b.wanted.remove(name);
    }
    while board
        .lock()
        .unwrap()
        .in_flight
        .get(name)
        .copied()
        .unwrap_or(0)
        > 0
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_churning_under_load_fail_no_request() {
    let echo = echo_backend("echo").await;
    let port = free_port();
    let dir = config_dir();
    let mut standing = String::new();
    for i in 0..STANDING {
        standing.push_str("---\n");
        standing.push_str(&route(&format!("standing-{i}"), "/"));
    }
    write_config(
        &dir,
        "base.yaml",
        &format!(
            "{}{}---\n{}",
            gateway_yaml(port),
            service_yaml("apps", "echo", echo),
            route("stable", "/")
        ),
    );
    write_config(&dir, "standing.yaml", &standing);
    let app = start(&dir).await;
    let client = TestClient::new(port);
    assert_eq!(
        client.get("stable.example.com", "/").await.backend(),
        "echo"
    );

    let board = Arc::new(Mutex::new(Board::default()));
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for worker in 0..4usize {
        let (client, board, counts, stop) =
            (client.clone(), board.clone(), counts.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut n = worker;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                // Every other request to the route that never changes, the
                // rest to a churned route in effect (taken out of the board
                // under the lock, so it cannot be edited meanwhile).
                let target = (n % 2 == 1)
                    .then(|| {
                        let mut b = board.lock().unwrap();
                        let (name, live) = b.live.iter().nth(n / 2 % b.live.len().max(1))?;
                        let (name, live) = (name.clone(), live.clone());
                        *b.in_flight.entry(name.clone()).or_default() += 1;
                        Some((name, live))
                    })
                    .flatten();
                let (host, path) = match &target {
                    Some((_, l)) => (l.host.clone(), l.path.clone()),
                    None => ("stable.example.com".to_owned(), "/".to_owned()),
                };
                let result = client.try_send(Method::GET, &host, &path, &[]).await;
                if let Some((name, _)) = &target {
                    *board.lock().unwrap().in_flight.get_mut(name).unwrap() -= 1;
                }
                match result {
                    Ok(r) if r.status == StatusCode::OK && r.backend() == "echo" => {
                        let c = if target.is_some() {
                            &counts.churned
                        } else {
                            &counts.stable
                        };
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => counts
                        .failures
                        .lock()
                        .unwrap()
                        .push(format!("{host}{path}: {} {}", r.status, r.body)),
                    Err(e) => counts
                        .failures
                        .lock()
                        .unwrap()
                        .push(format!("{host}{path}: {e}")),
                }
            }
        }));
    }

    // The churn: add, edit (path changes) and delete, one route per file.
    // Adds and edits wait for nothing; a confirmer puts each version on the
    // board once the gateway serves it.
    let (pending_tx, mut pending_rx) = tokio::sync::mpsc::unbounded_channel::<(String, Live)>();
    let confirmer = {
        let (client, board) = (client.clone(), board.clone());
        tokio::spawn(async move {
            let mut confirmed = 0usize;
            while let Some((name, live)) = pending_rx.recv().await {
                let wanted = || board.lock().unwrap().wanted.get(&name) == Some(&live.path);
                if !wait_in_effect(&client, &live.host, &live.path, wanted).await? {
                    continue;
                }
                let mut b = board.lock().unwrap();
                // Still the latest version: not edited or deleted meanwhile.
                if b.wanted.get(&name) == Some(&live.path) {
                    b.live.insert(name, live);
                    confirmed += 1;
                }
            }
            Ok::<usize, String>(confirmed)
        })
    };
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    // Versions of each churned route (by name) that exist as files.
    let mut files: BTreeMap<String, usize> = BTreeMap::new();
    let (mut added, mut edited, mut deleted) = (0, 0, 0);
    let mut serial = 0;
    for _ in 0..OPERATIONS {
        let op = next() % 10;
        let existing: Vec<String> = files.keys().cloned().collect();
        if op < 4 || existing.len() < 5 {
            serial += 1;
            let name = format!("churn-{serial}");
            let live = Live {
                host: format!("{name}.example.com"),
                path: "/v1".into(),
            };
            board
                .lock()
                .unwrap()
                .wanted
                .insert(name.clone(), live.path.clone());
            write_config(&dir, &format!("{name}.yaml"), &route(&name, &live.path));
            files.insert(name.clone(), 1);
            pending_tx.send((name, live)).unwrap();
            added += 1;
        } else if op < 8 {
            let name = existing[next() as usize % existing.len()].clone();
            take_out(&board, &name).await;
            let version = files[&name] + 1;
            files.insert(name.clone(), version);
            let live = Live {
                host: format!("{name}.example.com"),
                path: format!("/v{version}"),
            };
            board
                .lock()
                .unwrap()
                .wanted
                .insert(name.clone(), live.path.clone());
            let text = route(&name, &live.path);
            if version.is_multiple_of(3) {
                // In place, as an editor without atomic saves writes.
                std::fs::write(dir.join(format!("{name}.yaml")), text).unwrap();
            } else {
                write_config(&dir, &format!("{name}.yaml"), &text);
            }
            pending_tx.send((name, live)).unwrap();
            edited += 1;
        } else {
            let name = existing[next() as usize % existing.len()].clone();
            take_out(&board, &name).await;
            files.remove(&name);
            std::fs::remove_file(dir.join(format!("{name}.yaml"))).unwrap();
            deleted += 1;
        }
        tokio::time::sleep(EVERY).await;
    }
    drop(pending_tx);
    let confirmed = confirmer
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("a change never took effect: {e}"));
    // Let the clients run on the final state for a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }

    let failures = std::mem::take(&mut *counts.failures.lock().unwrap());
    assert!(
        failures.is_empty(),
        "{} failed requests, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let (stable, churned) = (
        counts.stable.load(Ordering::Relaxed),
        counts.churned.load(Ordering::Relaxed),
    );
    assert!(
        added > 0 && edited > 0 && deleted > 0,
        "{added} {edited} {deleted}"
    );
    // Every add and edit was seen in effect, apart from versions taken out
    // before they were confirmed.
    assert!(confirmed > 0 && confirmed <= added + edited);
    assert!(stable > 100, "only {stable} requests to the stable route");
    assert!(churned > 100, "only {churned} requests to churned routes");
    // The final state is what the files say: deleted routes are gone,
    // remaining ones answer on their last path.
    for (name, version) in &files {
        let host = format!("{name}.example.com");
        let path = format!("/v{version}");
        assert!(wait_in_effect(&client, &host, &path, || true)
            .await
            .unwrap());
    }
    let gone = (1..=serial)
        .map(|i| format!("churn-{i}"))
        .find(|n| !files.contains_key(n))
        .expect("something was deleted");
    let r = client.get(&format!("{gone}.example.com"), "/v1").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{gone} was deleted");
    eprintln!(
        "churn: {added} added, {edited} edited, {deleted} deleted, {confirmed} versions confirmed; \
         {stable} requests to the stable route and {churned} to churned routes, none failed"
    );
    app.shutdown().await;
}
