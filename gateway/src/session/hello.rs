//! EHLO and HELO: the client names itself, and EHLO learns the extensions offered.

use super::{Helo, Session};
use crate::reply::Reply;

impl Session {
    /// Answers EHLO (`extended`) or HELO, which also ends any open transaction
    /// (RFC 5321 section 4.1.4).
    pub(super) fn hello(&mut self, name: &str, extended: bool) -> Reply {
        self.abandon("rset_by_hello");
        self.helo = Some(Helo {
            name: name.to_string(),
            extended,
        });

        let hostname = &self.shared.smtp.hostname;
        if !extended {
            return Reply::new(250, "", hostname.clone());
        }

        let mut lines = vec![
            hostname.clone(),
            "PIPELINING".to_string(),
            format!("SIZE {}", self.shared.smtp.max_message_size),
            "8BITMIME".to_string(),
            "SMTPUTF8".to_string(),
            "ENHANCEDSTATUSCODES".to_string(),
            "CHUNKING".to_string(),
        ];
        if self.tls.is_none() && self.shared.tls.is_some() {
            lines.push("STARTTLS".to_string());
        }
        lines.push("HELP".to_string());
        Reply::new(250, "", lines.join("\n"))
    }
}
