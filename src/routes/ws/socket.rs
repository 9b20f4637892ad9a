//! The WebSocket protocol (RFC 6455) on a viewer's own TCP socket, once the upgrade is answered.
//!
//! Why not actix-ws: a session there is a task, a channel and a response body inside actix-http's
//! connection dispatcher, which keeps an 8 KiB read and an 8 KiB write buffer per connection for
//! as long as it lives, and copies every frame into the latter. Here a message goes from the
//! shared bytes of the update straight to the socket (its frame header and the payload in one
//! `writev`), and what a viewer sends (small masked frames: a `subscribe`, pings, pongs, a close)
//! is read into a buffer that exists only while a frame is partly read. Frames are parsed by
//! actix-http's own WebSocket codec.

use std::io::{self, IoSlice};
use std::time::Duration;

use actix_codec::Decoder;
use actix_http::ws::{self, CloseReason, Item, OpCode, ProtocolError};
use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;

/// The largest WebSocket frame sent; a larger message goes out as one message in fragments
/// (RFC 6455 §5.4), so that no frame of ours needs more than a page at either end.
pub const FRAGMENT_BYTES: usize = 4096 - 16;
/// The longest frame header: 2 bytes, then an 8-byte length (server frames are not masked).
const MAX_HEADER: usize = 10;
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 1024;

/// A message from the viewer, its fragments put together.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Text(String),
    Binary(Bytes),
    Ping(Bytes),
    Pong,
    Close(Option<CloseReason>),
}

/// Why reading from the viewer stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A frame, or a message in fragments, over the limit: closed with 1009.
    #[error("a message over {0} bytes")]
    TooLarge(usize),
    /// Closed with 1002 (1007 for text that is not UTF-8, see [`ReadError::close_code`]).
    #[error("{0}")]
    Protocol(String),
    #[error("text that is not UTF-8")]
    NotUtf8,
    /// The connection ended (or failed): no close frame is owed.
    #[error("the connection ended: {0}")]
    Gone(io::Error),
}

impl ReadError {
    fn from_codec(e: ProtocolError, max: usize) -> Self {
        match e {
            ProtocolError::Overflow => Self::TooLarge(max),
            e => Self::Protocol(e.to_string()),
        }
    }
}

/// A viewer's socket after the upgrade.
pub struct Socket {
    io: TcpStream,
    /// What was read and not yet parsed; no capacity while nothing is pending.
    read: BytesMut,
    codec: ws::Codec,
    /// A message in fragments so far: (text?, its bytes).
    partial: Option<(bool, BytesMut)>,
    /// `read` may hold a whole message: bytes that came with the upgrade request, or what is
    /// left behind the last message taken.
    unparsed: bool,
    max_message: usize,
}

impl Socket {
    /// `io` upgraded, with `read` what the peer sent after its upgrade request (usually
    /// nothing); messages from the peer are at most `max_message` bytes, fragments together.
    pub fn new(io: TcpStream, read: &[u8], max_message: usize) -> Self {
        Self {
            io,
            read: BytesMut::from(read),
            codec: ws::Codec::new().max_size(max_message),
            partial: None,
            unparsed: !read.is_empty(),
            max_message,
        }
    }

    /// Waits until the peer has sent something (or closed), or a message read before may be
    /// waiting. Cancel-safe: nothing is read here.
    pub async fn readable(&self) -> Result<(), ReadError> {
        if self.unparsed {
            // As a read would: a peer that keeps sending yields the worker to others in turn.
            tokio::task::consume_budget().await;
            return Ok(());
        }
        self.io.readable().await.map_err(ReadError::Gone)
    }

    /// The next complete message the peer sent, reading what the socket holds without waiting:
    /// `None` when no whole message is there yet.
    pub fn try_next(&mut self) -> Result<Option<Incoming>, ReadError> {
        loop {
            if let Some(msg) = self.parse()? {
                self.unparsed = !self.read.is_empty();
                return Ok(Some(msg));
            }
            self.unparsed = false;
            if self.read.capacity() - self.read.len() < READ_CHUNK / 4 {
                self.read.reserve(READ_CHUNK);
            }
            match self.io.try_read_buf(&mut self.read) {
                Ok(0) => {
                    return Err(ReadError::Gone(io::ErrorKind::UnexpectedEof.into()));
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.read.is_empty() {
                        // Nothing pending: give the buffer back until the peer sends again.
                        self.read = BytesMut::new();
                    }
                    return Ok(None);
                }
                Err(e) => return Err(ReadError::Gone(e)),
            }
        }
    }

