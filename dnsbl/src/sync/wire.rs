//! The sync protocol on the wire: frames with a version byte, a bounded length and a CRC-32,
//! and the five messages they carry.
//!
//! A frame is `version (1 byte) | kind (1) | payload length (u32) | payload | CRC-32 (u32)`,
//! integers big-endian, the CRC-32 over every byte before it. A length is checked against the
//! bound for what the reader expects before anything is allocated, and a payload is read as it
//! arrives, so a peer cannot make a node reserve memory it never sends.
//!
//! | kind | message | payload |
//! |------|---------|---------|
//! | 0x01 | list    | empty |
//! | 0x02 | pull    | name, then an rsync signature of the copy held (the rest) |
//! | 0x03 | hello   | the subscriber's nonce (32 bytes): opens a keyed connection |
//! | 0x04 | proof   | the subscriber's proof of the key (32 bytes) |
//! | 0x81 | listing | count (u32), then per dataset: name, version |
//! | 0x82 | delta   | name, version, then an rsync delta (the rest) |
//! | 0x83 | challenge | the publisher's nonce (32 bytes) |
//! | 0x84 | accept  | the publisher's proof of the key (32 bytes) |
//! | 0xff | refusal | code (u8), from the table in `refusal.rs` |
//!
//! With a shared key, the four handshake messages come first and every frame after them is
//! followed by a 32-byte HMAC-SHA256 tag (`mac.rs`, `handshake.rs`); without one, neither.
//!
//! A name is its length (u16) and its UTF-8 bytes; a version is the generation (u64), the
//! length of the full file (u64) and its SHA-256 (32 bytes).
//!
//! The CRC-32 catches a frame damaged on the way early and says so; it is no defence against a
//! peer that means harm, and need not be: the SHA-256 of the rebuilt file is what decides
//! whether it is used. Against such a peer, or anyone on the path, the shared key is the
//! defence.

use tokio::io::{AsyncRead, AsyncReadExt};

use super::error::SyncError;
use super::refusal::Refusal;

/// The protocol version this node speaks.
pub(crate) const VERSION: u8 = 1;

/// The largest dataset file the protocol carries. The biggest public feeds are tens of
/// megabytes; past a gigabyte a node would hold too much in memory to rebuild a copy.
pub(crate) const MAX_DATASET_LEN: u64 = 1 << 30;

/// The longest dataset name: a file name, at most 255 bytes on Linux.
pub(crate) const MAX_NAME_LEN: usize = 255;

/// The most datasets one listing may name.
pub(crate) const MAX_LISTED: usize = 4096;

/// The largest signature a subscriber may send: a gigabyte file in 512-byte blocks with
/// 8-byte hashes is 24 MiB; real signatures, with blocks of the square root of the file's
/// length, are a few hundred kilobytes.
pub(crate) const MAX_SIGNATURE_LEN: usize = 24 << 20;

/// The largest payload a publisher reads.
pub(crate) const MAX_REQUEST_PAYLOAD: u64 = (2 + MAX_NAME_LEN + MAX_SIGNATURE_LEN) as u64;

/// The largest payload a subscriber reads: a delta is the new file's bytes plus a command of a
/// few bytes per copied block or literal run, under an eighth of the file at the smallest
/// block size.
pub(crate) const MAX_RESPONSE_PAYLOAD: u64 = MAX_DATASET_LEN + MAX_DATASET_LEN / 8;

/// The bytes of a frame around its payload: the header (version, kind, length) and the CRC.
const HEADER_LEN: usize = 6;
const TRAILER_LEN: usize = 4;

/// How much of a payload is reserved before its bytes arrive.
const READ_CHUNK: u64 = 64 << 10;

/// The length of a SHA-256.
pub(crate) const CHECKSUM_LEN: usize = 32;

mod kind {
    pub const LIST: u8 = 0x01;
    pub const PULL: u8 = 0x02;
    pub const HELLO: u8 = 0x03;
    pub const PROOF: u8 = 0x04;
    pub const LISTING: u8 = 0x81;
    pub const DELTA: u8 = 0x82;
    pub const CHALLENGE: u8 = 0x83;
    pub const ACCEPT: u8 = 0x84;
    pub const REFUSAL: u8 = 0xff;
}

