//! Connection hygiene, end to end over raw TCP on 127.0.0.1: a client trickling its headers is
//! cut off, one trickling its body gets 408, connections past the cap get 503 at once, and
//! made-up methods share one metric label.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sidrec_server::conn::ConnLimits;
use sidrec_server::{app, AppState, HttpLimits, LoadedCatalogue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A catalogue server on a free port with these limits; returns its address and state.
async fn start(conn: ConnLimits, http: HttpLimits) -> (std::net::SocketAddr, AppState) {
    let dir = tempfile::tempdir().unwrap();
    write_fixture(dir.path());
    let state = AppState::with_catalogue(LoadedCatalogue::load(dir.path()).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app(state.clone(), http);
    let conn = ConnLimits {
        metrics: Some(state.metrics().clone()),
        ..conn
    };
    tokio::spawn(sidrec_server::conn::serve(
        listener,
        router,
        conn,
        std::future::pending(),
    ));
    (addr, state)
}

/// Everything the server sends until it closes the connection (or `limit` passes).
async fn read_all(stream: &mut TcpStream, limit: Duration) -> String {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn slow_headers_are_cut_off_and_slow_bodies_get_408() {
    let conn = ConnLimits {
        header_read_timeout: Duration::from_millis(300),
        ..ConnLimits::default()
    };
    let http = HttpLimits {
        body_read_timeout: Duration::from_millis(300),
        ..HttpLimits::default()
    };
    let (addr, _) = start(conn, http).await;

    // Headers at one byte per 100 ms: closed after the header timeout, with no answer.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let t = Instant::now();
    let mut closed = false;
    for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\n".iter() {
        if s.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        let mut probe = [0u8; 1];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(100), s.read(&mut probe)).await
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "a trickling client kept its connection");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "closed only after {:?}",
        t.elapsed()
    );

    // A body announced but never sent: 408 in the error shape.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n\
          content-length: 100\r\n\r\n{\"user_id\"",
    )
    .await
    .unwrap();
    let answer = read_all(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");

    // An idle kept-alive connection is closed too.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let t = Instant::now();
    let answer = read_all(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

#[tokio::test]
async fn connections_past_the_cap_get_503_at_once() {
    let conn = ConnLimits {
        header_read_timeout: Duration::from_secs(30),
        max_connections: 4,
        ..ConnLimits::default()
    };
    let (addr, state) = start(conn, HttpLimits::default()).await;
    // Four idle connections hold every slot.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET").await.unwrap();
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let t = Instant::now();
    let answer = read_all(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap();
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    check_schema("ErrorBody", &v);
    assert_eq!(code(&v), "overloaded");
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(state.metrics().connections_refused.get(), 1);
    // A slot freed is a slot usable.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = client()
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn made_up_methods_share_one_metric_label() {
    let (addr, _) = start(ConnLimits::default(), HttpLimits::default()).await;
    let http = client();
    for m in ["ZZPROBE", "FOO", "BAR", "QUUX"] {
        let method = reqwest::Method::from_bytes(m.as_bytes()).unwrap();
        let r = http
            .request(method, format!("http://{addr}/v1/recommend"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405);
    }
    let text = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !text.contains("ZZPROBE") && !text.contains("QUUX"),
        "{text}"
    );
    assert!(
        text.contains(
            r#"sidrec_http_requests_total{method="other",route="/v1/recommend",status="405"} 4"#
        ),
        "{text}"
    );
}
