//! An OTLP/HTTP stand-in for `cargo xtask bench proxy --tracing`: accepts
//! the agent's export POSTs on loopback, answers 200 with an empty body and
//! counts what arrived, so the bench can check that spans were exported
//! and not just dropped. It never decodes the protobuf: the agent's own
//! counters (`sluice_trace_spans_total`) say how many spans the posts held.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context, Result};

/// Totals received so far.
#[derive(Default)]
struct Counts {
    posts: AtomicU64,
    bytes: AtomicU64,
}

/// The running sink; stops its threads when dropped.
pub struct OtlpSink {
    port: u16,
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
    accept: Option<JoinHandle<()>>,
}

/// Longest request head accepted (the agent sends a few short headers).
const MAX_HEAD: usize = 16 * 1024;
/// Connections served at once: the agent's exporter keeps one or two.
const MAX_CONNECTIONS: u64 = 64;

impl OtlpSink {
    /// Listens on an ephemeral loopback port.
    pub fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the OTLP sink")?;
        let port = listener.local_addr()?.port();
        // Non-blocking accept: the loop notices `stop` within 50 ms.
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let (s, c) = (stop.clone(), counts.clone());
        let accept = std::thread::spawn(move || {
            let open = Arc::new(AtomicU64::new(0));
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) if open.load(Ordering::SeqCst) < MAX_CONNECTIONS => {
                        let (s, c, open) = (s.clone(), c.clone(), open.clone());
                        open.fetch_add(1, Ordering::SeqCst);
                        std::thread::spawn(move || {
                            let _ = serve(stream, &s, &c);
                            open.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                    Ok(_) => {} // over the limit: dropped, the exporter retries later
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        });
        Ok(Self {
            port,
            stop,
            counts,
            accept: Some(accept),
        })
    }

    /// The traces endpoint to give the agent.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/v1/traces", self.port)
    }

    /// Export requests and body bytes received so far.
    pub fn received(&self) -> (u64, u64) {
        (
            self.counts.posts.load(Ordering::SeqCst),
            self.counts.bytes.load(Ordering::SeqCst),
        )
    }
}

impl Drop for OtlpSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Serves keep-alive POSTs with a `Content-Length` body until the peer
/// closes, a request is malformed, or the sink stops.
fn serve(stream: TcpStream, stop: &AtomicBool, counts: &Counts) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        // The request line; idle between requests until the sink stops.
        line.clear();
        loop {
            match reader.read_line(&mut line) {
                Ok(0) => return Ok(()),
                Ok(_) => break,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if stop.load(Ordering::SeqCst) {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let is_post = line.starts_with("POST ");
        let mut length = 0usize;
        let mut head = line.len();
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            head += line.len();
            if head > MAX_HEAD {
                return Ok(());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((name, value)) = l.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        std::io::copy(&mut (&mut reader).take(length as u64), &mut std::io::sink())?;
        let status = if is_post {
            counts.posts.fetch_add(1, Ordering::SeqCst);
            counts.bytes.fetch_add(length as u64, Ordering::SeqCst);
            "200 OK"
        } else {
            "405 Method Not Allowed"
        };
        // One write: the answer must not trickle out in pieces.
        writer.write_all(
            format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n"
            )
            .as_bytes(),
        )?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(stream: &mut TcpStream, body: &[u8]) -> String {
        write!(
            stream,
            "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        stream.write_all(body).unwrap();
        // The head, whatever pieces it comes in (the answer has no body).
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        String::from_utf8(head).unwrap()
    }

    #[test]
    fn counts_keep_alive_posts_and_answers_200() {
        let sink = OtlpSink::start().unwrap();
        assert!(sink.endpoint().ends_with("/v1/traces"));
        let endpoint = sink.endpoint();
        let port: u16 = endpoint.split([':', '/']).nth(4).unwrap().parse().unwrap();
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let answer = post(&mut s, b"abcdef");
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer:?}");
        assert!(post(&mut s, &[0u8; 1000]).starts_with("HTTP/1.1 200 OK"));
        assert_eq!(sink.received(), (2, 1006));
    }
}