/// Which version of a dataset file: what a subscriber compares with the copy it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Version {
    /// The file's modification time in nanoseconds since 1970: newer data, higher number.
    pub generation: u64,
    /// The length of the whole file.
    pub len: u64,
    /// The SHA-256 of the whole file.
    pub checksum: [u8; CHECKSUM_LEN],
}

/// One dataset a publisher offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    /// Its name (the file name).
    pub dataset: String,
    /// Its current version.
    pub version: Version,
}

/// A delta from the copy a subscriber holds to the publisher's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delta {
    /// The dataset's name.
    pub dataset: String,
    /// The version the delta rebuilds.
    pub version: Version,
    /// The rsync delta.
    pub delta: Vec<u8>,
}

/// What a subscriber asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    /// The datasets published and their versions.
    List,
    /// A delta from the copy described by `signature` to the current version of `dataset`.
    Pull {
        /// The dataset's name.
        dataset: String,
        /// The rsync signature of the copy held (of an empty file when none is held).
        signature: Vec<u8>,
    },
}

/// What a publisher answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Response {
    /// The answer to [`Request::List`].
    Listing(Vec<Listed>),
    /// The answer to [`Request::Pull`].
    Delta(Delta),
    /// A refusal of either.
    Refusal(Refusal),
}

/// The messages of a keyed connection's handshake (`handshake.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handshake {
    /// The subscriber's nonce.
    Hello([u8; NONCE_LEN]),
    /// The publisher's nonce.
    Challenge([u8; NONCE_LEN]),
    /// The subscriber's proof that it holds the key.
    Proof([u8; TAG_LEN]),
    /// The publisher's proof that it holds the key.
    Accept([u8; TAG_LEN]),
}

/// The length of a nonce.
pub(crate) const NONCE_LEN: usize = 32;

/// The length of an HMAC-SHA256 tag or proof.
pub(crate) const TAG_LEN: usize = 32;

/// The largest handshake payload.
pub(crate) const MAX_HANDSHAKE_PAYLOAD: u64 = 32;

/// One frame as read: its kind and its payload.
#[derive(Debug)]
pub(crate) struct Frame {
    kind: u8,
    payload: Vec<u8>,
}

/// A frame as it came off the wire, its CRC-32 and version not yet checked: what a tag is
/// computed over.
#[derive(Debug)]
pub(crate) struct RawFrame {
    header: [u8; HEADER_LEN],
    payload: Vec<u8>,
    trailer: [u8; TRAILER_LEN],
}

