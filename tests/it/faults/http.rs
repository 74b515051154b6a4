//! The HTTP endpoints against hostile clients: a half-sent request (headers never finished) is closed after
//! `http.header_read_timeout`, takes one of `http.max_connections` slots only until then, and never holds
//! up the stop.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use userpipe::app::Role;
use userpipe::config::Config;

use crate::support::{TestDb, TestKafka, config_for, prepare, start_app};

/// `userpipe run` with the pipeline roles in this process; its HTTP address (`127.0.0.1:<port>`).
async fn start(
    config: &Config,
) -> (
    String,
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let (base, shutdown, task) = start_app(config, &Role::PIPELINE).await;
    (base.replacen("http://", "", 1), shutdown, task)
}

/// A client that sends the start of a request and never finishes its headers.
async fn half_sent(address: &str) -> TcpStream {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: userpipe\r\nX-Slow: ")
        .await
        .expect("send half a request");
    stream
}

/// Reads until the server closes the connection; when that was.
async fn closed_at(mut stream: TcpStream) -> Instant {
    let mut buffer = [0u8; 1024];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return Instant::now(),
            Ok(_) => {}
        }
    }
}

/// One whole request on a connection of its own: the status line, and when it came.
async fn healthz(address: &str) -> (String, Instant) {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: userpipe\r\nConnection: close\r\n\r\n")
        .await
        .expect("send a request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.lines().next().unwrap_or_default().to_owned();
    (status, Instant::now())
}

async fn setup() -> (TestKafka, TestDb, Config) {
    let (kafka, db) = (TestKafka::new(), TestDb::new().await);
    let config = config_for(&kafka, &db.url());
    prepare(&config, &db.pool).await;
    (kafka, db, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_request_is_closed_after_the_header_timeout_and_holds_a_slot_only_until_then() {
    let (_kafka, _db, mut config) = setup().await;
    config.http.max_connections = 2;
    config.http.header_read_timeout = Duration::from_secs(3);
    let (address, shutdown, task) = start(&config).await;

    let first_sent = Instant::now();
    let first = half_sent(&address).await;
    let first_closed = tokio::spawn(closed_at(first));
    // One slot is still free.
    let (status, _) = tokio::time::timeout(Duration::from_secs(10), healthz(&address))
        .await
        .expect("an answer while one slot is free");
    assert_eq!(status, "HTTP/1.1 200 OK");

    // Both slots taken: the next request is answered once a slow client's time is up.
    let second = half_sent(&address).await;
    let second_closed = tokio::spawn(closed_at(second));
    let (status, answered) = tokio::time::timeout(Duration::from_secs(20), healthz(&address))
        .await
        .expect("an answer once a slot frees");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let bound = Duration::from_secs(20);
    // The first slot frees when the first client's headers are late: not before its timeout.
    assert!(
        answered >= first_sent + config.http.header_read_timeout,
        "answered while both slots were held"
    );
    for (n, closed) in [(1, first_closed), (2, second_closed)] {
        let closed = tokio::time::timeout(bound, closed)
            .await
            .unwrap_or_else(|_| panic!("half-sent request {n} is never closed"))
            .unwrap();
        assert!(closed >= first_sent + config.http.header_read_timeout);
    }

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("stops within 10 seconds")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stop_stays_bounded_with_a_slow_client_connected() {
    let (_kafka, _db, mut config) = setup().await;
    // Far longer than the stop may take: the stop must not wait for it.
    config.http.header_read_timeout = Duration::from_secs(120);
    let (address, shutdown, task) = start(&config).await;
    let (status, _) = healthz(&address).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let slow = half_sent(&address).await;
    // The server has taken the connection in: a whole request after it is answered.
    let (status, _) = healthz(&address).await;
    assert_eq!(status, "HTTP/1.1 200 OK");

    let stopping = Instant::now();
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("stops within 10 seconds with a slow client connected")
        .unwrap()
        .unwrap();
    let took = stopping.elapsed();
    // The slow client is gone with the server.
    let closed = tokio::time::timeout(Duration::from_secs(5), closed_at(slow))
        .await
        .expect("the slow client's connection is closed");
    assert!(closed - stopping <= took + Duration::from_secs(1));
}
