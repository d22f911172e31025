//! The challenge-response that opens a keyed connection, both ends of it.
//!
//! ```text
//! subscriber                                   publisher
//!   hello(subscriber nonce)          ──▶
//!                                    ◀──  challenge(publisher nonce)
//!   proof(HMAC(key, subscriber, nonces)) ──▶   checks it, or refuses `unauthenticated`
//!                                    ◀──  accept(HMAC(key, publisher, nonces))
//!   checks it                              every frame from here on carries a tag
//! ```
//!
//! The subscriber proves itself first so that a publisher learns of a wrong key too and logs
//! it, with the client's address; a subscriber with a wrong key never sees a listing. Each
//! end's nonce is fresh, so proofs recorded from one session fail in the next.

use tokio::io::{AsyncRead, AsyncWrite};

use super::error::SyncError;
use super::key::SyncKey;
use super::link::Link;
use super::mac::{self, Nonces, Role, Session};
use super::wire::{Frame, Handshake, MAX_HANDSHAKE_PAYLOAD, Response};

/// Runs the subscriber's side; on success `link` is authenticated.
///
/// # Errors
///
/// [`SyncError::Unauthenticated`] when the publisher's proof does not match `key`,
/// [`SyncError::Refused`] when the publisher refused (`unauthenticated` when it has no key or
/// another one), or a frame error.
pub(crate) async fn subscriber<S>(link: &mut Link<S>, key: &SyncKey) -> Result<(), SyncError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let subscriber = mac::nonce()?;
    link.send(Handshake::Hello(subscriber).encode()).await?;
    let Handshake::Challenge(publisher) = next(link).await? else {
        return Err(SyncError::Malformed("handshake message out of order"));
    };
    let nonces = Nonces {
        subscriber,
        publisher,
    };

    let proof = mac::proof(key, Role::Subscriber, &nonces);
    link.send(Handshake::Proof(proof).encode()).await?;
    let Handshake::Accept(offered) = next(link).await? else {
        return Err(SyncError::Malformed("handshake message out of order"));
    };
    if !mac::verify_proof(key, Role::Publisher, &nonces, &offered) {
        return Err(SyncError::Unauthenticated(
            "the publisher's proof does not match this node's key",
        ));
    }
    link.authenticate(Session::new(key, Role::Subscriber, &nonces));
    Ok(())
}

/// Runs the publisher's side, `first` being the first frame the subscriber sent; on success
/// `link` is authenticated.
///
/// # Errors
///
/// [`SyncError::Unauthenticated`] when the subscriber sent a request without a handshake (it
/// has no key) or a proof that does not match `key`, or a frame error.
pub(crate) async fn publisher<S>(
    link: &mut Link<S>,
    key: &SyncKey,
    first: &Frame,
) -> Result<(), SyncError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(Handshake::Hello(subscriber)) = Handshake::decode(first)? else {
        if first.is_plain_request() {
            return Err(SyncError::Unauthenticated("the subscriber has no key"));
        }
        return Err(SyncError::Malformed("handshake message out of order"));
    };
    let publisher = mac::nonce()?;
    link.send(Handshake::Challenge(publisher).encode()).await?;
    let nonces = Nonces {
        subscriber,
        publisher,
    };

    let Handshake::Proof(offered) = next(link).await? else {
        return Err(SyncError::Malformed("handshake message out of order"));
    };
    if !mac::verify_proof(key, Role::Subscriber, &nonces, &offered) {
        return Err(SyncError::Unauthenticated(
            "the subscriber's proof does not match this publisher's key",
        ));
    }
    let proof = mac::proof(key, Role::Publisher, &nonces);
    link.send(Handshake::Accept(proof).encode()).await?;
    link.authenticate(Session::new(key, Role::Publisher, &nonces));
    Ok(())
}

/// The next handshake message; a refusal in its place is returned as the error it is.
async fn next<S>(link: &mut Link<S>) -> Result<Handshake, SyncError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = link.receive(MAX_HANDSHAKE_PAYLOAD).await?;
    let frame = frame.ok_or(SyncError::Truncated { part: "header" })?;
    if let Some(message) = Handshake::decode(&frame)? {
        return Ok(message);
    }
    match Response::decode(frame) {
        Ok(Response::Refusal(refusal)) => Err(SyncError::Refused(refusal)),
        Ok(_) | Err(_) => Err(SyncError::Malformed("handshake message expected")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::refusal::Refusal;
    use crate::sync::wire::{MAX_REQUEST_PAYLOAD, Request};

    /// Runs both ends over an in-memory pipe; the publisher answers one listing request.
    async fn run(
        subscriber_key: &[u8],
        publisher_key: &[u8],
    ) -> (Result<(), SyncError>, Result<(), SyncError>) {
        let (near, far) = tokio::io::duplex(4096);
        let subscriber_key = SyncKey::from_secret(subscriber_key);
        let publisher_key = SyncKey::from_secret(publisher_key);
        let publisher = tokio::spawn(async move {
            let mut link = Link::new(far);
            let first = link.receive(MAX_REQUEST_PAYLOAD).await?.expect("a hello");
            let result = super::publisher(&mut link, &publisher_key, &first).await;
            if result.is_err() {
                let refusal = Response::Refusal(Refusal::Unauthenticated).encode();
                link.send(refusal).await?;
                return result;
            }
            let request = link.receive(MAX_REQUEST_PAYLOAD).await?.expect("a request");
            assert_eq!(Request::decode(request)?, Request::List);
            link.send(Response::Listing(Vec::new()).encode()).await
        });
        let mut link = Link::new(near);
        let mut subscriber = super::subscriber(&mut link, &subscriber_key).await;
        if subscriber.is_ok() {
            link.send(Request::List.encode()).await.expect("sent");
            let answer = link.receive(MAX_REQUEST_PAYLOAD).await.expect("read");
            let answer = Response::decode(answer.expect("an answer")).expect("decodes");
            assert_eq!(answer, Response::Listing(Vec::new()));
            subscriber = Ok(());
        }
        (subscriber, publisher.await.expect("joins"))
    }

    #[tokio::test]
    async fn the_same_key_authenticates_both_ends_and_the_frames_after() {
        let (subscriber, publisher) = run(&[9; 32], &[9; 32]).await;
        subscriber.expect("subscriber");
        publisher.expect("publisher");
    }

    #[tokio::test]
    async fn another_key_is_refused_by_the_publisher() {
        let (subscriber, publisher) = run(&[9; 32], &[10; 32]).await;
        let error = subscriber.expect_err("refused");
        assert!(
            matches!(error, SyncError::Refused(Refusal::Unauthenticated)),
            "{error}"
        );
        assert!(matches!(publisher, Err(SyncError::Unauthenticated(_))));
    }
}
