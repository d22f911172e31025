//! The Received header Moat adds to every message it accepts (RFC 5321 section 4.4).

use std::net::IpAddr;

use moat_delivery::QueueId;

/// What the session knows about the TLS layer, for the Received header and the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// The protocol version, for example `TLSv1.3`.
    pub version: String,
    /// The cipher suite, for example `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
}

/// The facts that go into one Received header.
pub struct Trace<'a> {
    /// The name the client gave in HELO or EHLO.
    pub helo: &'a str,
    /// Whether it said EHLO rather than HELO.
    pub extended: bool,
    /// The client's address.
    pub client_ip: IpAddr,
    /// This server's name.
    pub hostname: &'a str,
    /// The TLS layer, if STARTTLS was used.
    pub tls: Option<&'a TlsInfo>,
    /// Whether the client asked for SMTPUTF8.
    pub smtputf8: bool,
    /// The message's queue id.
    pub queue_id: QueueId,
    /// The recipients; named in a `for` clause only when there is exactly one, so the header
    /// does not disclose the other recipients of a message.
    pub recipients: &'a [String],
    /// Seconds since the Unix epoch.
    pub now: u64,
}

impl Trace<'_> {
    /// The header field, folded, ending in CRLF.
    pub fn header(&self) -> String {
        // The protocol names are registered by RFC 3848 and RFC 6531.
        let protocol = match (self.smtputf8, self.extended, self.tls.is_some()) {
            (true, _, true) => "UTF8SMTPS",
            (true, _, false) => "UTF8SMTP",
            (false, true, true) => "ESMTPS",
            (false, true, false) => "ESMTP",
            (false, false, _) => "SMTP",
        };
        let literal = match self.client_ip {
            IpAddr::V4(ip) => format!("[{ip}]"),
            IpAddr::V6(ip) => format!("[IPv6:{ip}]"),
        };

        let mut header = format!(
            "Received: from {} ({literal})\r\n\tby {} (Moat)",
            sanitize(self.helo),
            self.hostname
        );
        if let Some(tls) = self.tls {
            header.push_str(&format!(
                "\r\n\t(using {} with cipher {})",
                tls.version, tls.cipher
            ));
        }
        header.push_str(&format!("\r\n\twith {protocol} id {}", self.queue_id));
        if let [recipient] = self.recipients {
            header.push_str(&format!("\r\n\tfor <{recipient}>"));
        }
        header.push_str(&format!(";\r\n\t{}\r\n", rfc5322_date(self.now)));
        header
    }
}

/// The HELO name as it may appear in a header: anything that could end the header, open a
/// comment or break the domain syntax becomes `_`.
fn sanitize(helo: &str) -> String {
    helo.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-.[]:_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A date in RFC 5322 section 3.3 form, in UTC: `Fri, 04 Dec 2026 17:46:34 +0000`.
pub fn rfc5322_date(unix_seconds: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];

    let days = unix_seconds / 86_400;
    let seconds_of_day = unix_seconds % 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        seconds_of_day / 3600,
        seconds_of_day % 3600 / 60,
        seconds_of_day % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn formats_dates_as_rfc5322() {
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_796_406_394),
            "Fri, 04 Dec 2026 17:46:34 +0000"
        );
        assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    #[test]
    fn names_tls_and_the_single_recipient() {
        let tls = TlsInfo {
            version: "TLSv1.3".into(),
            cipher: "TLS13_AES_128_GCM_SHA256".into(),
        };
        let recipients = ["bob@example.com".to_string()];
        let trace = Trace {
            helo: "mx.example.org",
            extended: true,
            client_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            hostname: "mx.example.com",
            tls: Some(&tls),
            smtputf8: false,
            queue_id: QueueId::parse("0000000000000001").expect("valid id"),
            recipients: &recipients,
            now: 0,
        };
        let header = trace.header();
        assert!(header.starts_with("Received: from mx.example.org ([192.0.2.1])\r\n"));
        assert!(header.contains("(using TLSv1.3 with cipher TLS13_AES_128_GCM_SHA256)"));
        assert!(header.contains("with ESMTPS id 0000000000000001"));
        assert!(header.contains("for <bob@example.com>;"));
        assert!(header.ends_with("+0000\r\n"));
    }

    #[test]
    fn a_hostile_helo_cannot_break_the_header() {
        assert_eq!(sanitize("x)\r\nBcc: y"), "x___Bcc:_y");
    }
}
