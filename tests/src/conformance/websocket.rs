//! WebSocket cases (`websocket:` in a case file): dial the Gateway with an
//! RFC 6455 handshake, send each message of `exchange` and expect it echoed
//! back unchanged, as upstream's `HTTPRouteBackendProtocolWebSocket` does with
//! `golang.org/x/net/websocket`; 3 passing attempts in a row, like
//! upstream's `AwaitConvergence`.
use std::time::{Duration, Instant};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::{client::Outgoing, runner::CONSECUTIVE_SUCCESSES};
use crate::ws::{self, Message};

/// What a `websocket:` case asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    pub path: String,
    pub origin: String,
    pub messages: Vec<Message>,
}

/// Parses `{url, origin, exchange: [{text: ...} | {binary: [bytes]}]}`.
pub fn parse(v: &serde_yaml::Value) -> Result<Exchange, String> {
    let url = v
        .get("url")
        .and_then(|u| u.as_str())
        .ok_or("websocket case without url")?;
    let after_scheme = url.split_once("://").map_or(url, |(_, r)| r);
    let path = after_scheme
        .find('/')
        .map_or("/", |i| &after_scheme[i..])
        .to_owned();
    let origin = v
        .get("origin")
        .and_then(|o| o.as_str())
        .unwrap_or("ws://gateway/")
        .to_owned();
    let mut messages = Vec::new();
    for m in v
        .get("exchange")
        .and_then(|e| e.as_sequence())
        .ok_or("websocket case without exchange")?
    {
        if let Some(t) = m.get("text").and_then(|t| t.as_str()) {
            messages.push(Message {
                opcode: ws::TEXT,
                payload: t.as_bytes().to_vec(),
            });
        } else if let Some(b) = m.get("binary").and_then(|b| b.as_sequence()) {
            let payload = b
                .iter()
                .map(|x| x.as_u64().and_then(|n| u8::try_from(n).ok()))
                .collect::<Option<Vec<u8>>>()
                .ok_or("binary message with a value that is not a byte")?;
            messages.push(Message {
                opcode: ws::BINARY,
                payload,
            });
        } else {
            return Err(format!(
                "websocket message {m:?} is neither text nor binary"
            ));
        }
    }
    Ok(Exchange {
        path,
        origin,
        messages,
    })
}

/// Repeats [`attempt`] until it passes 3 times in a row (a failure resets the
/// count and waits 1 s), for at most `max`.
pub async fn converge(
    case: &serde_yaml::Value,
    out: &Outgoing,
    max: Duration,
) -> Result<(), String> {
    let exchange = parse(case)?;
    let deadline = Instant::now() + max;
    let mut ok = 0;
    loop {
        let result = tokio::time::timeout(Duration::from_secs(10), attempt(&exchange, out))
            .await
            .unwrap_or_else(|_| Err("websocket exchange timed out".into()));
        match result {
            Ok(()) => {
                ok += 1;
                if ok >= CONSECUTIVE_SUCCESSES {
                    return Ok(());
                }
            }
            Err(e) => {
                ok = 0;
                if Instant::now() >= deadline {
                    return Err(e);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// One dial, handshake and exchange.
pub async fn attempt(exchange: &Exchange, out: &Outgoing) -> Result<(), String> {
    let mut stream = TcpStream::connect(out.dial)
        .await
        .map_err(|e| format!("dial {}: {e}", out.dial))?;
    let key = ws::base64(&random_bytes::<16>());
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nOrigin: {}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        exchange.path, out.host, exchange.origin
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending the handshake: {e}"))?;
    let head = read_head(&mut stream).await?;
    check_handshake(&head, &key)?;
    for m in &exchange.messages {
        ws::write_frame(&mut stream, m.opcode, &m.payload, Some(random_bytes::<4>()))
            .await
            .map_err(|e| format!("sending a frame: {e}"))?;
        let reply = ws::read_message(&mut stream)
            .await
            .map_err(|e| format!("receiving the echo: {e}"))?;
        if &reply != m {
            return Err(format!("sent {m:?}, got back {reply:?}"));
        }
    }
    let _ = ws::write_frame(&mut stream, ws::CLOSE, &[], Some(random_bytes::<4>())).await;
    Ok(())
}

/// The response head, up to the empty line (bounded: 16 KiB). Reads byte by
/// byte so that no frame data after the head is consumed.
async fn read_head(stream: &mut TcpStream) -> Result<String, String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Err("handshake response head too long".into());
        }
        let b = stream
            .read_u8()
            .await
            .map_err(|e| format!("reading the handshake response: {e}"))?;
        head.push(b);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// 101, `Upgrade: websocket`, and the accept key of our key (RFC 6455 §4.1).
pub fn check_handshake(head: &str, key: &str) -> Result<(), String> {
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("101") {
        return Err(format!("handshake answered {status:?}"));
    }
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|l| {
            l.split_once(':')
                .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_owned())
        })
    };
    if !header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
        return Err("handshake response without Upgrade: websocket".into());
    }
    let want = ws::accept_key(key);
    match header("sec-websocket-accept") {
        Some(v) if v == want => Ok(()),
        other => Err(format!("Sec-WebSocket-Accept {other:?}, expected {want:?}")),
    }
}

