//! A lean WebSocket viewer: a few KiB per connection however large the messages are.
//!
//! tungstenite keeps a read buffer as large as the largest frame it has read, and a week's
//! snapshot is over half a megabyte: 50,000 such viewers would need tens of GiB on the load
//! generator alone. This client streams every frame through a fixed buffer instead, keeps only
//! the first bytes of each message (to tell its type) and a hash of updates, and answers pings.
//! A binary message is a snapshot (`format=gzip` sends only snapshots that way). The handshake
//! key and its check come from tungstenite.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::system::now_ns;

/// Per-connection read buffer.
const BUF: usize = 8192;
/// Bytes kept from the start of each message to tell its type.
const PREFIX: usize = 20;

/// Where a viewer connects.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
    pub path: String,
}

impl Target {
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let u = url::Url::parse(url).with_context(|| format!("parsing {url}"))?;
        if u.scheme() != "ws" {
            bail!("{url}: only ws:// URLs (the bench talks to servers on this machine)");
        }
        let host = u.host_str().context("the URL has no host")?.to_owned();
        crate::setup::require_loopback(&host)?;
        let port = u.port().unwrap_or(80);
        let ip: std::net::IpAddr = if host == "localhost" {
            Ipv4Addr::LOCALHOST.into()
        } else {
            host.parse()?
        };
        let path = match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_owned(),
        };
        Ok(Self {
            addr: SocketAddr::new(ip, port),
            host: format!("{host}:{port}"),
            path,
        })
    }
}

/// What a message was, by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Snapshot,
    Update,
    Status,
    Other,
}

/// A complete message: its kind and, for all but snapshots, an FNV-1a hash of its bytes.
#[derive(Debug, Clone, Copy)]
pub struct Message {
    pub kind: Kind,
    pub hash: u64,
}

/// The upgrade response's header naming the server behind a proxy (lowercase, with its colon).
pub const UPSTREAM_HEADER: &str = "x-candlewick-upstream:";

pub struct Viewer {
    stream: TcpStream,
    /// Bytes read from the socket so far, the upgrade response included.
    bytes_read: u64,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    msg: Assembler,
    /// Behind a proxy that names it (`viewers --proxy nginx`): the server it chose.
    upstream: Option<String>,
    /// When the last ping came and when its pong was written (CLOCK_MONOTONIC ns; 0: none):
    /// after a close for missed heartbeats they say on which leg the heartbeat stalled.
    last_ping_ns: u64,
    last_pong_ns: u64,
}

impl Viewer {
    /// Connects from `source` (port chosen by the kernel) with a small receive buffer.
    pub async fn connect(target: &Target, source: Ipv4Addr, rcvbuf: u32) -> anyhow::Result<Self> {
        let SocketAddr::V4(_) = target.addr else {
            bail!("IPv6 targets are not supported")
        };
        let socket = TcpSocket::new_v4()?;
        socket.set_recv_buffer_size(rcvbuf)?;
        socket.set_send_buffer_size(8192)?;
        socket
            .bind(SocketAddr::V4(SocketAddrV4::new(source, 0)))
            .context("binding the source address")?;
        let stream = socket.connect(target.addr).await.context("connecting")?;
        stream.set_nodelay(true)?;
        let mut v = Self {
            stream,
            bytes_read: 0,
            buf: vec![0u8; BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            msg: Assembler::default(),
            upstream: None,
            last_ping_ns: 0,
            last_pong_ns: 0,
        };
        v.handshake(target).await?;
        Ok(v)
    }

    async fn handshake(&mut self, target: &Target) -> anyhow::Result<()> {
        let key = tungstenite::handshake::client::generate_key();
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n",
            target.path, target.host
        );
        self.stream
            .write_all(request.as_bytes())
            .await
            .context("sending the upgrade request")?;
        let head_end = loop {
            if let Some(i) = self.buf[..self.end]
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
            {
                break i + 4;
            }
            if self.end == self.buf.len() {
                bail!("the upgrade response headers do not fit in {BUF} bytes");
            }
            let n = self.stream.read(&mut self.buf[self.end..]).await?;
            if n == 0 {
                bail!("the server closed the connection during the upgrade");
            }
            self.bytes_read += n as u64;
            self.end += n;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_ascii_lowercase();
        if !head.starts_with("http/1.1 101") {
            let status = head.lines().next().unwrap_or_default().to_owned();
            bail!("upgrade refused: {status}");
        }
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes()).to_ascii_lowercase();
        if !head
            .lines()
            .any(|l| l.starts_with("sec-websocket-accept:") && l.trim_end().ends_with(&accept))
        {
            bail!("the upgrade response has a wrong Sec-WebSocket-Accept");
        }
        self.upstream = head
            .lines()
            .find_map(|l| l.strip_prefix(UPSTREAM_HEADER))
            .map(|v| v.trim().to_owned());
        self.start = head_end;
        Ok(())
    }

    /// (last ping received, its pong written), CLOCK_MONOTONIC nanoseconds, 0 before any.
    pub fn heartbeat(&self) -> (u64, u64) {
        (self.last_ping_ns, self.last_pong_ns)
    }