    /// The next complete message in what was read, if any.
    fn parse(&mut self) -> Result<Option<Incoming>, ReadError> {
        loop {
            let decoded = self.codec.decode(&mut self.read);
            let max = self.max_message;
            let Some(frame) = decoded.map_err(|e| ReadError::from_codec(e, max))? else {
                // The codec waits for a whole frame, whatever length its header claims: one
                // over the limit is refused from its header on, not read.
                if declared_length(&self.read).is_some_and(|n| n > max as u64) {
                    return Err(ReadError::TooLarge(max));
                }
                return Ok(None);
            };
            let msg = match frame {
                ws::Frame::Text(b) => Some(text(b)?),
                ws::Frame::Binary(b) => Some(Incoming::Binary(b)),
                ws::Frame::Ping(b) => Some(Incoming::Ping(b)),
                ws::Frame::Pong(_) => Some(Incoming::Pong),
                ws::Frame::Close(reason) => Some(Incoming::Close(reason)),
                ws::Frame::Continuation(item) => self.continued(item)?,
            };
            if msg.is_some() {
                return Ok(msg);
            }
        }
    }

    /// One fragment of a message; the message once its last fragment is in. (The codec
    /// refuses fragments out of order.)
    fn continued(&mut self, item: Item) -> Result<Option<Incoming>, ReadError> {
        let (part, last) = match item {
            Item::FirstText(b) => {
                self.partial = Some((true, BytesMut::new()));
                (b, false)
            }
            Item::FirstBinary(b) => {
                self.partial = Some((false, BytesMut::new()));
                (b, false)
            }
            Item::Continue(b) => (b, false),
            Item::Last(b) => (b, true),
        };
        let Some((is_text, so_far)) = self.partial.as_mut() else {
            return Err(ReadError::Protocol(
                "a continuation with no message begun".into(),
            ));
        };
        if so_far.len() + part.len() > self.max_message {
            return Err(ReadError::TooLarge(self.max_message));
        }
        so_far.extend_from_slice(&part);
        if !last {
            return Ok(None);
        }
        let is_text = *is_text;
        let whole = self
            .partial
            .take()
            .map(|(_, b)| b.freeze())
            .unwrap_or_default();
        if is_text {
            text(whole).map(Some)
        } else {
            Ok(Some(Incoming::Binary(whole)))
        }
    }

    /// Sends `payload` as one text or binary message, in frames of at most [`FRAGMENT_BYTES`],
    /// written together; an error when the viewer is gone or has taken nothing for `timeout`.
    pub async fn send(&self, binary: bool, payload: &[u8], timeout: Duration) -> io::Result<()> {
        let op = if binary { OpCode::Binary } else { OpCode::Text };
        if payload.len() <= FRAGMENT_BYTES {
            let (header, n) = header(op, true, payload.len());
            return self
                .write_all(
                    &mut [IoSlice::new(&header[..n]), IoSlice::new(payload)],
                    timeout,
                )
                .await;
        }
        let parts: Vec<&[u8]> = payload.chunks(FRAGMENT_BYTES).collect();
        let headers: Vec<([u8; MAX_HEADER], usize)> = parts
            .iter()
            .enumerate()
            .map(|(i, part)| {
                let op = if i == 0 { op } else { OpCode::Continue };
                header(op, i + 1 == parts.len(), part.len())
            })
            .collect();
        let mut slices: Vec<IoSlice<'_>> = headers
            .iter()
            .zip(&parts)
            .flat_map(|((h, n), part)| [IoSlice::new(&h[..*n]), IoSlice::new(part)])
            .collect();
        self.write_all(&mut slices, timeout).await
    }

    /// A ping, a pong (echoing `payload`) or a close frame.
    pub async fn send_control(&self, frame: Control<'_>, timeout: Duration) -> io::Result<()> {
        let mut bytes = BytesMut::new();
        match frame {
            Control::Ping => ws::Parser::write_message(&mut bytes, b"", OpCode::Ping, true, false),
            Control::Pong(payload) => {
                ws::Parser::write_message(&mut bytes, payload, OpCode::Pong, true, false);
            }
            Control::Close(reason) => ws::Parser::write_close(&mut bytes, reason, false),
        }
        self.write_all(&mut [IoSlice::new(&bytes)], timeout).await
    }

