use super::*;
use std::time::Instant;
#[test]
#[ignore]
fn profile_parts() {
    let mut messages = Vec::new();
    for g in ["easy-ham-1", "easy-ham-2", "hard-ham-1", "spam-1", "spam-2"] {
        for e in std::fs::read_dir(format!("/work/main/.corpus/spamassassin/{g}")).unwrap() {
            messages.push(std::fs::read(e.unwrap().path()).unwrap());
        }
    }
    let parser = MessageParser::new()
        .with_mime_headers()
        .default_header_text();
    let policy = AttachmentPolicy::default();
    let sigdir = std::path::PathBuf::from("/tmp/profsig");
    std::fs::create_dir_all(&sigdir).unwrap();
    std::fs::copy("/tmp/bench.ndb", sigdir.join("b.ndb")).unwrap();
    let db = signatures::SignatureDb::load_dir(&sigdir).unwrap();
    let rules = rules::RuleSet::load(None).unwrap();
    let ac_nfa = aho_corasick::AhoCorasick::builder()
        .build(
            std::fs::read_to_string("/tmp/bench.ndb")
                .unwrap()
                .lines()
                .map(|l| {
                    l.split(':')
                        .nth(3)
                        .unwrap()
                        .split(|c| c == '?' || c == '{' || c == '*')
                        .next()
                        .unwrap()
                        .to_owned()
                }),
        )
        .unwrap();
    let ac_dfa = aho_corasick::AhoCorasick::builder()
        .kind(Some(aho_corasick::AhoCorasickKind::DFA))
        .build(
            std::fs::read_to_string("/tmp/bench.ndb")
                .unwrap()
                .lines()
                .map(|l| {
                    l.split(':')
                        .nth(3)
                        .unwrap()
                        .split(|c| c == '?' || c == '{' || c == '*')
                        .next()
                        .unwrap()
                        .to_owned()
                }),
        )
        .unwrap();
    eprintln!(
        "memory nfa {} {:?} dfa {}",
        ac_nfa.memory_usage(),
        ac_nfa.kind(),
        ac_dfa.memory_usage()
    );
    for _ in 0..3 {
        let t = Instant::now();
        for m in &messages {
            let _ = parser.parse(m);
        }
        let parse = t.elapsed();
        let t = Instant::now();
        let mut n = 0;
        for m in &messages {
            let p = parser.parse(m);
            let d = mime::dissect(m, p.as_ref(), &policy, 1 << 25, mime::Purpose::AllChecks);
            n += d.items.len();
        }
        let dissect = t.elapsed();
        let t = Instant::now();
        for m in &messages {
            db.scan(m, signatures::ScanTarget::Message, false);
        }
        let raw = t.elapsed();
        let t = Instant::now();
        for m in &messages {
            let p = parser.parse(m);
            let d = mime::dissect(m, p.as_ref(), &policy, 1 << 25, mime::Purpose::AllChecks);
            let _ = rules.apply(&d.rule_text);
        }
        let with_rules = t.elapsed();
        let parsed: Vec<_> = messages.iter().map(|m| parser.parse(m)).collect();
        let t = Instant::now();
        for p in parsed.iter().flatten() {
            for part in &p.parts {
                if let mail_parser::PartType::Html(h) = &part.body {
                    let _ = mail_parser::decoders::html::html_to_text(h);
                }
            }
        }
        let html = t.elapsed();
        let t = Instant::now();
        for p in parsed.iter().flatten() {
            let mut u = urls::UrlCollector::default();
            for part in &p.parts {
                match &part.body {
                    mail_parser::PartType::Html(h) | mail_parser::PartType::Text(h) => u.scan(h),
                    _ => {}
                }
            }
            u.finish();
        }
        let url = t.elapsed();
        let t = Instant::now();
        for p in parsed.iter().flatten() {
            let mut r = rules::RuleText::default();
            for part in &p.parts {
                match &part.body {
                    mail_parser::PartType::Html(h) | mail_parser::PartType::Text(h) => {
                        r.push_body(h)
                    }
                    _ => {}
                }
            }
        }
        let collapse = t.elapsed();
        let t = Instant::now();
        for p in parsed.iter().flatten() {
            for part in &p.parts {
                match &part.body {
                    mail_parser::PartType::Binary(h) | mail_parser::PartType::InlineBinary(h) => {
                        magic::FileType::detect(h);
                    }
                    mail_parser::PartType::Html(h) | mail_parser::PartType::Text(h) => {
                        magic::FileType::detect(h.as_bytes());
                    }
                    _ => {}
                }
            }
        }
        let magic = t.elapsed();
        eprintln!("html {html:?} urls {url:?} collapse {collapse:?} magic {magic:?}");
        eprintln!(
            "parse {parse:?} dissect {dissect:?} ({n} items) raw-sigs {raw:?} dissect+rules {with_rules:?}"
        );
    }
}