/// Key and mask bytes: RFC 6455 asks for unpredictable values.
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .expect("the system random source works");
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_transcribed_case() {
        let v: serde_yaml::Value = serde_yaml::from_str(
            "url: ws://<gateway-address>/ws\norigin: ws://gateway/x\n\
             exchange:\n- text: Websocket Support!\n- binary: [1, 2, 3]\n",
        )
        .unwrap();
        let e = parse(&v).unwrap();
        assert_eq!(e.path, "/ws");
        assert_eq!(e.origin, "ws://gateway/x");
        assert_eq!(e.messages[0].payload, b"Websocket Support!");
        assert_eq!(e.messages[1].opcode, ws::BINARY);
        assert_eq!(e.messages[1].payload, vec![1, 2, 3]);
        let bad: serde_yaml::Value =
            serde_yaml::from_str("url: ws://a/ws\nexchange:\n- binary: [300]\n").unwrap();
        assert!(parse(&bad).is_err());
    }

    #[tokio::test]
    async fn exchange_with_the_echo_backend() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let id = crate::echo::Identity {
            pod: "ws-5c9d7f8b4-conf0".into(),
            namespace: "ns".into(),
        };
        let server = tokio::spawn(crate::echo::serve_with(listener, id, None, true));
        let out = Outgoing {
            dial: addr,
            method: "GET".into(),
            host: addr.to_string(),
            path: "/ws".into(),
            headers: Default::default(),
            h2c: false,
            tls: None,
        };
        let exchange = Exchange {
            path: "/ws".into(),
            origin: "ws://gateway/test".into(),
            messages: vec![
                Message {
                    opcode: ws::TEXT,
                    payload: b"Websocket Support!".to_vec(),
                },
                Message {
                    opcode: ws::BINARY,
                    payload: (0..=255).collect(),
                },
            ],
        };
        let result = attempt(&exchange, &out).await;
        // Any other path is a plain echo: 200, so no WebSocket.
        let plain = Exchange {
            path: "/".into(),
            ..exchange.clone()
        };
        let refused = attempt(&plain, &out).await;
        server.abort();
        result.unwrap();
        let e = refused.unwrap_err();
        assert!(e.contains("handshake answered"), "{e}");
    }

    #[test]
    fn handshake_needs_101_upgrade_and_the_right_accept() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let ok =
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert!(check_handshake(ok, key).is_ok());
        assert!(check_handshake(&ok.replace("101 Switching Protocols", "200 OK"), key).is_err());
        assert!(check_handshake(&ok.replace("s3pP", "AAAA"), key).is_err());
        assert!(check_handshake(&ok.replace("Upgrade: websocket\r\n", ""), key).is_err());
    }
}