    /// The server behind the proxy, as the proxy named it in the upgrade response.
    pub fn upstream(&self) -> Option<&str> {
        self.upstream.as_deref()
    }

    /// The next complete message; `None` when the connection ended without a close frame, an
    /// error naming the code and reason when the server closed it.
    /// Cancel-safe: a partly read message stays in the viewer's state.
    pub async fn next(&mut self) -> anyhow::Result<Option<Message>> {
        loop {
            while let Some(step) = self.step()? {
                match step {
                    Step::Message(m) => return Ok(Some(m)),
                    Step::Ping(payload) => {
                        self.last_ping_ns = now_ns();
                        self.send_control(0xA, &payload).await?;
                        self.last_pong_ns = now_ns();
                    }
                    Step::Close(payload) => {
                        let _ = self.send_control(0x8, &[]).await;
                        let code = payload
                            .get(..2)
                            .map(|c| u16::from_be_bytes([c[0], c[1]]))
                            .unwrap_or(1005);
                        let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default())
                            .into_owned();
                        bail!("closed by the server: {code} {reason}");
                    }
                }
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let n = self.stream.read(&mut self.buf[self.end..]).await?;
            if n == 0 {
                return Ok(None);
            }
            self.bytes_read += n as u64;
            self.end += n;
        }
    }

    /// Bytes read from the socket so far, the upgrade response included.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Consumes buffered bytes; `None` when more are needed.
    fn step(&mut self) -> anyhow::Result<Option<Step>> {
        loop {
            match self.msg.frame {
                None => {
                    let Some(h) = parse_header(&self.buf[self.start..self.end])? else {
                        return Ok(None);
                    };
                    self.start += h.header_len;
                    self.msg.begin_frame(h)?;
                }
                Some(frame) => {
                    let avail = self.end - self.start;
                    let take = usize::try_from(frame.remaining)
                        .unwrap_or(usize::MAX)
                        .min(avail);
                    let (from, to) = (self.start, self.start + take);
                    self.start = to;
                    if let Some(step) = self.msg.feed(&self.buf[from..to]) {
                        return Ok(Some(step));
                    }
                    if self.msg.frame.is_some() {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// A masked control frame (clients must mask).
    async fn send_control(&mut self, opcode: u8, payload: &[u8]) -> anyhow::Result<()> {
        let mask: [u8; 4] = rand::random();
        let len = payload.len().min(125);
        let mut out = Vec::with_capacity(6 + len);
        out.push(0x80 | opcode);
        out.push(0x80 | len as u8);
        out.extend_from_slice(&mask);
        out.extend(
            payload[..len]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4]),
        );
        tokio::time::timeout(Duration::from_secs(10), self.stream.write_all(&out))
            .await
            .context("the server did not take a control frame")??;
        Ok(())
    }
}

enum Step {
    Message(Message),
    Ping(Vec<u8>),
    Close(Vec<u8>),
}

#[derive(Debug, Clone, Copy)]
struct Header {
    header_len: usize,
    fin: bool,
    opcode: u8,
    len: u64,
}

/// RFC 6455 §5.2; `None` until the whole header is buffered.
fn parse_header(b: &[u8]) -> anyhow::Result<Option<Header>> {
    if b.len() < 2 {
        return Ok(None);
    }
    if b[1] & 0x80 != 0 {
        bail!("the server sent a masked frame");
    }
    let (header_len, len) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (4, u64::from(u16::from_be_bytes([b[2], b[3]]))),
        127 if b.len() >= 10 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(&b[2..10]);
            (10, u64::from_be_bytes(n))
        }
        126 | 127 => return Ok(None),
        n => (2, u64::from(n)),
    };
    Ok(Some(Header {
        header_len,
        fin: b[0] & 0x80 != 0,
        opcode: b[0] & 0x0f,
        len,
    }))
}

#[derive(Debug, Clone, Copy)]
struct Frame {
    remaining: u64,
    fin: bool,
    control: Option<u8>,
}

/// Reassembles messages across frames, keeping only a prefix and a running hash.
#[derive(Default)]
struct Assembler {
    frame: Option<Frame>,
    prefix: [u8; PREFIX],
    prefix_len: usize,
    hash: u64,
    len: u64,
    in_message: bool,
    /// The message is binary (its first frame's opcode is 2).
    binary: bool,
    control: Vec<u8>,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// `hash` (FNV-1a) carried on over `data`.
fn fnv1a(hash: u64, data: &[u8]) -> u64 {
    data.iter()
        .fold(hash, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME))
}

/// The hash a [`Message`] carries for a whole message of these bytes (its text, reassembled):
/// how a reader of whole messages names the same update as these viewers do.
pub fn message_hash(bytes: &[u8]) -> u64 {
    fnv1a(FNV_OFFSET, bytes)
}

impl Assembler {
    fn begin_frame(&mut self, h: Header) -> anyhow::Result<()> {
        let control = (h.opcode & 0x8 != 0).then_some(h.opcode);
        match control {
            Some(_) => {
                if h.len > 125 {
                    bail!("a control frame longer than 125 bytes");
                }
                self.control.clear();
            }
            None => {
                if h.opcode != 0 && !self.in_message {
                    self.in_message = true;
                    self.binary = h.opcode == 0x2;
                    self.prefix_len = 0;
                    self.hash = FNV_OFFSET;
                    self.len = 0;
                }
            }
        }
        self.frame = Some(Frame {
            remaining: h.len,
            fin: h.fin,
            control,
        });
        Ok(())
    }

