//! The cryptography of a keyed connection: nonces, each side's proof of the key, and the
//! HMAC-SHA256 tag that follows every frame after the handshake.
//!
//! Both proofs and the session key are HMACs under the shared key of a label and the two
//! nonces, so each connection has keys of its own and a recorded session fails against the
//! fresh nonce of the next one. A tag covers the direction, a sequence number counted per
//! direction from 0 and the whole frame: a frame altered, moved to the other direction,
//! reordered, dropped or played again fails the check of the next tag read.
//!
//! Frames are authenticated, not encrypted: blocklists are not secret, and their listing
//! would reveal little beyond what querying the zone does.

use hmac::{Hmac, Mac as _};
use sha2::Sha256;

use super::error::SyncError;
use super::key::SyncKey;
use super::wire::{NONCE_LEN, RawFrame, TAG_LEN};

type HmacSha256 = Hmac<Sha256>;

/// Which end of the connection this node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The end that connects and pulls.
    Subscriber,
    /// The end that listens and answers.
    Publisher,
}

impl Role {
    /// The label of what this end sends, in proofs and tags.
    fn label(self) -> &'static [u8] {
        match self {
            Role::Subscriber => b"subscriber",
            Role::Publisher => b"publisher",
        }
    }

    fn peer(self) -> Role {
        match self {
            Role::Subscriber => Role::Publisher,
            Role::Publisher => Role::Subscriber,
        }
    }
}

/// What every HMAC input starts with, so that no value of this protocol can stand for one of
/// another that happens to use the same key.
const CONTEXT: &[u8] = b"moat dnsbl sync v1 ";

/// Fresh random bytes from the kernel.
///
/// # Errors
///
/// [`SyncError::Local`] when `/dev/urandom` cannot be read, which on Linux means the system is
/// badly broken.
pub(crate) fn nonce() -> Result<[u8; NONCE_LEN], SyncError> {
    use std::io::Read as _;
    let path = std::path::Path::new("/dev/urandom");
    let mut nonce = [0u8; NONCE_LEN];
    std::fs::File::open(path)
        .and_then(|mut file| file.read_exact(&mut nonce))
        .map_err(|error| SyncError::Local {
            path: path.to_owned(),
            error,
        })?;
    Ok(nonce)
}

/// An HMAC under `key` over the context, a purpose and the two nonces.
fn bound(key: &[u8], purpose: &[u8], nonces: &Nonces) -> HmacSha256 {
    let mut mac = keyed(key);
    mac.update(CONTEXT);
    mac.update(purpose);
    mac.update(&nonces.subscriber);
    mac.update(&nonces.publisher);
    mac
}

fn keyed(key: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length (RFC 2104 section 2); the error type exists for MACs
    // that do not.
    HmacSha256::new_from_slice(key).expect("HMAC-SHA256 accepts keys of any length")
}

/// The two nonces of one connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Nonces {
    /// Sent in the hello.
    pub subscriber: [u8; NONCE_LEN],
    /// Sent in the challenge.
    pub publisher: [u8; NONCE_LEN],
}

/// The proof that the end `role` holds `key`, for this connection's nonces.
pub(crate) fn proof(key: &SyncKey, role: Role, nonces: &Nonces) -> [u8; TAG_LEN] {
    let mut purpose = b"proof ".to_vec();
    purpose.extend_from_slice(role.label());
    bound(key.secret(), &purpose, nonces)
        .finalize()
        .into_bytes()
        .into()
}

/// Whether `offered` proves that the end `role` holds `key`; compared in constant time.
pub(crate) fn verify_proof(key: &SyncKey, role: Role, nonces: &Nonces, offered: &[u8]) -> bool {
    let mut purpose = b"proof ".to_vec();
    purpose.extend_from_slice(role.label());
    bound(key.secret(), &purpose, nonces)
        .verify_slice(offered)
        .is_ok()
}

/// The tags of one authenticated connection, as seen from one end.
pub(crate) struct Session {
    sending: Direction,
    receiving: Direction,
}

/// One direction: its label and the sequence number of its next frame.
struct Direction {
    mac: HmacSha256,
    label: &'static [u8],
    sequence: u64,
}

impl Direction {
    fn tag(&self, parts: &[&[u8]]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(self.label);
        mac.update(&self.sequence.to_be_bytes());
        for part in parts {
            mac.update(part);
        }
        mac
    }
}

impl Session {
    /// The session of the end `role` once the handshake with `nonces` succeeded.
    pub(crate) fn new(key: &SyncKey, role: Role, nonces: &Nonces) -> Session {
        let session_key = bound(key.secret(), b"session", nonces)
            .finalize()
            .into_bytes();
        let direction = |role: Role| Direction {
            mac: keyed(&session_key),
            label: role.label(),
            sequence: 0,
        };
        Session {
            sending: direction(role),
            receiving: direction(role.peer()),
        }
    }

    /// Appends the tag of the next frame sent to `frame`.
    pub(crate) fn seal(&mut self, frame: &mut Vec<u8>) {
        let tag = self.sending.tag(&[frame]).finalize().into_bytes();
        frame.extend_from_slice(&tag);
        self.sending.sequence += 1;
    }