    /// Ends the connection as RFC 6455 §7 asks: the close frame, then no more writes (FIN).
    /// False when the frame could not go out within `timeout` (the viewer is gone, or stuck).
    pub async fn close(&mut self, reason: Option<CloseReason>, timeout: Duration) -> bool {
        use tokio::io::AsyncWriteExt;
        self.send_control(Control::Close(reason), timeout)
            .await
            .is_ok()
            && self.io.shutdown().await.is_ok()
    }

    /// After [`Socket::close`]: reads and drops whatever the peer still sends until it closes
    /// too, or `linger` has passed. Dropping a socket with unread bytes sends a reset, and the
    /// peer may lose the close frame with it.
    pub async fn linger(mut self, linger: Duration) {
        use tokio::io::AsyncReadExt;
        let drained = async {
            let mut sink = [0u8; 512];
            while self.io.read(&mut sink).await? > 0 {}
            io::Result::Ok(())
        };
        let _ = tokio::time::timeout(linger, drained).await;
    }

    /// Writes every slice. The first try needs no timer: a viewer that reads has room in its
    /// socket's buffer, and the write is done at once; only one that must wait gets `timeout`.
    async fn write_all(&self, mut slices: &mut [IoSlice<'_>], timeout: Duration) -> io::Result<()> {
        match self.io.try_write_vectored(slices) {
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if slices.is_empty() {
            return Ok(());
        }
        let rest = async {
            while !slices.is_empty() {
                self.io.writable().await?;
                match self.io.try_write_vectored(slices) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => IoSlice::advance_slices(&mut slices, n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        };
        tokio::time::timeout(timeout, rest)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the viewer took nothing"))?
    }
}

/// A control frame to send.
pub enum Control<'a> {
    Ping,
    Pong(&'a [u8]),
    Close(Option<CloseReason>),
}

/// A text message's bytes as text.
fn text(bytes: Bytes) -> Result<Incoming, ReadError> {
    String::from_utf8(bytes.into())
        .map(Incoming::Text)
        .map_err(|_| ReadError::NotUtf8)
}

/// The payload length a frame's header (at the start of `buf`) declares, once that much of the
/// header is in (RFC 6455 §5.2).
fn declared_length(buf: &[u8]) -> Option<u64> {
    match *buf.get(1)? & 0x7f {
        126 => buf
            .get(2..4)
            .map(|b| u64::from(u16::from_be_bytes([b[0], b[1]]))),
        127 => buf
            .get(2..10)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes),
        n => Some(u64::from(n)),
    }
}

/// The header of a server frame (not masked) of `len` payload bytes, and its length.
fn header(op: OpCode, fin: bool, len: usize) -> ([u8; MAX_HEADER], usize) {
    let mut h = [0u8; MAX_HEADER];
    h[0] = u8::from(op) | if fin { 0x80 } else { 0 };
    match len {
        0..=125 => {
            h[1] = len as u8;
            (h, 2)
        }
        126..=0xFFFF => {
            h[1] = 126;
            h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            (h, 4)
        }
        _ => {
            h[1] = 127;
            h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            (h, 10)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A connected pair: our socket and the peer's end.
    async fn pair(max: usize) -> (Socket, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap());
        let (accepted, peer) = tokio::join!(listener.accept(), peer);
        (Socket::new(accepted.unwrap().0, b"", max), peer.unwrap())
    }

    /// A client frame: masked, as RFC 6455 requires.
    fn client_frame(op: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        ws::Parser::write_message(&mut b, payload, op, fin, true);
        b.to_vec()
    }

    /// Reads messages until one is whole (or the socket errs).
    async fn next(s: &mut Socket) -> Result<Incoming, ReadError> {
        loop {
            s.readable().await?;
            if let Some(m) = s.try_next()? {
                return Ok(m);
            }
        }
    }

    #[tokio::test]
    async fn fragments_and_control_frames_between_them_come_out_as_whole_messages() {
        let (mut s, mut peer) = pair(4096).await;
        let mut wire = client_frame(OpCode::Text, false, b"{\"type\":");
        wire.extend(client_frame(OpCode::Ping, true, b"hi"));
        wire.extend(client_frame(OpCode::Continue, true, b"\"subscribe\"}"));
        wire.extend(client_frame(OpCode::Pong, true, b""));
        wire.extend(client_frame(OpCode::Binary, true, &[1, 2, 3]));
        // A byte at a time: frames arrive in pieces.
        for b in wire {
            peer.write_all(&[b]).await.unwrap();
        }
        assert_eq!(
            next(&mut s).await.unwrap(),
            Incoming::Ping(Bytes::from_static(b"hi"))
        );
        assert_eq!(
            next(&mut s).await.unwrap(),
            Incoming::Text("{\"type\":\"subscribe\"}".into())
        );
        assert_eq!(next(&mut s).await.unwrap(), Incoming::Pong);
        assert_eq!(
            next(&mut s).await.unwrap(),
            Incoming::Binary(Bytes::from_static(&[1, 2, 3]))
        );
        drop(peer);
        assert!(matches!(next(&mut s).await, Err(ReadError::Gone(_))));
    }

    #[tokio::test]
    async fn a_frame_or_a_fragmented_message_over_the_limit_is_refused_before_it_is_all_read() {
        let (mut s, mut peer) = pair(100).await;
        let big = client_frame(OpCode::Text, true, &[b'a'; 10_000]);
        // Only part of it is sent: the limit shows from the header's length on.
        peer.write_all(&big[..20]).await.unwrap();
        assert!(matches!(next(&mut s).await, Err(ReadError::TooLarge(100))));

        // A header claiming 2^62 bytes, and nothing behind it.
        let (mut s, mut peer) = pair(100).await;
        let mut header = vec![0x81, 0xff];
        header.extend((1u64 << 62).to_be_bytes());
        header.extend([1, 2, 3, 4]);
        peer.write_all(&header).await.unwrap();
        assert!(matches!(next(&mut s).await, Err(ReadError::TooLarge(100))));

        let (mut s, mut peer) = pair(100).await;
        let mut wire = client_frame(OpCode::Text, false, &[b'a'; 60]);
        wire.extend(client_frame(OpCode::Continue, false, &[b'a'; 60]));
        peer.write_all(&wire).await.unwrap();
        assert!(matches!(next(&mut s).await, Err(ReadError::TooLarge(100))));
    }

    #[tokio::test]
    async fn unmasked_frames_and_text_that_is_not_utf8_are_refused() {
        let (mut s, mut peer) = pair(100).await;
        let mut b = BytesMut::new();
        ws::Parser::write_message(&mut b, b"hi", OpCode::Text, true, false);
        peer.write_all(&b).await.unwrap();
        assert!(matches!(next(&mut s).await, Err(ReadError::Protocol(_))));

        let (mut s, mut peer) = pair(100).await;
        peer.write_all(&client_frame(OpCode::Text, true, &[0xff, 0xfe]))
            .await
            .unwrap();
        assert!(matches!(next(&mut s).await, Err(ReadError::NotUtf8)));
    }

    #[tokio::test]
    async fn a_large_message_is_sent_as_one_message_in_frames_of_at_most_a_page() {
        let (s, mut peer) = pair(100).await;
        let payload: Vec<u8> = (0..10_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        s.send(false, &payload, Duration::from_secs(5))
            .await
            .unwrap();
        s.send(true, b"tail", Duration::from_secs(5)).await.unwrap();
        let mut s = s;
        assert!(
            s.close(Some(ws::CloseCode::Restart.into()), Duration::from_secs(1))
                .await
        );
        drop(s);
        let mut wire = Vec::new();
        peer.read_to_end(&mut wire).await.unwrap();
        let mut wire = BytesMut::from(&wire[..]);
        let mut frames = Vec::new();
        while let Some(f) = ws::Parser::parse(&mut wire, false, 1 << 20).unwrap() {
            frames.push(f);
        }
        let ops: Vec<(bool, OpCode, usize)> = frames
            .iter()
            .map(|(fin, op, b)| (*fin, *op, b.as_ref().map_or(0, |b| b.len())))
            .collect();
        assert_eq!(
            ops,
            [
                (false, OpCode::Text, FRAGMENT_BYTES),
                (false, OpCode::Continue, FRAGMENT_BYTES),
                (true, OpCode::Continue, 10_000 - 2 * FRAGMENT_BYTES),
                (true, OpCode::Binary, 4),
                (true, OpCode::Close, 2),
            ]
        );
        let text: Vec<u8> = frames[..3]
            .iter()
            .flat_map(|(_, _, b)| b.as_ref().unwrap().to_vec())
            .collect();
        assert_eq!(text, payload);
    }

    #[tokio::test]
    async fn a_peer_that_takes_nothing_times_the_send_out() {
        let (s, _peer) = pair(100).await;
        let chunk = vec![0u8; 1 << 20];
        let mut result = Ok(());
        // Until the kernel's buffers on both ends are full.
        for _ in 0..64 {
            result = s.send(true, &chunk, Duration::from_millis(200)).await;
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::TimedOut);
    }
}
