//! The bits of WebSocket (RFC 6455) the echo backend and the conformance
//! runner need: the handshake's accept key and single messages of text or
//! binary frames. No extensions, no fragmentation on send.
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Frame opcodes (RFC 6455 §5.2).
pub const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// Largest message either side accepts: the conformance exchange is a few
/// bytes, and a bound keeps a broken peer from exhausting memory.
pub const MAX_MESSAGE: usize = 1 << 20;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
pub fn accept_key(key: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{}{GUID}", key.trim()).as_bytes(),
    );
    base64(digest.as_ref())
}

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One complete message (or control frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// Writes one final frame; clients must `mask` (RFC 6455 §5.3), servers must not.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    opcode: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> std::io::Result<()> {
    let mut frame = Vec::with_capacity(payload.len() + 14);
    frame.push(0x80 | opcode);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => frame.push(mask_bit | n as u8),
        n if n <= usize::from(u16::MAX) => {
            frame.push(mask_bit | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(mask_bit | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(m) => {
            frame.extend_from_slice(&m);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => frame.extend_from_slice(payload),
    }
    w.write_all(&frame).await?;
    w.flush().await
}

fn invalid(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_owned())
}

/// Reads one frame: (fin, opcode, unmasked payload).
async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<(bool, u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    r.read_exact(&mut head).await?;
    let (fin, opcode) = (head[0] & 0x80 != 0, head[0] & 0x0F);
    if head[0] & 0x70 != 0 {
        return Err(invalid("reserved bits set (no extension was negotiated)"));
    }
    let masked = head[1] & 0x80 != 0;
    let len = match head[1] & 0x7F {
        126 => u64::from(r.read_u16().await?),
        127 => r.read_u64().await?,
        n => u64::from(n),
    };
    if len > MAX_MESSAGE as u64 {
        return Err(invalid("frame too large"));
    }
    let mut mask = [0u8; 4];
    if masked {
        r.read_exact(&mut mask).await?;
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).await?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Ok((fin, opcode, payload))
}

/// Reads the next message: data frames are joined up to the final one;
/// control frames (close, ping, pong) come back as they are.
pub async fn read_message<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Message> {
    let mut message: Option<Message> = None;
    loop {
        let (fin, opcode, payload) = read_frame(r).await?;
        if opcode >= CLOSE {
            return Ok(Message { opcode, payload });
        }
        match (&mut message, opcode) {
            (None, TEXT | BINARY) => message = Some(Message { opcode, payload }),
            (Some(m), CONTINUATION) => {
                if m.payload.len() + payload.len() > MAX_MESSAGE {
                    return Err(invalid("message too large"));
                }
                m.payload.extend_from_slice(&payload);
            }
            _ => return Err(invalid("unexpected frame opcode")),
        }
        if fin {
            return message.ok_or_else(|| invalid("empty message"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_of_the_rfc_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
    }

    #[tokio::test]
    async fn masked_and_fragmented_frames_round_trip() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        write_frame(&mut a, TEXT, b"hello", Some([1, 2, 3, 4]))
            .await
            .unwrap();
        let long = vec![7u8; 70_000];
        write_frame(&mut a, BINARY, &long, None).await.unwrap();
        // A fragmented message: non-final text frame, then a final continuation.
        a.write_all(&[TEXT, 2, b'a', b'b', 0x80 | CONTINUATION, 1, b'c'])
            .await
            .unwrap();
        let m = read_message(&mut b).await.unwrap();
        assert_eq!((m.opcode, m.payload.as_slice()), (TEXT, &b"hello"[..]));
        let m = read_message(&mut b).await.unwrap();
        assert_eq!((m.opcode, m.payload), (BINARY, long));
        let m = read_message(&mut b).await.unwrap();
        assert_eq!((m.opcode, m.payload.as_slice()), (TEXT, &b"abc"[..]));
    }
}
