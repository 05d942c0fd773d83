//! A webhook receiver for tests: a minimal HTTP/1.1 server on a loopback
//! port that records every request and answers as its mode says, and a
//! Standard Webhooks signature check written here, apart from orgd's.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 200.
    Up,
    /// 503.
    Unavailable,
    /// Closes the connection without answering.
    Hang,
    /// Reads the request and answers nothing while the mode stays Hold.
    Hold,
}

/// One request received.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    /// What the receiver answered; 0: nothing.
    pub answered: u16,
}

impl Received {
    /// The `webhook-id` header: the event id.
    pub fn id(&self) -> &str {
        &self.headers["webhook-id"]
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    /// The CloudEvent's `type`.
    pub fn event_type(&self) -> String {
        self.json()["type"]
            .as_str()
            .expect("a CloudEvent type")
            .to_owned()
    }

    /// Whether `webhook-signature` holds the Standard Webhooks signature of
    /// this request under `secret` (`whsec_…`).
    pub fn signed_with(&self, secret: &str) -> bool {
        let key = STANDARD
            .decode(secret.strip_prefix("whsec_").expect("a whsec_ secret"))
            .unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        let timestamp = &self.headers["webhook-timestamp"];
        mac.update(format!("{}.{timestamp}.", self.id()).as_bytes());
        mac.update(&self.body);
        let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
        self.headers["webhook-signature"]
            .split(' ')
            .any(|signature| signature == expected)
    }
}

pub struct Receiver {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    mode: watch::Sender<Mode>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start(mode: Mode) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let (mode, modes) = watch::channel(mode);
        let log = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, log.clone(), modes.clone()));
            }
        });
        Receiver {
            addr,
            received,
            mode,
            task,
        }
    }

    /// The URL orgd posts to.
    pub fn url(&self) -> String {
        format!("http://{}/hooks/orgd", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The event ids answered 200, in the order they were.
    pub fn acknowledged(&self) -> Vec<String> {
        self.received()
            .iter()
            .filter(|r| r.answered == 200)
            .map(|r| r.id().to_owned())
            .collect()
    }

    /// Waits up to `limit` for `done` to hold of what was received.
    pub async fn wait_for(&self, limit: Duration, done: impl Fn(&[Received]) -> bool) {
        let deadline = tokio::time::Instant::now() + limit;
        while !done(&self.received()) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the receiver waited {limit:?} in vain; it has {:#?}",
                self.received()
                    .iter()
                    .map(|r| (r.id().to_owned(), r.answered))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut stream: TcpStream,
    log: Arc<Mutex<Vec<Received>>>,
    mut modes: watch::Receiver<Mode>,
) {
    let Some((headers, body)) = read_request(&mut stream).await else {
        return;
    };
    let mode = *modes.borrow_and_update();
    let (answered, answer) = match mode {
        Mode::Up => (200, Some("200 OK")),
        Mode::Unavailable => (503, Some("503 Service Unavailable")),
        Mode::Hang | Mode::Hold => (0, None),
    };
    log.lock().unwrap().push(Received {
        headers,
        body,
        answered,
    });
    match answer {
        Some(status) => {
            let response =
                format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
        None if mode == Mode::Hold => {
            let _ = modes.wait_for(|mode| *mode != Mode::Hold).await;
        }
        None => {}
    }
}

/// One request's headers (names lowercased) and body.
async fn read_request(stream: &mut TcpStream) -> Option<(HashMap<String, String>, Vec<u8>)> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8(buffer[..end].to_vec()).ok()?;
    let headers: HashMap<String, String> = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let length: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = buffer[end + 4..].to_vec();
    while body.len() < length {
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..read]);
    }
    Some((headers, body))
}