impl Frame {
    /// The frame's whole encoding.
    fn encode(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = Vec::with_capacity(HEADER_LEN + payload.len() + TRAILER_LEN);
        frame.push(VERSION);
        frame.push(kind);
        // Callers keep payloads under the bounds above, all far below 4 GiB.
        frame.extend_from_slice(
            &u32::try_from(payload.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        frame.extend_from_slice(payload);
        let crc = crc32fast::hash(&frame);
        frame.extend_from_slice(&crc.to_be_bytes());
        frame
    }

    /// Whether the frame opens a keyed connection's handshake.
    pub(crate) fn opens_handshake(&self) -> bool {
        self.kind == kind::HELLO
    }

    /// Whether the frame is a request of an unkeyed connection.
    pub(crate) fn is_plain_request(&self) -> bool {
        self.kind == kind::LIST || self.kind == kind::PULL
    }
}

impl RawFrame {
    /// Reads one frame whose payload may be at most `max` bytes, leaving its version and
    /// CRC-32 to [`RawFrame::check`]: on a keyed connection the tag is checked first, so that
    /// any change in transit counts as what it is. `Ok(None)` when the peer closed the
    /// connection between frames.
    ///
    /// # Errors
    ///
    /// [`SyncError::Truncated`] when the connection ends inside the frame,
    /// [`SyncError::TooLong`], or [`SyncError::Io`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: a frame cut off by cancellation leaves the stream in its middle.
    pub(crate) async fn read<R: AsyncRead + Unpin>(
        reader: &mut R,
        max: u64,
    ) -> Result<Option<RawFrame>, SyncError> {
        let mut header = [0u8; HEADER_LEN];
        if reader.read(&mut header[..1]).await.map_err(SyncError::Io)? == 0 {
            return Ok(None);
        }
        read_exact(reader, &mut header[1..], "header").await?;
        let [_, _, a, b, c, d] = header;
        let len = u64::from(u32::from_be_bytes([a, b, c, d]));
        if len > max {
            return Err(SyncError::TooLong { len, max });
        }

        // Reserve as the bytes come, not what the header claims.
        let mut payload = Vec::with_capacity(len.min(READ_CHUNK) as usize);
        let read = (&mut *reader)
            .take(len)
            .read_to_end(&mut payload)
            .await
            .map_err(SyncError::Io)?;
        if (read as u64) < len {
            return Err(SyncError::Truncated { part: "payload" });
        }
        let mut trailer = [0u8; TRAILER_LEN];
        read_exact(reader, &mut trailer, "checksum").await?;
        Ok(Some(RawFrame {
            header,
            payload,
            trailer,
        }))
    }

    /// The frame's bytes in order, as a tag covers them.
    pub(crate) fn parts(&self) -> [&[u8]; 3] {
        [&self.header, &self.payload, &self.trailer]
    }

    /// The frame, once its version and CRC-32 are checked.
    ///
    /// # Errors
    ///
    /// [`SyncError::Version`] or [`SyncError::FrameChecksum`].
    pub(crate) fn check(self) -> Result<Frame, SyncError> {
        let [version, kind, ..] = self.header;
        if version != VERSION {
            return Err(SyncError::Version(version));
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(&self.header);
        crc.update(&self.payload);
        if crc.finalize() != u32::from_be_bytes(self.trailer) {
            return Err(SyncError::FrameChecksum);
        }
        Ok(Frame {
            kind,
            payload: self.payload,
        })
    }
}

/// Fills `buf`, or says which `part` of a frame the connection ended in.
pub(crate) async fn read_exact<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut [u8],
    part: &'static str,
) -> Result<(), SyncError> {
    match reader.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(SyncError::Truncated { part })
        }
        Err(error) => Err(SyncError::Io(error)),
    }
}

impl Request {
    /// The request's frame.
    pub(crate) fn encode(&self) -> Vec<u8> {
        match self {
            Request::List => Frame::encode(kind::LIST, &[]),
            Request::Pull { dataset, signature } => {
                let mut payload = Vec::with_capacity(2 + dataset.len() + signature.len());
                put_name(&mut payload, dataset);
                payload.extend_from_slice(signature);
                Frame::encode(kind::PULL, &payload)
            }
        }
    }

    /// Reads a request from its frame.
    ///
    /// # Errors
    ///
    /// [`SyncError::Malformed`] when the frame is not a well-formed request.
    pub(crate) fn decode(frame: Frame) -> Result<Request, SyncError> {
        let mut payload = Cursor(&frame.payload);
        let request = match frame.kind {
            kind::LIST => Request::List,
            kind::PULL => {
                let dataset = payload.name()?;
                let signature = payload.rest();
                if signature.len() > MAX_SIGNATURE_LEN {
                    return Err(SyncError::Malformed("signature past its bound"));
                }
                Request::Pull {
                    dataset,
                    signature: signature.to_vec(),
                }
            }
            _ => return Err(SyncError::Malformed("unknown request kind")),
        };
        payload.end()?;
        Ok(request)
    }
}

