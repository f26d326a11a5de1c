//! Reads the server name (SNI) of a TLS ClientHello without terminating TLS,
//! for TLS Passthrough listeners. The ClientHello may arrive in any number of
//! TCP segments and be split over several TLS records (RFC 8446 §5.1 allows
//! a handshake message to span records); the parser is given everything read
//! so far and says whether it needs more. Every length is checked against
//! what is there before it is used: the input is the client's.

/// TLS record content type of handshake messages.
const HANDSHAKE: u8 = 22;
/// Handshake message type of a ClientHello.
const CLIENT_HELLO: u8 = 1;
/// Extension number of `server_name` (RFC 6066 §3).
const SERVER_NAME: u16 = 0;
/// `NameType` of a DNS host name.
const HOST_NAME: u8 = 0;
/// Largest TLS plaintext record (RFC 8446 §5.1).
const MAX_RECORD: usize = 1 << 14;

/// What the bytes read so far say.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// The ClientHello is not complete yet: read more.
    Incomplete,
    /// A complete ClientHello, with its server name (lower-case, without a
    /// trailing dot) if it has one.
    Hello(Option<String>),
    /// Not a TLS ClientHello (another protocol, or a malformed one).
    Invalid(&'static str),
}

/// Reads a ClientHello as its bytes arrive. Each call is given everything
/// received so far and looks only at what is new since the last call, so a
/// client trickling its ClientHello byte by byte costs linear time, not
/// quadratic.
#[derive(Debug, Default)]
pub struct HelloReader {
    /// The handshake message, reassembled from the complete records so far.
    message: Vec<u8>,
    /// Bytes of the stream that made those records.
    consumed: usize,
}

impl HelloReader {
    /// `buf`: every byte of the stream so far (what earlier calls saw, and more).
    pub fn feed(&mut self, buf: &[u8]) -> Parsed {
        loop {
            let at = self.consumed;
            let Some(header) = buf.get(at..at + 5) else {
                // Tell another protocol apart as soon as its first byte is here.
                if at == 0 && !buf.is_empty() && buf[0] != HANDSHAKE {
                    return Parsed::Invalid("not a TLS handshake record");
                }
                return Parsed::Incomplete;
            };
            if header[0] != HANDSHAKE {
                return Parsed::Invalid("not a TLS handshake record");
            }
            // 3.0 (SSL) to 3.4; ClientHellos use 3.1 for compatibility.
            if header[1] != 3 || header[2] > 4 {
                return Parsed::Invalid("unknown TLS record version");
            }
            let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
            if len == 0 || len > MAX_RECORD {
                return Parsed::Invalid("TLS record length out of range");
            }
            let Some(payload) = buf.get(at + 5..at + 5 + len) else {
                return Parsed::Incomplete;
            };
            self.message.extend_from_slice(payload);
            self.consumed = at + 5 + len;
            let message = &self.message;
            if message.len() >= 4 {
                if message[0] != CLIENT_HELLO {
                    return Parsed::Invalid("first handshake message is not a ClientHello");
                }
                let body_len = usize::from(message[1]) << 16
                    | usize::from(message[2]) << 8
                    | usize::from(message[3]);
                if message.len() >= 4 + body_len {
                    return match server_name(&message[4..4 + body_len]) {
                        Ok(name) => Parsed::Hello(name),
                        Err(why) => Parsed::Invalid(why),
                    };
                }
            }
        }
    }
}

/// A cursor over a byte slice whose reads fail instead of panicking.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.rest.len() < n {
            return Err("ClientHello truncated");
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, &'static str> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length.
    fn vec8(&mut self) -> Result<&'a [u8], &'static str> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    /// A vector with a two-byte length.
    fn vec16(&mut self) -> Result<&'a [u8], &'static str> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

