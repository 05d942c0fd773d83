//! A tiny real SMTP server on loopback, for tests that check what orgd mails.
//!
//! It speaks plain SMTP (no TLS, no AUTH): EHLO/HELO, MAIL FROM, RCPT TO,
//! DATA (with dot-unstuffing), RSET, NOOP and QUIT; anything else gets 502. It
//! accepts every message, except for recipients it was told to refuse (550 or 451),
//! and keeps what it received until it is dropped (which closes its port). It can
//! be told to hold its answer to each message, as a slow server does.
//!
//! ```ignore
//! let sink = SmtpSink::start().await;
//! let port = sink.port().to_string();
//! let app = TestApp::spawn_with(&[
//!     "--smtp-host", "127.0.0.1", "--smtp-port", &port, "--smtp-tls", "none",
//!     "--outbox-interval", "100ms",
//! ])
//! .await;
//! // … something that mails ops@acme.test …
//! let mail = sink.wait_for(|m| m.to == ["ops@acme.test"], Duration::from_secs(30)).await;
//! assert!(mail.body().contains("token="));
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedRwLockWriteGuard, RwLock};
use tokio::task::{JoinHandle, JoinSet};

/// One message as the sink received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// Envelope sender (`MAIL FROM`).
    pub from: String,
    /// Envelope recipients (`RCPT TO`), in order.
    pub to: Vec<String>,
    /// The raw message after DATA: headers, blank line, encoded body (CRLF line ends).
    pub data: String,
}

impl Mail {
    /// The first header `name` (case-insensitive), with folded lines joined.
    /// RFC 2047 encoded words are not decoded.
    pub fn header(&self, name: &str) -> Option<String> {
        let mut lines = self.head().split("\r\n").peekable();
        while let Some(line) = lines.next() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            if key.eq_ignore_ascii_case(name) {
                let mut value = value.trim().to_owned();
                while let Some(more) = lines.next_if(|l| l.starts_with([' ', '\t'])) {
                    value.push(' ');
                    value.push_str(more.trim());
                }
                return Some(value);
            }
        }
        None
    }

    /// The `Message-ID` header, e.g. `<0193…@orgd>`.
    pub fn message_id(&self) -> Option<String> {
        self.header("Message-ID")
    }

    /// The body, decoded from its Content-Transfer-Encoding (7bit, 8bit,
    /// quoted-printable or base64), with `\n` line ends.
    pub fn body(&self) -> String {
        let raw = self
            .data
            .split_once("\r\n\r\n")
            .map_or("", |(_, body)| body);
        let encoding = self
            .header("Content-Transfer-Encoding")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let decoded = match encoding.as_str() {
            "base64" => {
                let compact: String = raw.split_whitespace().collect();
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .expect("a base64 body");
                String::from_utf8(bytes).expect("a UTF-8 body")
            }
            "quoted-printable" => decode_quoted_printable(raw),
            _ => raw.to_owned(),
        };
        decoded.replace("\r\n", "\n")
    }

    fn head(&self) -> &str {
        self.data
            .split_once("\r\n\r\n")
            .map_or(&self.data, |(h, _)| h)
    }
}

fn decode_quoted_printable(raw: &str) -> String {
    let mut bytes = Vec::with_capacity(raw.len());
    let mut rest = raw.replace("=\r\n", "").into_bytes().into_iter();
    while let Some(byte) = rest.next() {
        if byte == b'=' {
            let hex: Vec<u8> = rest.by_ref().take(2).collect();
            let hex = std::str::from_utf8(&hex).expect("ASCII escapes");
            bytes.push(u8::from_str_radix(hex, 16).expect("a quoted-printable escape"));
        } else {
            bytes.push(byte);
        }
    }
    String::from_utf8(bytes).expect("a UTF-8 body")
}

#[derive(Default)]
struct State {
    mails: Mutex<Vec<Mail>>,
    /// Recipients refused at `RCPT TO`, with the reply they get.
    refused: Mutex<HashMap<String, &'static str>>,
    /// Write-locked while messages are held: a session takes it for reading
    /// before it accepts a message.
    hold: Arc<RwLock<()>>,
    /// Sessions waiting for `hold` with a message.
    held: AtomicUsize,
}

/// Holds the sink's answers to messages until dropped.
pub struct Hold {
    _writing: OwnedRwLockWriteGuard<()>,
}

/// The SMTP server; it stops (and its port closes) when dropped.
pub struct SmtpSink {
    port: u16,
    state: Arc<State>,
    server: JoinHandle<()>,
}

impl SmtpSink {
    /// Starts on an ephemeral loopback port.
    pub async fn start() -> SmtpSink {
        Self::start_on(0).await
    }

