//! A scripted SMTP/LMTP server on loopback that plays one side of a transcript, for the tests
//! of our client.
//!
//! Shared by `tests/transport_smtp.rs` and the unit tests of `src/transport/smtp/mod.rs`.

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Plays the server's side of a transcript on 127.0.0.1: `S:` lines are sent, `C:` lines
/// must arrive in that order. The task ends with an error naming the first difference.
pub async fn server(script: Vec<&'static str>) -> (String, JoinHandle<Result<(), String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("local address").to_string();
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut stream = BufReader::new(stream);
        for step in script {
            if let Some(reply) = step.strip_prefix("S: ") {
                let line = format!("{reply}\r\n");
                stream
                    .get_mut()
                    .write_all(line.as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
            } else if let Some(expected) = step.strip_prefix("C: ") {
                let mut line = Vec::new();
                stream
                    .read_until(b'\n', &mut line)
                    .await
                    .map_err(|e| e.to_string())?;
                let line = String::from_utf8_lossy(&line);
                if line != format!("{expected}\r\n") {
                    return Err(format!("expected {expected:?}, got {line:?}"));
                }
            } else {
                return Err(format!("bad script step {step:?}"));
            }
        }
        Ok(())
    });
    (address, task)
}

/// Waits for the server task and fails the test unless the client followed the transcript to
/// its end.
pub async fn finished(task: JoinHandle<Result<(), String>>) {
    task.await
        .expect("server task")
        .expect("transcript followed");
}