    /// Checks the tag of the next frame received.
    ///
    /// # Errors
    ///
    /// [`SyncError::BadMac`] when the tag is not this frame's at this place in the stream.
    pub(crate) fn open(&mut self, frame: &RawFrame, tag: &[u8; TAG_LEN]) -> Result<(), SyncError> {
        let sequence = self.receiving.sequence;
        self.receiving
            .tag(&frame.parts())
            .verify_slice(tag)
            .map_err(|_| SyncError::BadMac { sequence })?;
        self.receiving.sequence += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::refusal::Refusal;
    use crate::sync::wire::{MAX_RESPONSE_PAYLOAD, Request, Response};

    const NONCES: Nonces = Nonces {
        subscriber: [1; NONCE_LEN],
        publisher: [2; NONCE_LEN],
    };

    fn pair(key: &[u8]) -> (Session, Session) {
        let key = SyncKey::from_secret(key);
        (
            Session::new(&key, Role::Subscriber, &NONCES),
            Session::new(&key, Role::Publisher, &NONCES),
        )
    }

    async fn raw(frame: &[u8]) -> (RawFrame, [u8; TAG_LEN]) {
        let (frame, tag) = frame.split_at(frame.len() - TAG_LEN);
        let mut reader = frame;
        let raw = RawFrame::read(&mut reader, MAX_RESPONSE_PAYLOAD).await;
        (
            raw.expect("reads").expect("a frame"),
            tag.try_into().expect("a tag"),
        )
    }

    fn sealed(session: &mut Session, response: &Response) -> Vec<u8> {
        let mut frame = response.encode();
        session.seal(&mut frame);
        frame
    }

    #[tokio::test]
    async fn a_sealed_frame_opens_at_the_other_end_in_order() {
        let (mut subscriber, mut publisher) = pair(&[7; 32]);
        for code in [Refusal::Busy, Refusal::UnknownDataset] {
            let frame = sealed(&mut publisher, &Response::Refusal(code));
            let (raw, tag) = raw(&frame).await;
            subscriber.open(&raw, &tag).expect("authentic");
            let frame = raw.check().expect("whole");
            assert_eq!(
                Response::decode(frame).expect("decodes"),
                Response::Refusal(code)
            );
        }
        let mut request = Request::List.encode();
        subscriber.seal(&mut request);
        let (raw, tag) = raw(&request).await;
        publisher.open(&raw, &tag).expect("authentic");
    }

    #[tokio::test]
    async fn a_flipped_bit_anywhere_fails_the_tag() {
        let (mut subscriber, mut publisher) = pair(&[7; 32]);
        let frame = sealed(&mut publisher, &Response::Refusal(Refusal::Busy));
        for at in 0..frame.len() {
            let mut damaged = frame.clone();
            damaged[at] ^= 0x01;
            let (body, tag) = damaged.split_at(damaged.len() - TAG_LEN);
            let mut reader = body;
            // A changed length breaks the framing before the tag is reached.
            let Ok(Some(raw)) = RawFrame::read(&mut reader, MAX_RESPONSE_PAYLOAD).await else {
                continue;
            };
            let tag: [u8; TAG_LEN] = tag.try_into().expect("a tag");
            let error = subscriber.open(&raw, &tag).expect_err("damaged");
            assert!(
                matches!(error, SyncError::BadMac { sequence: 0 }),
                "{at}: {error}"
            );
        }
        let (raw, tag) = raw(&frame).await;
        subscriber
            .open(&raw, &tag)
            .expect("the original still opens");
    }

    #[tokio::test]
    async fn a_frame_replayed_dropped_or_reflected_fails_the_tag() {
        let (mut subscriber, mut publisher) = pair(&[7; 32]);
        let first = sealed(&mut publisher, &Response::Refusal(Refusal::Busy));
        let second = sealed(&mut publisher, &Response::Refusal(Refusal::Busy));
        let (raw_first, tag_first) = raw(&first).await;
        subscriber.open(&raw_first, &tag_first).expect("first");

        // The same frame again, where the second was due.
        let error = subscriber
            .open(&raw_first, &tag_first)
            .expect_err("replayed");
        assert!(
            matches!(error, SyncError::BadMac { sequence: 1 }),
            "{error}"
        );

        // The subscriber's own first frame, sent back to it as the publisher's.
        let mut own = Response::Refusal(Refusal::Busy).encode();
        let (mut other_subscriber, _) = pair(&[7; 32]);
        other_subscriber.seal(&mut own);
        let (raw_own, tag_own) = raw(&own).await;
        let (mut fresh, _) = pair(&[7; 32]);
        assert!(fresh.open(&raw_own, &tag_own).is_err(), "reflected");

        // The second frame, had the first been dropped.
        let (raw_second, tag_second) = raw(&second).await;
        let (mut fresh, _) = pair(&[7; 32]);
        assert!(fresh.open(&raw_second, &tag_second).is_err(), "dropped");
    }

    #[tokio::test]
    async fn another_key_or_other_nonces_fail_the_tag_and_the_proof() {
        let key = SyncKey::from_secret(&[7; 32]);
        let (_, mut publisher) = pair(&[7; 32]);
        let (mut wrong_key, _) = pair(&[8; 32]);
        let frame = sealed(&mut publisher, &Response::Refusal(Refusal::Busy));
        let (raw, tag) = raw(&frame).await;
        assert!(wrong_key.open(&raw, &tag).is_err());

        let other = Nonces {
            subscriber: [3; NONCE_LEN],
            ..NONCES
        };
        let mut other_nonces = Session::new(&key, Role::Subscriber, &other);
        assert!(other_nonces.open(&raw, &tag).is_err());

        let proof = proof(&key, Role::Publisher, &NONCES);
        assert!(verify_proof(&key, Role::Publisher, &NONCES, &proof));
        assert!(!verify_proof(&key, Role::Subscriber, &NONCES, &proof));
        assert!(!verify_proof(&key, Role::Publisher, &other, &proof));
        let wrong = SyncKey::from_secret(&[8; 32]);
        assert!(!verify_proof(&wrong, Role::Publisher, &NONCES, &proof));
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(nonce().expect("random"), nonce().expect("random"));
    }
}