impl Response {
    /// The response's frame.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut payload = Vec::new();
        let kind = match self {
            Response::Listing(listed) => {
                let count = u32::try_from(listed.len()).unwrap_or(u32::MAX);
                payload.extend_from_slice(&count.to_be_bytes());
                for entry in listed {
                    put_name(&mut payload, &entry.dataset);
                    put_version(&mut payload, &entry.version);
                }
                kind::LISTING
            }
            Response::Delta(delta) => {
                payload.reserve(2 + delta.dataset.len() + 48 + delta.delta.len());
                put_name(&mut payload, &delta.dataset);
                put_version(&mut payload, &delta.version);
                payload.extend_from_slice(&delta.delta);
                kind::DELTA
            }
            Response::Refusal(refusal) => {
                payload.push(refusal.code());
                kind::REFUSAL
            }
        };
        Frame::encode(kind, &payload)
    }

    /// Reads a response from its frame.
    ///
    /// # Errors
    ///
    /// [`SyncError::Malformed`] when the frame is not a well-formed response.
    pub(crate) fn decode(frame: Frame) -> Result<Response, SyncError> {
        let mut payload = Cursor(&frame.payload);
        let response = match frame.kind {
            kind::LISTING => {
                let count = payload.u32()? as usize;
                if count > MAX_LISTED {
                    return Err(SyncError::Malformed("listing names too many datasets"));
                }
                let mut listed = Vec::with_capacity(count);
                for _ in 0..count {
                    let dataset = payload.name()?;
                    let version = payload.version()?;
                    listed.push(Listed { dataset, version });
                }
                Response::Listing(listed)
            }
            kind::DELTA => {
                let dataset = payload.name()?;
                let version = payload.version()?;
                Response::Delta(Delta {
                    dataset,
                    version,
                    delta: payload.rest().to_vec(),
                })
            }
            kind::REFUSAL => {
                let code = payload.u8()?;
                let refusal =
                    Refusal::from_code(code).ok_or(SyncError::Malformed("unknown refusal code"))?;
                Response::Refusal(refusal)
            }
            _ => return Err(SyncError::Malformed("unknown response kind")),
        };
        payload.end()?;
        Ok(response)
    }
}

impl Handshake {
    /// The message's frame.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let (kind, bytes) = match self {
            Handshake::Hello(nonce) => (kind::HELLO, nonce),
            Handshake::Challenge(nonce) => (kind::CHALLENGE, nonce),
            Handshake::Proof(proof) => (kind::PROOF, proof),
            Handshake::Accept(proof) => (kind::ACCEPT, proof),
        };
        Frame::encode(kind, bytes)
    }

    /// Reads a handshake message from its frame; `Ok(None)` for a frame of another kind.
    ///
    /// # Errors
    ///
    /// [`SyncError::Malformed`] when a handshake frame has the wrong length.
    pub(crate) fn decode(frame: &Frame) -> Result<Option<Handshake>, SyncError> {
        let make = match frame.kind {
            kind::HELLO => Handshake::Hello,
            kind::CHALLENGE => Handshake::Challenge,
            kind::PROOF => Handshake::Proof,
            kind::ACCEPT => Handshake::Accept,
            _ => return Ok(None),
        };
        let mut payload = Cursor(&frame.payload);
        let bytes = payload.array()?;
        payload.end()?;
        Ok(Some(make(bytes)))
    }
}