/// The `server_name` of a ClientHello body (RFC 8446 §4.1.2).
fn server_name(body: &[u8]) -> Result<Option<String>, &'static str> {
    let mut r = Reader { rest: body };
    r.take(2)?; // legacy_version
    r.take(32)?; // random
    r.vec8()?; // legacy_session_id
    r.vec16()?; // cipher_suites
    r.vec8()?; // legacy_compression_methods
    if r.rest.is_empty() {
        // A ClientHello without extensions (SSL 3.0 style) has no SNI.
        return Ok(None);
    }
    let mut extensions = Reader { rest: r.vec16()? };
    while !extensions.rest.is_empty() {
        let kind = extensions.u16()?;
        let data = extensions.vec16()?;
        if kind != SERVER_NAME {
            continue;
        }
        let mut list = Reader {
            rest: Reader { rest: data }.vec16()?,
        };
        while !list.rest.is_empty() {
            let name_type = list.u8()?;
            let name = list.vec16()?;
            if name_type == HOST_NAME {
                return host_name(name).map(Some);
            }
        }
        return Ok(None);
    }
    Ok(None)
}

/// A DNS name as routing compares it: labels of ASCII letters, digits, `-`
/// and `_` (none empty, none over 63 bytes) separated by dots, lower-cased,
/// without a trailing dot.
fn host_name(raw: &[u8]) -> Result<String, &'static str> {
    let raw = raw.strip_suffix(b".").unwrap_or(raw);
    let valid = !raw.is_empty()
        && raw.len() <= 253
        && raw.split(|b| *b == b'.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        });
    if !valid {
        return Err("server name is not a DNS name");
    }
    Ok(String::from_utf8_lossy(raw).to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a whole byte stream in one go.
    fn parse(buf: &[u8]) -> Parsed {
        HelloReader::default().feed(buf)
    }

    /// A ClientHello body with the given extensions.
    fn body(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut b = vec![3, 3];
        b.extend([7; 32]);
        b.push(32);
        b.extend([1; 32]);
        b.extend([0, 4, 0x13, 0x01, 0x13, 0x02]);
        b.extend([1, 0]);
        let mut ext = Vec::new();
        for (kind, data) in extensions {
            ext.extend(kind.to_be_bytes());
            ext.extend((data.len() as u16).to_be_bytes());
            ext.extend(data);
        }
        b.extend((ext.len() as u16).to_be_bytes());
        b.extend(ext);
        b
    }

    fn sni(name: &[u8]) -> (u16, Vec<u8>) {
        let mut entry = vec![HOST_NAME];
        entry.extend((name.len() as u16).to_be_bytes());
        entry.extend(name);
        let mut data = (entry.len() as u16).to_be_bytes().to_vec();
        data.extend(entry);
        (SERVER_NAME, data)
    }

    /// The handshake message in records of at most `record` payload bytes.
    fn records(body: &[u8], record: usize) -> Vec<u8> {
        let mut msg = vec![CLIENT_HELLO];
        msg.extend(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend(body);
        let mut out = Vec::new();
        for chunk in msg.chunks(record) {
            out.extend([HANDSHAKE, 3, 1]);
            out.extend((chunk.len() as u16).to_be_bytes());
            out.extend(chunk);
        }
        out
    }

    #[test]
    fn finds_the_server_name_among_other_extensions() {
        let hello = records(
            &body(&[
                (10, vec![0, 2, 0, 29]),
                sni(b"API.Example.COM."),
                (16, vec![0]),
            ]),
            MAX_RECORD,
        );
        assert_eq!(parse(&hello), Parsed::Hello(Some("api.example.com".into())));
    }

    #[test]
    fn every_prefix_is_incomplete_and_records_may_split_the_message() {
        for record in [MAX_RECORD, 50, 7, 1] {
            let hello = records(&body(&[sni(b"a.example.com")]), record);
            for end in 0..hello.len() {
                assert_eq!(parse(&hello[..end]), Parsed::Incomplete, "{record} {end}");
            }
            assert_eq!(
                parse(&hello),
                Parsed::Hello(Some("a.example.com".into())),
                "record size {record}"
            );
        }
    }

    #[test]
    fn fed_a_byte_at_a_time_the_reader_gives_what_one_parse_gives() {
        for record in [MAX_RECORD, 9, 1] {
            let hello = records(&body(&[sni(b"b.example.com")]), record);
            let mut reader = HelloReader::default();
            for end in 0..hello.len() {
                assert_eq!(reader.feed(&hello[..end]), Parsed::Incomplete);
            }
            assert_eq!(
                reader.feed(&hello),
                Parsed::Hello(Some("b.example.com".into()))
            );
        }
        // Every byte of the input is looked at about once: the records
        // already taken are not read again.
        let hello = records(&body(&[sni(b"b.example.com")]), 1);
        let mut reader = HelloReader::default();
        for end in 0..hello.len() {
            reader.feed(&hello[..end]);
            assert!(reader.consumed <= end);
        }
        assert!(reader.message.len() * 6 == reader.consumed);
    }

    #[test]
    fn no_sni_and_no_extensions_parse_as_hellos_without_a_name() {
        let hello = records(&body(&[(10, vec![0, 2, 0, 29])]), MAX_RECORD);
        assert_eq!(parse(&hello), Parsed::Hello(None));
        // Without the extensions block at all.
        let mut b = body(&[]);
        b.truncate(b.len() - 2);
        assert_eq!(parse(&records(&b, MAX_RECORD)), Parsed::Hello(None));
    }

    #[test]
    fn other_protocols_and_broken_hellos_are_invalid() {
        assert!(matches!(parse(b"G"), Parsed::Invalid(_)));
        assert!(matches!(parse(b"GET / HTTP/1.1\r\n"), Parsed::Invalid(_)));
        // An alert record, a record too large, a version from nowhere.
        assert!(matches!(parse(&[21, 3, 1, 0, 2, 1, 0]), Parsed::Invalid(_)));
        assert!(matches!(parse(&[22, 3, 1, 0x40, 1]), Parsed::Invalid(_)));
        assert!(matches!(parse(&[22, 2, 0, 0, 4]), Parsed::Invalid(_)));
        // A ServerHello where a ClientHello belongs.
        let mut hello = records(&body(&[sni(b"a.example.com")]), MAX_RECORD);
        hello[5] = 2;
        assert!(matches!(parse(&hello), Parsed::Invalid(_)));
        // An extension length past the end of the message.
        let mut b = body(&[sni(b"a.example.com")]);
        let n = b.len();
        b[n - 20] = 0xff;
        assert!(matches!(
            parse(&records(&b, MAX_RECORD)),
            Parsed::Invalid(_)
        ));
        // A name that is not a DNS name.
        let hello = records(&body(&[sni(b"a b\x00")]), MAX_RECORD);
        assert!(matches!(parse(&hello), Parsed::Invalid(_)));
    }

    /// Found by the `client_hello` fuzz target: `oxEepSh..` came out as
    /// the server name `oxeepsh.` (only one trailing dot was taken off, and
    /// empty labels were let through).
    #[test]
    fn server_names_with_empty_or_long_labels_are_invalid() {
        for bad in [&b"oxEepSh.."[..], b"a..b", b".a", b".", b"..", &[b'a'; 64]] {
            let hello = records(&body(&[sni(bad)]), MAX_RECORD);
            assert!(matches!(parse(&hello), Parsed::Invalid(_)), "{bad:?}");
        }
        let label = [b'a'; 63];
        let hello = records(
            &body(&[sni(&[&label[..], b".example."].concat())]),
            MAX_RECORD,
        );
        let want = format!("{}.example", "a".repeat(63));
        assert_eq!(parse(&hello), Parsed::Hello(Some(want)));
    }

    #[test]
    fn truncations_and_corruptions_never_panic() {
        let hello = records(&body(&[sni(b"a.example.com")]), 40);
        for i in 0..hello.len() {
            for v in [0, 1, 0x7f, 0xff] {
                let mut h = hello.clone();
                h[i] = v;
                let _ = parse(&h);
                let _ = parse(&h[..i]);
            }
        }
    }
}