    /// Takes payload bytes of the current frame; returns what completed, if anything.
    fn feed(&mut self, data: &[u8]) -> Option<Step> {
        let mut frame = self.frame?;
        frame.remaining -= data.len() as u64;
        if frame.control.is_some() {
            self.control.extend_from_slice(data);
        } else {
            let keep = (PREFIX - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + keep].copy_from_slice(&data[..keep]);
            self.prefix_len += keep;
            self.len += data.len() as u64;
            // Snapshots are large and never compared: only other messages are hashed.
            let snapshot = self.binary
                || (self.prefix_len >= 18
                    && self.prefix[..self.prefix_len].starts_with(b"{\"type\":\"snapshot\""));
            if !snapshot {
                self.hash = fnv1a(self.hash, data);
            }
        }
        if frame.remaining > 0 {
            self.frame = Some(frame);
            return None;
        }
        self.frame = None;
        match frame.control {
            Some(0x9) => Some(Step::Ping(std::mem::take(&mut self.control))),
            Some(0x8) => Some(Step::Close(std::mem::take(&mut self.control))),
            Some(_) => None,
            None if frame.fin => {
                self.in_message = false;
                let p = &self.prefix[..self.prefix_len];
                let kind = if self.binary || p.starts_with(b"{\"type\":\"snapshot\"") {
                    Kind::Snapshot
                } else if p.starts_with(b"{\"type\":\"update\"") {
                    Kind::Update
                } else if p.starts_with(b"{\"type\":\"status\"") {
                    Kind::Status
                } else {
                    Kind::Other
                };
                Some(Step::Message(Message {
                    kind,
                    hash: self.hash,
                }))
            }
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
        match payload.len() {
            n if n < 126 => f.push(n as u8),
            n if n < 65536 => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    /// Feeds `bytes` to an assembler `chunk` bytes at a time, as the socket would.
    fn messages(bytes: &[u8], chunk: usize) -> Vec<(Kind, u64, u64)> {
        // (kind, hash, bytes of the message)
        let mut a = Assembler::default();
        let mut out = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        for piece in bytes.chunks(chunk) {
            pending.extend_from_slice(piece);
            let mut at = 0;
            loop {
                match a.frame {
                    None => match parse_header(&pending[at..]).expect("valid") {
                        Some(h) => {
                            at += h.header_len;
                            a.begin_frame(h).expect("valid");
                        }
                        None => break,
                    },
                    Some(f) => {
                        let take = (f.remaining as usize).min(pending.len() - at);
                        let step = a.feed(&pending[at..at + take]);
                        at += take;
                        if let Some(Step::Message(m)) = step {
                            out.push((m.kind, m.hash, a.len));
                        }
                        if a.frame.is_some() {
                            break;
                        }
                    }
                }
            }
            pending.drain(..at);
        }
        out
    }

    #[test]
    fn messages_are_told_apart_and_hashed_the_same_however_they_arrive() {
        let big = format!(
            "{{\"type\":\"snapshot\",\"candles\":[{}]}}",
            "[1,2,3,4,5,6],".repeat(20_000)
        );
        let upd = br#"{"type":"update","symbol":"BTC/USD","interval":"1m","candles":[[60,1,2,0.5,1.5,3]],"removed":[]}"#;
        let mut wire = frame(0x1, true, big.as_bytes());
        wire.extend(frame(0x9, true, b"hi"));
        wire.extend(frame(0x1, false, &upd[..30]));
        wire.extend(frame(0x0, true, &upd[30..]));
        wire.extend(frame(0x1, true, br#"{"type":"status","stale":true}"#));
        wire.extend(frame(0x2, true, &[0x1f, 0x8b, 8, 0, 0, 0]));
        let a = messages(&wire, 7);
        let b = messages(&wire, 4096);
        assert_eq!(a.len(), 4, "{a:?}");
        assert_eq!(a[0].0, Kind::Snapshot);
        assert_eq!(a[0].2, big.len() as u64);
        assert_eq!(a[1].0, Kind::Update);
        assert_eq!(a[2].0, Kind::Status);
        assert_eq!(
            a[3].0,
            Kind::Snapshot,
            "a binary message is a gzip snapshot"
        );
        assert_eq!(
            a[1].1, b[1].1,
            "the hash does not depend on how the bytes arrive"
        );
        let whole = messages(&frame(0x1, true, upd), 3);
        assert_eq!(
            whole[0].1, a[1].1,
            "a fragmented message hashes like a whole one"
        );
        assert_eq!(
            message_hash(upd),
            a[1].1,
            "a reader of whole messages names the update the same"
        );
    }
}