fn put_name(out: &mut Vec<u8>, name: &str) {
    // Names come from file names checked against MAX_NAME_LEN when published.
    let len = u16::try_from(name.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(name.as_bytes());
}

fn put_version(out: &mut Vec<u8>, version: &Version) {
    out.extend_from_slice(&version.generation.to_be_bytes());
    out.extend_from_slice(&version.len.to_be_bytes());
    out.extend_from_slice(&version.checksum);
}

/// The unread part of a payload.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SyncError> {
        if self.0.len() < n {
            return Err(SyncError::Malformed("payload shorter than its fields"));
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], SyncError> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn u8(&mut self) -> Result<u8, SyncError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, SyncError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, SyncError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn name(&mut self) -> Result<String, SyncError> {
        let len = usize::from(u16::from_be_bytes(self.array()?));
        if len == 0 || len > MAX_NAME_LEN {
            return Err(SyncError::Malformed("dataset name empty or too long"));
        }
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| SyncError::Malformed("dataset name not UTF-8"))
    }

    fn version(&mut self) -> Result<Version, SyncError> {
        let generation = self.u64()?;
        let len = self.u64()?;
        if len > MAX_DATASET_LEN {
            return Err(SyncError::Malformed("dataset length past its bound"));
        }
        let checksum = self.array()?;
        Ok(Version {
            generation,
            len,
            checksum,
        })
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }

    fn end(&self) -> Result<(), SyncError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(SyncError::Malformed("bytes after the last field"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(generation: u64) -> Version {
        Version {
            generation,
            len: 12,
            checksum: [7; CHECKSUM_LEN],
        }
    }

    async fn read(bytes: &[u8], max: u64) -> Result<Option<Frame>, SyncError> {
        let mut reader = bytes;
        match RawFrame::read(&mut reader, max).await? {
            Some(raw) => raw.check().map(Some),
            None => Ok(None),
        }
    }

    #[tokio::test]
    async fn every_message_round_trips() {
        let requests = [
            Request::List,
            Request::Pull {
                dataset: "spam.txt".into(),
                signature: vec![1, 2, 3],
            },
        ];
        for request in requests {
            let frame = read(&request.encode(), MAX_REQUEST_PAYLOAD).await;
            let frame = frame.expect("reads").expect("a frame");
            assert_eq!(Request::decode(frame).expect("decodes"), request);
        }
        let responses = [
            Response::Listing(vec![
                Listed {
                    dataset: "a.txt".into(),
                    version: version(1),
                },
                Listed {
                    dataset: "b.txt".into(),
                    version: version(2),
                },
            ]),
            Response::Delta(Delta {
                dataset: "a.txt".into(),
                version: version(3),
                delta: vec![9; 100],
            }),
            Response::Refusal(Refusal::UnknownDataset),
        ];
        for response in responses {
            let encoded = response.encode();
            let frame = read(&encoded, MAX_RESPONSE_PAYLOAD).await;
            let frame = frame.expect("reads").expect("a frame");
            assert_eq!(Response::decode(frame).expect("decodes"), response);
        }
    }

    #[tokio::test]
    async fn a_closed_connection_between_frames_is_not_an_error() {
        assert!(read(&[], 10).await.expect("clean").is_none());
    }

    #[tokio::test]
    async fn a_frame_cut_anywhere_is_truncated() {
        let frame = Response::Refusal(Refusal::Busy).encode();
        for cut in 1..frame.len() {
            let error = read(&frame[..cut], 100).await.expect_err("cut");
            assert!(
                matches!(error, SyncError::Truncated { .. }),
                "{cut}: {error}"
            );
        }
    }

    #[tokio::test]
    async fn a_flipped_bit_anywhere_is_caught() {
        let frame = Request::Pull {
            dataset: "spam.txt".into(),
            signature: vec![5; 40],
        }
        .encode();
        for at in 0..frame.len() {
            let mut damaged = frame.clone();
            damaged[at] ^= 0x10;
            let result = read(&damaged, MAX_REQUEST_PAYLOAD).await;
            assert!(result.is_err(), "flip at {at} went unnoticed");
        }
        let mut damaged = frame;
        damaged[0] = 2;
        let error = read(&damaged, 100).await.expect_err("version");
        assert!(matches!(error, SyncError::Version(2)), "{error}");
    }

    #[tokio::test]
    async fn a_length_past_the_bound_is_refused_before_reading() {
        let frame = Response::Delta(Delta {
            dataset: "a".into(),
            version: version(1),
            delta: vec![0; 1000],
        })
        .encode();
        let error = read(&frame, 100).await.expect_err("too long");
        assert!(
            matches!(error, SyncError::TooLong { max: 100, .. }),
            "{error}"
        );
    }

    #[test]
    fn malformed_payloads_are_refused() {
        let cases: [(u8, &[u8]); 5] = [
            (kind::PULL, &[0, 0]),
            (kind::PULL, &[0, 3, b'a']),
            (kind::LIST, &[1]),
            (0x33, &[]),
            (kind::LISTING, &[0, 0, 0x10, 0]),
        ];
        for (kind, payload) in cases {
            let frame = Frame {
                kind,
                payload: payload.to_vec(),
            };
            let request = Request::decode(frame);
            let frame = Frame {
                kind,
                payload: payload.to_vec(),
            };
            let response = Response::decode(frame);
            assert!(
                request.is_err() && response.is_err(),
                "{kind:#x} {payload:?}"
            );
        }
    }
}
