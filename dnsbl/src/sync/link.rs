//! One end of a sync connection: sends and reads frames, adds and checks their tags once the
//! handshake has authenticated it, and counts the bytes it moves.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};

use super::error::SyncError;
use super::mac::Session;
use super::wire::{Frame, RawFrame, TAG_LEN, read_exact};

/// A connection's stream, plain or authenticated.
pub(crate) struct Link<S> {
    stream: S,
    session: Option<Session>,
    sent: u64,
    received: u64,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Link<S> {
    /// A plain link: frames without tags.
    pub(crate) fn new(stream: S) -> Link<S> {
        Link {
            stream,
            session: None,
            sent: 0,
            received: 0,
        }
    }

    /// From now on, every frame sent carries a tag and every frame read must.
    pub(crate) fn authenticate(&mut self, session: Session) {
        self.session = Some(session);
    }

    /// Whether the handshake has authenticated the link.
    pub(crate) fn is_authenticated(&self) -> bool {
        self.session.is_some()
    }

    /// Bytes sent and received so far, failed frames included.
    pub(crate) fn moved(&self) -> u64 {
        self.sent + self.received
    }

    /// Sends one encoded frame, with its tag on an authenticated link.
    ///
    /// # Errors
    ///
    /// [`SyncError::Io`] when the peer is gone.
    pub(crate) async fn send(&mut self, mut frame: Vec<u8>) -> Result<(), SyncError> {
        if let Some(session) = &mut self.session {
            session.seal(&mut frame);
        }
        self.stream.write_all(&frame).await.map_err(SyncError::Io)?;
        self.sent += frame.len() as u64;
        Ok(())
    }

    /// Reads one frame of at most `max` payload bytes; on an authenticated link its tag is
    /// checked before anything else. `Ok(None)` when the peer closed between frames.
    ///
    /// # Errors
    ///
    /// As [`RawFrame::read`] and [`RawFrame::check`], and [`SyncError::BadMac`] when the tag
    /// does not match.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe, as [`RawFrame::read`].
    pub(crate) async fn receive(&mut self, max: u64) -> Result<Option<Frame>, SyncError> {
        let mut counted = Counted {
            inner: &mut self.stream,
            count: &mut self.received,
        };
        let Some(raw) = RawFrame::read(&mut counted, max).await? else {
            return Ok(None);
        };
        if let Some(session) = &mut self.session {
            let mut tag = [0u8; TAG_LEN];
            read_exact(&mut counted, &mut tag, "tag").await?;
            session.open(&raw, &tag)?;
        }
        raw.check().map(Some)
    }
}

/// A reader that counts the bytes it passes on, so that a frame cut or corrupt still counts
/// in the bytes moved.
struct Counted<'a, R> {
    inner: &'a mut R,
    count: &'a mut u64,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counted<'_, R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut *this.inner).poll_read(cx, buf);
        *this.count += (buf.filled().len() - before) as u64;
        poll
    }
}