    /// Starts on loopback `port` (e.g. one orgd was already told to use).
    pub async fn start_on(port: u16) -> SmtpSink {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|err| panic!("binding the SMTP sink to port {port}: {err}"));
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State::default());
        let shared = state.clone();
        let server = tokio::spawn(async move {
            // Dropping the set (when this task is aborted) ends every session.
            let mut sessions = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                sessions.spawn(session(stream, shared.clone()));
                while sessions.try_join_next().is_some() {}
            }
        });
        SmtpSink {
            port,
            state,
            server,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// From now on, `RCPT TO` this address (case-insensitive) is answered with a
    /// permanent 550.
    pub fn reject_recipient(&self, address: &str) {
        self.refuse(address, "550 5.1.1 mailbox unavailable");
    }

    /// From now on, `RCPT TO` this address (case-insensitive) is answered with a
    /// temporary 451: try again later.
    pub fn defer_recipient(&self, address: &str) {
        self.refuse(address, "451 4.2.0 mailbox busy, try again later");
    }

    fn refuse(&self, address: &str, reply: &'static str) {
        self.state
            .refused
            .lock()
            .unwrap()
            .insert(address.to_ascii_lowercase(), reply);
    }

    /// Until the returned `Hold` is dropped, a message is neither accepted nor
    /// answered once its data arrived: the client waits, as with a slow server.
    pub async fn hold_messages(&self) -> Hold {
        Hold {
            _writing: self.state.hold.clone().write_owned().await,
        }
    }

    /// Waits up to `timeout` until `count` messages are held.
    pub async fn wait_for_held(&self, count: usize, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.state.held.load(Ordering::SeqCst) < count {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{count} held messages expected within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Everything received so far, in order of arrival.
    pub fn mails(&self) -> Vec<Mail> {
        self.state.mails.lock().unwrap().clone()
    }

    /// The first message matching `wanted`, waiting up to `timeout` for it to
    /// arrive; panics (listing what did arrive) when it does not.
    pub async fn wait_for(&self, wanted: impl Fn(&Mail) -> bool, timeout: Duration) -> Mail {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(mail) = self.mails().into_iter().find(|m| wanted(m)) {
                return mail;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no matching mail within {timeout:?}; received: {:#?}",
                self.mails()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A loopback port with nothing listening on it right now.
pub fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One SMTP session; returns when the client quits or goes away.
async fn session(stream: TcpStream, state: Arc<State>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut from: Option<String> = None;
    let mut to: Vec<String> = Vec::new();
    if write.write_all(b"220 sink.test ESMTP\r\n").await.is_err() {
        return;
    }
    loop {
        let Some(line) = read_line(&mut lines).await else {
            return;
        };
        let verb = line
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let answer = match verb.as_str() {
            "EHLO" => {
                "250-sink.test\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 10485760".to_owned()
            }
            "HELO" => "250 sink.test".to_owned(),
            "MAIL" => match address(&line, "MAIL FROM:") {
                Some(address) => {
                    from = Some(address);
                    to.clear();
                    "250 2.1.0 OK".to_owned()
                }
                None => "501 5.5.4 syntax: MAIL FROM:<address>".to_owned(),
            },
            "RCPT" => match address(&line, "RCPT TO:") {
                _ if from.is_none() => "503 5.5.1 MAIL first".to_owned(),
                Some(address)
                    if let Some(reply) = state
                        .refused
                        .lock()
                        .unwrap()
                        .get(&address.to_ascii_lowercase()) =>
                {
                    (*reply).to_owned()
                }
                Some(address) => {
                    to.push(address);
                    "250 2.1.5 OK".to_owned()
                }
                None => "501 5.5.4 syntax: RCPT TO:<address>".to_owned(),
            },
            "DATA" if to.is_empty() => "503 5.5.1 RCPT first".to_owned(),
            "DATA" => {
                if write
                    .write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
                let Some(data) = read_data(&mut lines).await else {
                    return;
                };
                state.held.fetch_add(1, Ordering::SeqCst);
                drop(state.hold.read().await);
                state.held.fetch_sub(1, Ordering::SeqCst);
                let mut mails = state.mails.lock().unwrap();
                mails.push(Mail {
                    from: from.take().unwrap_or_default(),
                    to: std::mem::take(&mut to),
                    data,
                });
                format!("250 2.0.0 OK queued as {}", mails.len())
            }
            "RSET" => {
                from = None;
                to.clear();
                "250 2.0.0 OK".to_owned()
            }
            "NOOP" => "250 2.0.0 OK".to_owned(),
            "QUIT" => {
                let _ = write.write_all(b"221 2.0.0 bye\r\n").await;
                return;
            }
            _ => "502 5.5.2 command not implemented".to_owned(),
        };
        if write
            .write_all(format!("{answer}\r\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// The next line without its line end; None at the end of the stream.
async fn read_line(lines: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> Option<String> {
    let mut line = Vec::new();
    match lines.read_until(b'\n', &mut line).await {
        Ok(0) | Err(_) => None,
        Ok(_) => {
            let line = String::from_utf8_lossy(&line);
            Some(line.trim_end_matches(['\r', '\n']).to_owned())
        }
    }
}

/// The message after DATA, up to the lone ".", dot-unstuffed, with CRLF line ends.
async fn read_data(lines: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> Option<String> {
    let mut data = String::new();
    loop {
        let line = read_line(lines).await?;
        if line == "." {
            return Some(data);
        }
        data.push_str(line.strip_prefix('.').unwrap_or(&line));
        data.push_str("\r\n");
    }
}

/// The address in `<…>` after `prefix` (case-insensitive), ignoring parameters.
fn address(line: &str, prefix: &str) -> Option<String> {
    let head = line.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = line[prefix.len()..].trim_start();
    let inner = rest.strip_prefix('<')?.split_once('>')?.0;
    Some(inner.to_owned())
}
